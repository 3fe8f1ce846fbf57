"""Adopt: version 1 of everything from what a team brings — its Ultralytics checkpoint (the
champion), its labeled data (dataset v1) and its holdout (holdout v1) — instead of the
synthetic baseline. Idempotent: the same checkpoint adopted again changes nothing; a run
killed at any step and started again ends in the same state (cvloop/stages/adopt.py)."""

from __future__ import annotations

from prefect import flow

from cvloop.adapters.versioning import DATASET_DIR, DATASET_POINTER, HOLDOUT_DIR, HOLDOUT_POINTER
from flows.hooks import publish_failure
from tasks.adopt import (
    adopt_schema_task,
    adopted_lineage_task,
    adopted_tags_task,
    import_adopted_data_task,
    inspect_adopted_task,
    prepare_adopted_model_task,
    publish_adoption_report,
    refuse_foreign_state_task,
    start_adoption_task,
)
from tasks.data import version_data_task
from tasks.model import evaluate_model_task, register_model_task, training_dir_task
from tasks.rollout import write_initial_manifest_task


@flow(name="adopt", log_prints=True, on_failure=[publish_failure])
def adopt(
    checkpoint: str,
    data: str,
    data_format: str | None = None,
    images_dir: str | None = None,
    onnx: str | None = None,
    imgsz: int | None = None,
    class_map: list[str] | None = None,
    holdout: str | None = None,
    holdout_format: str | None = None,
    holdout_images_dir: str | None = None,
    holdout_frames: int | None = None,
) -> str:
    """Register the team's checkpoint as the champion with dataset v1 and holdout v1."""
    # 1. the file's sha256 on the adoption's MLflow run before anything loads it
    run = start_adoption_task(checkpoint)
    done = refuse_foreign_state_task(run)
    if done:  # the manifest too: a run killed right after the registration wrote none
        write_initial_manifest_task(done, "cvloop adopt")
        print(f"champion is version {done}, adopted from this file; nothing to do")
        return done
    # 2. what the checkpoint is: a detector, its classes (schema v1), imgsz, architecture
    info = inspect_adopted_task(run, imgsz)
    schema = adopt_schema_task(info)
    # 3. the labeled data and the holdout, checked on the way in, never overlapping
    mark = f"adopt {run.sha256[:12]}"
    imported = import_adopted_data_task(run.run_id, mark, schema, data, fmt=data_format,
                                        images_dir=images_dir, class_map=class_map,
                                        holdout=holdout, holdout_format=holdout_format,
                                        holdout_images_dir=holdout_images_dir,
                                        holdout_frames=holdout_frames)  # fmt: skip
    # 4. both versioned with DVC (dataset-v1 with schema.yaml, holdout-v1), pushed
    dataset = version_data_task(DATASET_DIR, DATASET_POINTER, "dataset-v1",
                                f"dataset v1: imported ({mark}, {schema.tag})",
                                schema_log=True)  # fmt: skip
    held = version_data_task(HOLDOUT_DIR, HOLDOUT_POINTER, "holdout-v1",
                             f"holdout v1: frozen ({mark})")  # fmt: skip
    # 5. the checkpoint and its ONNX export scored on the holdout, each on its own
    model = prepare_adopted_model_task(run, info, onnx, training_dir_task())
    holdout_pt = evaluate_model_task(run.run_id, model.best_pt, imported.holdout_yaml,
                                     info.imgsz, "holdout")  # fmt: skip
    holdout_onnx = evaluate_model_task(run.run_id, model.onnx, imported.holdout_yaml,
                                       info.imgsz, "holdout_onnx")  # fmt: skip
    # 6. registered as the champion (source: adopted), serving 100 %
    version = register_model_task(
        run.run_id, model, adopted_lineage_task(dataset, held, schema), holdout_pt,
        adopted_tags_task(run, info, imported, holdout_pt, holdout_onnx, onnx), ["champion"],
        f"Adopted from {run.origin} (sha256 {run.sha256[:12]}) by `cvloop adopt`.",
    )  # fmt: skip
    write_initial_manifest_task(version, "cvloop adopt")
    publish_adoption_report(version, run, info, imported, dataset, held, holdout_pt, holdout_onnx)
    return version
