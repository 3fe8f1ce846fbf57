"""Bootstrap: the baseline champion v1 — dataset v1, holdout v1, a model trained from a
YAML (nothing downloaded), registered in MLflow as ``champion`` with full lineage."""

from __future__ import annotations

from prefect import flow

from cvloop.config.lineage import git_commit, params_sha256
from cvloop.config.params import load_params
from cvloop.stages.data import DATASET_DIR, DATASET_POINTER, HOLDOUT_DIR, HOLDOUT_POINTER
from registry.names import FLOW, GATE, HOLDOUT_ONNX_MAP50_95
from tasks.data import build_baseline_data_task, version_data_task
from tasks.model import (
    evaluate_model_task,
    find_champion_task,
    register_model_task,
    resolve_model_source_task,
    start_training_run_task,
    train_model_task,
    training_dir_task,
)
from tasks.rollout import publish_bootstrap_report_task, write_initial_manifest_task
from tasks.schema import current_schema_task


@flow(name="bootstrap", log_prints=True)
def bootstrap(
    force: bool = False,
    epochs: int | None = None,
    train_frames: int | None = None,
    holdout_frames: int | None = None,
) -> str:
    """Create the baseline champion. Does nothing if a champion exists (unless ``force``)."""
    p = load_params()
    # 0. a champion is already registered: nothing to do
    champion = find_champion_task()
    if champion and not force:
        print(f"champion is version {champion}; nothing to bootstrap (use force=True to redo)")
        return champion
    # 1. dataset v1 and holdout v1 from clean conditions, under the schema's current version
    schema = current_schema_task()
    data = build_baseline_data_task(
        p.fleet.seed,
        p.fleet.cameras,
        p.fleet.image_size,
        p.bootstrap.days_ago,
        p.bootstrap.days,
        train_frames or p.bootstrap.train_frames,
        holdout_frames or p.bootstrap.holdout_frames,
        list(schema.classes),
        schema.label_policy_version,
        p.version.val_share,
        p.holdout.near_duplicate_hamming,
    )
    # 2. version both with DVC (tags dataset-v1, holdout-v1; pushed to the remote)
    dataset = version_data_task(
        DATASET_DIR,
        DATASET_POINTER,
        "dataset-v1",
        f"dataset v1: clean baseline (cvloop bootstrap, {schema.tag})",
        schema_log=True,
    )
    holdout = version_data_task(
        HOLDOUT_DIR,
        HOLDOUT_POINTER,
        "holdout-v1",
        "holdout v1: frozen clean holdout (cvloop bootstrap)",
    )
    # 3. train v1 from the model YAML, logged to MLflow
    source = resolve_model_source_task(p.train.model_yaml)
    run_id = start_training_run_task(
        p.registry.experiment,
        "bootstrap-v1",
        {
            "model": p.train.model_yaml,
            "epochs": epochs or p.train.bootstrap_epochs,
            "lr0": p.train.bootstrap_lr0,
            "imgsz": p.train.imgsz,
            "batch": p.train.batch,
            "train_frames": data.train_frames,
            "val_frames": data.val_frames,
        },
        {
            FLOW: "bootstrap",
            "cvloop.dataset.version": dataset.name,
            "cvloop.dataset.dvc_md5": dataset.dvc_md5,
            "cvloop.holdout.version": holdout.name,
            "cvloop.git_commit": git_commit(),
        },
    )
    trained = train_model_task(
        run_id,
        data.dataset_yaml,
        source,
        list(schema.classes),
        training_dir_task(),
        epochs=epochs or p.train.bootstrap_epochs,
        lr0=p.train.bootstrap_lr0,
        imgsz=p.train.imgsz,
        batch=p.train.batch,
        device=p.train.device,
        workers=p.train.workers,
        patience=p.train.patience,
        seed=p.train.seed,
    )
    # 4. the holdout: the .pt and the exported ONNX, each scored on its own
    holdout_pt = evaluate_model_task(
        run_id, trained.best_pt, data.holdout_yaml, p.train.imgsz, "holdout"
    )
    holdout_onnx = evaluate_model_task(
        run_id, trained.onnx, data.holdout_yaml, p.train.imgsz, "holdout_onnx"
    )
    # 5. register as champion with lineage; the serving manifest starts at 100 % for it
    version = register_model_task(
        run_id,
        trained,
        {
            "dataset_version": dataset.name,
            "dataset_dvc_md5": dataset.dvc_md5,
            "dataset_git_rev": dataset.git_rev,
            "holdout_version": holdout.name,
            "git_commit": git_commit(),
            "params_sha256": params_sha256(),
            "parent_version": "none",
            "schema_version": schema.tag,
            "label_policy_version": str(schema.label_policy_version),
        },
        holdout_pt,
        {
            HOLDOUT_ONNX_MAP50_95: f"{holdout_onnx.map50_95:.4f}",
            GATE: "bootstrap: no champion to compare with",
        },
        p.registry.model_name,
        ["champion"],
        "Baseline champion v1 trained from scratch by `cvloop bootstrap`.",
    )
    write_initial_manifest_task(version)
    publish_bootstrap_report_task(version, dataset, holdout, trained, holdout_pt, holdout_onnx)
    return version


if __name__ == "__main__":
    bootstrap()
