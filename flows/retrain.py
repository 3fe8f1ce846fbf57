"""Retrain: the runbook's steps, started by the drift event, a schedule, or by hand.

Implemented so far: step 1 (collect the last N days of production frames, quarantine
unreadable ones, drop near-duplicates). Prefilter, selection, Label Studio review,
validation, versioning, fine-tuning, gates, export and registration follow.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from cvloop.params import load_params
from tasks.collect import collect_frames_task, publish_collect_report


@flow(name="retrain", log_prints=True)
def retrain(
    drift_slices: list[dict] | None = None,
    cameras: list[str] | None = None,
    classes: list[str] | None = None,
    triggers: list[str] | None = None,
    window_end: str | None = None,
    days: int | None = None,
) -> dict:
    """Retrain on the drift: ``drift_slices``/``cameras``/``classes`` come from the
    ``cvloop.drift.detected`` event (prefect.yaml automation)."""
    p = load_params()
    print(
        f"retrain: triggers {triggers or 'manual'}; drift cameras {cameras or 'none'}; "
        f"classes {classes or 'none'}"
    )
    # 1. collect the last N days of frames (images + videos sampled at the collect fps)
    batch = collect_frames_task(
        flow_run.get_id() or "local",
        window_end,
        days or p.collect.days,
        None,
        p.collect.video_fps,
        p.collect.near_duplicate_hamming,
    )
    publish_collect_report(batch, drift_slices or [])
    return batch.summary


if __name__ == "__main__":
    retrain()
