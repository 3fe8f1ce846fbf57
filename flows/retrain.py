"""Retrain: the runbook's steps, started by the drift event, a schedule, or by hand.

Implemented so far: step 1 (collect the last N days of production frames, quarantine
unreadable ones, drop near-duplicates) and step 2 (prefilter with the champion, keep
events and edge cases at <= 1 fps per camera, select within the labeling budget). Label
Studio pre-annotation and review, validation, versioning, fine-tuning, gates, export and
registration follow.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from cvloop.params import load_params
from tasks.collect import collect_frames_task, publish_collect_report
from tasks.prefilter import prefilter_and_select_task, publish_selection_report


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
    # 2. prefilter with the champion, then select within the labeling budget
    f, sel = p.prefilter, p.select
    selection = prefilter_and_select_task(
        flow_run.get_id() or "local",
        batch.frames_key,
        cameras or [],
        classes or [],
        conf=f.conf,
        low=f.low_confidence,
        high=f.high_confidence,
        many=f.many_detections,
        keep_empty=f.keep_empty,
        fps=f.fps_per_camera,
        batch_size=f.batch_size,
        budget=sel.budget,
        drift_weight=sel.drift_slice_weight,
        per_class_cap=sel.per_class_cap,
        per_camera_cap=sel.per_camera_cap,
        exploration_share=sel.exploration_share,
        seed=sel.seed,
    )
    publish_selection_report(selection)
    return {**batch.summary, **selection.summary}


if __name__ == "__main__":
    retrain()
