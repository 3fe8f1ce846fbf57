"""The baseline champion's report (runbook: v1 of everything) and the first traffic split."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cvloop.context import Context


def bootstrap_report(version, dataset, holdout, trained, holdout_pt, holdout_onnx) -> str:
    lines = [
        f"# Baseline champion: version {version}",
        "",
        "| what | value |",
        "|---|---|",
        f"| dataset | {dataset.name} (DVC md5 `{dataset.dvc_md5}`, git `{dataset.git_rev[:10]}`,"
        f" {dataset.files} files) |",
        f"| holdout | {holdout.name} (DVC md5 `{holdout.dvc_md5}`) |",
        f"| training run | `{trained.run_id}` ({trained.epochs_run} epochs, "
        f"{trained.train_seconds / 60:.1f} min) |",
        f"| holdout mAP50-95 / mAP50 (.pt) | {holdout_pt.map50_95:.3f} / {holdout_pt.map50:.3f} |",
        f"| holdout mAP50-95 / mAP50 (ONNX) | {holdout_onnx.map50_95:.3f} / "
        f"{holdout_onnx.map50:.3f} |",
        "",
        "| class | AP50-95 | AP50 |",
        "|---|---|---|",
    ]
    for cls, ap in holdout_pt.per_class_ap50_95.items():
        lines.append(f"| {cls} | {ap:.3f} | {holdout_pt.per_class_ap50.get(cls, 0):.3f} |")
    return "\n".join(lines) + "\n"


def start_baseline_run(ctx: Context, dataset, holdout, data, epochs: int) -> str:
    """The baseline's MLflow training run, with what it is trained on and how."""
    from cvloop.config.lineage import git_commit
    from cvloop.stages.model import start_run_again
    from registry.names import DATASET_DVC_MD5, DATASET_VERSION, FLOW, GIT_COMMIT, HOLDOUT_VERSION

    t = ctx.params.train
    return start_run_again(
        ctx,
        ctx.params.registry.experiment,
        "bootstrap-v1",
        {"model": t.model_yaml, "epochs": epochs, "optimizer": t.optimizer, "lr0": t.bootstrap_lr0, "imgsz": t.imgsz,
         "batch": t.batch, "train_frames": data.train_frames, "val_frames": data.val_frames},
        {FLOW: "bootstrap", DATASET_VERSION: dataset.name, DATASET_DVC_MD5: dataset.dvc_md5,
         HOLDOUT_VERSION: holdout.name, GIT_COMMIT: git_commit()},
        {FLOW: "bootstrap", DATASET_VERSION: dataset.name},
    )  # fmt: skip


def baseline_lineage(ctx: Context, dataset, holdout, schema) -> dict[str, str]:
    """The baseline's lineage tags: data versions, code, params, schema; no parent."""
    from cvloop.config.lineage import git_commit, params_sha256

    return {
        "dataset_version": dataset.name,
        "dataset_dvc_md5": dataset.dvc_md5,
        "dataset_git_rev": dataset.git_rev,
        "holdout_version": holdout.name,
        "git_commit": git_commit(),
        "params_sha256": params_sha256(),
        "parent_version": "none",
        "schema_version": schema.tag,
        "label_policy_version": str(schema.label_policy_version),
    }


def baseline_tags(holdout_onnx) -> dict[str, str]:
    """What the baseline carries instead of a gate verdict: its ONNX's own holdout mAP."""
    from registry.names import GATE, HOLDOUT_ONNX_MAP50_95

    return {
        HOLDOUT_ONNX_MAP50_95: f"{holdout_onnx.map50_95:.4f}",
        GATE: "bootstrap: no champion to compare with",
    }
