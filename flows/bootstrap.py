"""Bootstrap: the baseline champion v1 — dataset v1, holdout v1, a model trained from a
YAML (nothing downloaded), registered in MLflow as ``champion`` with full lineage.

The baseline data is the synthetic fleet's (``tasks/bootstrap.py``): this is the demo's and
the tests' way in; a team with its own detector adopts it instead."""

from __future__ import annotations

from prefect import flow

from cvloop.adapters.versioning import DATASET_DIR, DATASET_POINTER, HOLDOUT_DIR, HOLDOUT_POINTER
from cvloop.context import current
from flows.hooks import publish_failure
from tasks.bootstrap import (
    baseline_lineage_task,
    baseline_tags_task,
    build_baseline_data_task,
    publish_bootstrap_report,
    start_baseline_run_task,
)
from tasks.data import version_data_task
from tasks.model import (
    evaluate_model_task,
    find_champion_task,
    register_model_task,
    resolve_model_source_task,
    train_model_task,
    training_dir_task,
)
from tasks.rollout import write_initial_manifest_task
from tasks.schema import current_schema_task


@flow(name="bootstrap", log_prints=True, on_failure=[publish_failure])
def bootstrap(
    force: bool = False,
    epochs: int | None = None,
    train_frames: int | None = None,
    holdout_frames: int | None = None,
) -> str:
    """Create the baseline champion. Does nothing if a champion exists (unless ``force``)."""
    p = current().params
    epochs = epochs or p.train.bootstrap_epochs
    # 0. a champion is already registered: nothing to do
    champion = find_champion_task()
    if champion and not force:
        print(f"champion is version {champion}; nothing to bootstrap (use force=True to redo)")
        return champion
    # 1. dataset v1 and holdout v1 from clean conditions, under the schema's current version
    schema = current_schema_task()
    data = build_baseline_data_task(
        p, train_frames or p.bootstrap.train_frames, holdout_frames or p.bootstrap.holdout_frames
    )
    # 2. version both with DVC (tags dataset-v1, holdout-v1; pushed to the remote)
    dataset = version_data_task(DATASET_DIR, DATASET_POINTER, "dataset-v1",
                                f"dataset v1: clean baseline (cvloop bootstrap, {schema.tag})",
                                schema_log=True)  # fmt: skip
    holdout = version_data_task(HOLDOUT_DIR, HOLDOUT_POINTER, "holdout-v1",
                                "holdout v1: frozen clean holdout (cvloop bootstrap)")  # fmt: skip
    # 3. train v1 from the model YAML, logged to MLflow
    source = resolve_model_source_task(p.train.model_yaml)
    run_id = start_baseline_run_task(dataset, holdout, data, epochs)
    trained = train_model_task(run_id, data.dataset_yaml, source, list(schema.classes),
                               training_dir_task(), p.train, epochs=epochs,
                               lr0=p.train.bootstrap_lr0)  # fmt: skip
    # 4. the holdout: the .pt and the exported ONNX, each scored on its own
    holdout_pt = evaluate_model_task(run_id, trained.best_pt, data.holdout_yaml, p.train.imgsz,
                                     "holdout")  # fmt: skip
    holdout_onnx = evaluate_model_task(run_id, trained.onnx, data.holdout_yaml, p.train.imgsz,
                                       "holdout_onnx")  # fmt: skip
    # 5. register as champion with lineage; the serving manifest starts at 100 % for it
    version = register_model_task(
        run_id, trained, baseline_lineage_task(dataset, holdout, schema), holdout_pt,
        baseline_tags_task(holdout_onnx), ["champion"],
        "Baseline champion v1 trained from scratch by `cvloop bootstrap`.",
    )  # fmt: skip
    write_initial_manifest_task(version)
    publish_bootstrap_report(version, dataset, holdout, trained, holdout_pt, holdout_onnx)
    return version


if __name__ == "__main__":
    bootstrap()
