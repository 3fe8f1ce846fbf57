"""Retrain: the runbook's steps, started by the drift event, a schedule, or by hand.

1. collect the last N days of production frames (quarantine unreadable ones, drop
   near-duplicates); 2. prefilter with the champion and select within the labeling budget;
3. pre-annotate at conf 0.5 into Label Studio; 4. wait for the reviewers (suspended, not
holding a worker) until the edit rate is stable or an operator says go; 5. validate the
annotations and version dataset v_n+1 (+ holdout v_k+1, step 9); 6. fine-tune from the
champion; 7. score champion and candidate on the same frames (holdout, drift slices),
export and benchmark, gate; 8. register the candidate, alias ``challenger`` only if every
gate passed. The rollout (10 / 50 / 100 %) takes over from there.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from cvloop.config.params import load_params
from flows.candidate import train_and_gate
from registry.names import DRIFT_CAMERAS, LABELSTUDIO_PROJECT, REVIEW_REASON, TRIGGERS
from tasks.annotate import (
    next_dataset_version_task,
    publish_review_queue,
    push_to_label_studio_task,
)
from tasks.candidate import resolve_champion_task, slice_tags_task, training_data_task
from tasks.collect import collect_frames_task, publish_collect_report
from tasks.dataset import (
    export_reviews_task,
    publish_dataset_report,
    publish_validation_report,
    validate_reviews_task,
    version_reviewed_data_task,
)
from tasks.model import log_retrain_step_task, start_retrain_run_task
from tasks.prefilter import prefilter_and_select_task, publish_selection_report
from tasks.review import (
    check_review_task,
    ensure_reviewed_task,
    record_review_task,
    wait_for_review,
)
from tasks.schema import current_schema_task, new_class_routes_task


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
    run_id = flow_run.get_id() or "local"
    print(
        f"retrain: triggers {triggers or 'manual'}; drift cameras {cameras or 'none'}; "
        f"classes {classes or 'none'}"
    )
    # 1. collect the last N days of frames (images + videos sampled at the collect fps)
    mlflow_run = start_retrain_run_task(
        p.registry.experiment,
        run_id,
        f"retrain-{flow_run.get_name() or 'local'}",
        {
            TRIGGERS: ",".join(triggers or ["manual"]),
            DRIFT_CAMERAS: ",".join(cameras or []) or "none",
        },
    )
    batch = collect_frames_task(
        run_id,
        window_end,
        days or p.collect.days,
        None,
        p.collect.video_fps,
        p.collect.near_duplicate_hamming,
    )
    publish_collect_report(batch, drift_slices or [])
    # 2. prefilter with the champion, then select within the labeling budget; classes the
    # champion does not know yet (added to the schema) have their frames routed to review
    schema = current_schema_task()
    routes = new_class_routes_task(resolve_champion_task().classes)
    if routes.classes:
        print(f"new classes {routes.classes}: {len(routes.seed_keys)} seed frames, "
              f"cameras {routes.cameras or 'any'} weighed like drift")  # fmt: skip
    watched = sorted({*(classes or []), *routes.classes})
    selection = prefilter_and_select_task(
        run_id, batch.frames_key, cameras or [], watched, p.prefilter, p.select,
        routes.cameras, routes.seed_keys, routes.classes,
    )  # fmt: skip
    publish_selection_report(selection)
    # 3. pre-annotate at conf 0.5 and push to Label Studio's review queue (project per version)
    version = next_dataset_version_task()
    queue = push_to_label_studio_task(
        f"runs/retrain/{run_id}",
        selection.selected_key,
        version,
        list(schema.classes),
        p.annotate.conf,
        p.annotate.import_batch_size,
        mlflow_run,
    )
    publish_review_queue(queue)
    # 4. wait for the reviewers: until the drift classes' edit rate is stable (or go)
    r = p.review
    status = check_review_task(queue, list(schema.classes), watched, r)
    go = wait_for_review(status, r.deadline_hours, r.poll_seconds)
    # the schema may have changed while the frames were in review: read it again
    schema = current_schema_task()
    status = check_review_task(queue, list(schema.classes), watched, r, operator_go=go.go)
    record_review_task(queue, status, mlflow_run)
    ensure_reviewed_task(queue, status, go.go, go.reason)
    # 5. validate the annotations (Great Expectations); version dataset v_n+1 and holdout
    # (frames with a new class's boxes are tagged drift:class <name>: holdout candidates)
    export = export_reviews_task(queue, r.iou_match, r.moved_iou, watched)
    v = p.validate_
    validated = validate_reviews_task(
        export, list(schema.classes), v.min_box_area, v.max_box_area, v.duplicate_iou
    )
    publish_validation_report(validated)
    versions = version_reviewed_data_task(
        validated,
        queue.dataset_version,
        list(schema.classes),
        schema.label_policy_version,
        holdout_quota=p.holdout.add_per_retrain,
        holdout_max_frames=p.holdout.max_frames,
        holdout_max_drift_share=p.holdout.max_drift_share,
        val_share=p.version.val_share,
        near_dup_bits=p.holdout.near_duplicate_hamming,
    )
    publish_dataset_report(versions)
    log_retrain_step_task(
        mlflow_run,
        {
            "frames.collected": batch.summary["collected"],
            "frames.selected": selection.summary["selected"],
            "frames.reviewed": validated.summary["reviewed"],
            "frames.quarantined": validated.summary["quarantined"],
            "frames.added.train": versions.added["train"],
            "frames.added.val": versions.added["val"],
            "frames.added.holdout": versions.added["holdout"],
        },
        {
            "cvloop.dataset.version": versions.dataset["name"],
            "cvloop.dataset.dvc_md5": versions.dataset["dvc_md5"],
            "cvloop.dataset.git_rev": versions.dataset["git_rev"],
            "cvloop.holdout.version": (versions.holdout or {}).get("name", "unchanged"),
            REVIEW_REASON: go.reason,
            LABELSTUDIO_PROJECT: queue.project_url,
        },
    )
    # 6.–8. fine-tune from the champion, judge against it on the same frames, export and
    # benchmark, gate, register (alias `challenger` only if every gate passed)
    data = training_data_task(versions)
    candidate = train_and_gate(p, mlflow_run, data, slice_tags_task(cameras, watched))
    return {
        **batch.summary,
        **selection.summary,
        **candidate,
        "review": go.reason,
        "validation": validated.summary,
        "dataset_version": versions.dataset["name"],
        "holdout_version": (versions.holdout or {}).get("name"),
        "added": versions.added,
    }


if __name__ == "__main__":
    retrain()
