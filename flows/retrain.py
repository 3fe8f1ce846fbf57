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

from cvloop.context import current
from flows.candidate import train_and_gate
from flows.hooks import publish_failure
from flows.review_gate import review_gate
from registry.names import DRIFT_CAMERAS, DRIFT_SOURCE, TRIGGERS
from tasks.annotate import (
    next_dataset_version_task,
    publish_review_queue,
    push_to_label_studio_task,
)
from tasks.candidate import slice_tags_task, training_data_task
from tasks.collect import collect_frames_task, publish_collect_report
from tasks.dataset import publish_dataset_report, record_data_steps_task, version_reviewed_data_task
from tasks.model import resolve_champion_task, start_retrain_run_task
from tasks.monitor import latest_flagged_task
from tasks.prefilter import prefilter_and_select_task, publish_selection_report
from tasks.retrain import claim_open_retrain_task, release_open_retrain_task
from tasks.schema import current_schema_task, new_class_routes_task


@flow(name="retrain", log_prints=True, on_failure=[publish_failure])
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
    p = current().params
    run_id = flow_run.get_id() or "local"
    print(f"retrain: triggers {triggers or 'manual'}; drift cameras {cameras or 'none'}; "
          f"classes {classes or 'none'}")  # fmt: skip
    # 0. at most one open retrain: a trigger that finds one open (in review, say) is
    # recorded on it instead of starting a second one on the same dataset version
    claim = claim_open_retrain_task(run_id, {"triggers": triggers or ["manual"],
                                             "cameras": cameras or [], "classes": classes or []})  # fmt: skip
    if claim.joined:
        print(f"retrain: {claim.summary()['message']}")
        return claim.summary()
    # every retrain has a drift gate: one that names no slice (by hand, a rule-1 trigger)
    # takes the slices of the latest weekly check, and says so when there is no drift
    drift_note = "named by the run"
    if not (cameras or classes or drift_slices):
        flagged = latest_flagged_task(2 * p.monitor.current_days)
        cameras, classes = flagged["cameras"], flagged["classes"]
        drift_slices, drift_note = flagged["drift_slices"], flagged["note"]
        print(f"retrain: no drift slice named; {drift_note}")
    # the champion this run works against, resolved once (persisted: a resumed run and
    # every later step use the same one, even if the alias moves during the review)
    champion = resolve_champion_task()
    mlflow_run = start_retrain_run_task(p.registry.experiment, run_id,
                                        f"retrain-{flow_run.get_name() or 'local'}",
                                        {TRIGGERS: ",".join(triggers or ["manual"]),
                                         DRIFT_CAMERAS: ",".join(cameras or []) or "none",
                                         DRIFT_SOURCE: drift_note[:4000]})  # fmt: skip
    # 1. collect the last N days of frames (images + videos sampled at the collect fps)
    batch = collect_frames_task(run_id, window_end, p.collect, days)
    publish_collect_report(batch, drift_slices or [])
    # 2. prefilter with the champion, then select within the labeling budget; classes the
    # champion does not know yet (added to the schema) have their frames routed to review
    schema = current_schema_task()
    routes = new_class_routes_task(champion.classes)
    watched = sorted({*(classes or []), *routes.classes})
    selection = prefilter_and_select_task(
        run_id, batch.frames_key, champion, cameras or [], watched, p.prefilter, p.select,
        routes.cameras, routes.seed_keys, routes.classes,
    )  # fmt: skip
    publish_selection_report(selection)
    # 3. pre-annotate at conf 0.5 and push to Label Studio's review queue (project per version)
    version = next_dataset_version_task()
    queue = push_to_label_studio_task(f"runs/retrain/{run_id}", selection.selected_key, champion,
                                      version, list(schema.classes), p.annotate.conf,
                                      p.annotate.import_batch_size, mlflow_run)  # fmt: skip
    publish_review_queue(queue)
    # 4.–5a. the review gate: suspended until the edit rate is stable (or go), then validated
    reviewed = review_gate(p, queue, watched, mlflow_run)
    # 5b. version dataset v_n+1 and holdout v_k+1 (+ drift frames, leakage-checked)
    versions = version_reviewed_data_task(reviewed.validated, queue.dataset_version,
                                          list(reviewed.schema.classes),
                                          reviewed.schema.label_policy_version, p.holdout,
                                          p.version)  # fmt: skip
    publish_dataset_report(versions)
    record_data_steps_task(mlflow_run, batch, selection, reviewed.validated, versions,
                           reviewed.go.reason, queue.project_url)  # fmt: skip
    # 6.–8. fine-tune from the champion, judge against it on the same frames, export and
    # benchmark, gate, register (alias `challenger` only if every gate passed)
    data = training_data_task(versions)
    candidate = train_and_gate(p, mlflow_run, data, slice_tags_task(cameras, watched), champion,
                               drift_note)  # fmt: skip
    joined = release_open_retrain_task(run_id)
    return {
        **batch.summary, **selection.summary, **candidate, "review": reviewed.go.reason,
        "validation": reviewed.validated.summary, "dataset_version": versions.dataset["name"],
        "holdout_version": (versions.holdout or {}).get("name"), "added": versions.added,
        "joined_triggers": joined,
    }  # fmt: skip


if __name__ == "__main__":
    retrain()
