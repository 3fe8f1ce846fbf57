"""Quarterly holdout refresh (deployment ``holdout-refresh/quarterly``, scheduled; or
``cvloop holdout refresh``).

1. collect the last quarter's production frames (``holdout.refresh_days``);
2. sample ``holdout.refresh_frames`` (within min/max) spread over camera x month x part of
   day, leaving out every frame of any training version (and near-duplicates) and of the
   current holdout; pre-annotate with the champion into a Label Studio project
   ``cvloop holdout-v<n>``;
3. wait (suspended) until every frame is labeled: a holdout is exact, so the edit rate does
   not end this review (the review/watch deployment resumes the run; an operator may say go
   at the deadline with what is labeled);
4. validate (Great Expectations); score the champion on the current holdout; version the
   labeled frames as holdout v<n> after a leakage check against every training version;
   score the champion on it; both scores to MLflow, the new one as the monitor's reference.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow
from prefect.runtime import flow_run

from cvloop.config.params import load_params
from cvloop.stages.holdout import RUNS
from cvloop.stages.model import training_dir
from tasks.annotate import push_to_label_studio_task
from tasks.collect import collect_frames_task
from tasks.dataset import export_reviews_task, publish_validation_report, validate_reviews_task
from tasks.holdout import (
    publish_refresh_report,
    record_refresh_task,
    sample_for_refresh_task,
    score_champion_task,
    version_refreshed_holdout_task,
)
from tasks.review import (
    check_review_task,
    ensure_reviewed_task,
    record_review_task,
    wait_for_review,
)
from tasks.schema import current_schema_task


@flow(name="holdout-refresh", log_prints=True)
def holdout_refresh(
    window_end: str | None = None, days: int | None = None, frames: int | None = None
) -> dict:
    """A new holdout version from the last quarter's frames (see the module docstring)."""
    p = load_params()
    h = p.holdout
    run_id = flow_run.get_id() or "local"
    end = (window_end or dt.date.today().isoformat())[:10]
    days = days or h.refresh_days
    start = (dt.date.fromisoformat(end) - dt.timedelta(days=days)).isoformat()
    window = f"{start}..{end}"
    print(f"holdout refresh over {window}: {frames or h.refresh_frames} frames to label")
    # 1. the quarter's frames
    batch = collect_frames_task(
        run_id, end, days, None, p.collect.video_fps, p.collect.near_duplicate_hamming,
        base=f"{RUNS}/{run_id}",
    )  # fmt: skip
    # 2. a stratified sample, pre-annotated, into Label Studio
    schema = current_schema_task()
    sample = sample_for_refresh_task(
        run_id, batch.frames_key, frames or h.refresh_frames, h.min_frames, h.max_frames,
        h.near_duplicate_hamming, f"holdout-refresh {window}", p.prefilter,
    )  # fmt: skip
    queue = push_to_label_studio_task(
        f"{RUNS}/{run_id}",
        sample.selected_key,
        sample.holdout_version,
        list(schema.classes),
        p.annotate.conf,
        p.annotate.import_batch_size,
        None,
        f"cvloop quarterly holdout refresh ({window}): label every object in every frame",
    )
    # 3. every frame labeled (suspended meanwhile; review/watch resumes)
    r = p.review
    status = check_review_task(queue, list(schema.classes), [], r, complete_only=True)
    go = wait_for_review(status, r.deadline_hours, r.poll_seconds)
    schema = current_schema_task()
    status = check_review_task(
        queue, list(schema.classes), [], r, operator_go=go.go, complete_only=True
    )
    record_review_task(queue, status, None)
    ensure_reviewed_task(queue, status, go.go, go.reason)
    # 4. validate, score, version, score again, record
    export = export_reviews_task(queue, r.iou_match, r.moved_iou, [])
    v = p.validate_
    validated = validate_reviews_task(
        export, list(schema.classes), v.min_box_area, v.max_box_area, v.duplicate_iou
    )
    publish_validation_report(validated)
    work = f"{training_dir()}/holdout-refresh/{run_id}"
    before = score_champion_task("previous", work, p.train.imgsz, p.train.device)
    version = version_refreshed_holdout_task(
        validated, sample.holdout_version, list(schema.classes), schema.label_policy_version,
        min_frames=h.min_frames, max_frames=h.max_frames,
        near_dup_bits=h.near_duplicate_hamming, window=window,
    )  # fmt: skip
    after = score_champion_task("new", work, p.train.imgsz, p.train.device)
    out = record_refresh_task(before, after, version, sample)
    publish_refresh_report(out, sample)
    print(
        f"holdout {out['previous_version']} -> {out['holdout_version']} ({out['frames']} "
        f"frames); champion v{out['champion']} mAP50-95 {out['champion_map50_95_previous']} "
        f"-> {out['champion_map50_95_new']}"
    )
    return {**out, "sample": sample.summary, "validation": validated.summary, "review": go.reason}


if __name__ == "__main__":
    holdout_refresh()
