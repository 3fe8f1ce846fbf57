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

from cvloop.context import current
from cvloop.stages.holdout import RUNS
from flows.hooks import publish_failure
from flows.review_gate import review_gate
from tasks.annotate import publish_review_queue, push_to_label_studio_task
from tasks.collect import collect_frames_task
from tasks.holdout import (
    publish_refresh_report,
    record_refresh_task,
    refresh_work_dir_task,
    sample_for_refresh_task,
    score_champion_task,
    version_refreshed_holdout_task,
)
from tasks.model import resolve_champion_task
from tasks.schema import current_schema_task


@flow(name="holdout-refresh", log_prints=True, on_failure=[publish_failure])
def holdout_refresh(
    window_end: str | None = None, days: int | None = None, frames: int | None = None
) -> dict:
    """A new holdout version from the last quarter's frames (see the module docstring)."""
    p = current().params
    h = p.holdout
    run_id = flow_run.get_id() or "local"
    end = (window_end or dt.date.today().isoformat())[:10]
    days = days or h.refresh_days
    window = f"{dt.date.fromisoformat(end) - dt.timedelta(days=days)}..{end}"
    print(f"holdout refresh over {window}: {frames or h.refresh_frames} frames to label")
    champion = resolve_champion_task()
    # 1. the quarter's frames
    batch = collect_frames_task(run_id, end, p.collect, days, base=f"{RUNS}/{run_id}")
    # 2. a stratified sample, pre-annotated by the champion, into Label Studio
    schema = current_schema_task()
    sample = sample_for_refresh_task(run_id, batch.frames_key, champion, h, p.prefilter,
                                     f"holdout-refresh {window}", frames)  # fmt: skip
    queue = push_to_label_studio_task(
        f"{RUNS}/{run_id}", sample.selected_key, champion, sample.holdout_version,
        list(schema.classes), p.annotate.conf, p.annotate.import_batch_size, None,
        f"cvloop quarterly holdout refresh ({window}): label every object in every frame",
    )  # fmt: skip
    publish_review_queue(queue)  # the link, and the reviewers told
    # 3. the review gate: every frame labeled (suspended meanwhile; review/watch resumes)
    reviewed = review_gate(p, queue, [], None, complete_only=True)
    # 4. score the champion on the current holdout, version the new one, score again, record
    work = refresh_work_dir_task(run_id)
    before = score_champion_task("previous", champion, work, p.train.device)
    version = version_refreshed_holdout_task(reviewed.validated, sample.holdout_version,
                                             list(reviewed.schema.classes),
                                             reviewed.schema.label_policy_version, h, window)  # fmt: skip
    after = score_champion_task("new", champion, work, p.train.device)
    out = record_refresh_task(before, after, version, sample)
    publish_refresh_report(out, sample)
    print(f"holdout {out['previous_version']} -> {out['holdout_version']} ({out['frames']} "
          f"frames); champion v{out['champion']} mAP50-95 {out['champion_map50_95_previous']} "
          f"-> {out['champion_map50_95_new']}")  # fmt: skip
    return {**out, "sample": sample.summary, "validation": reviewed.validated.summary,
            "review": reviewed.go.reason}  # fmt: skip


if __name__ == "__main__":
    holdout_refresh()
