"""The baseline champion's report (runbook: v1 of everything) and the first traffic split."""

from __future__ import annotations

from registry.manifest import read_manifest, single, write_manifest


def write_initial_manifest(version: str) -> str:
    """Point 100 % of traffic at the first champion, unless a manifest exists already."""
    from cvloop.adapters.storage import open_storage

    store = open_storage(create_bucket=True)
    current = read_manifest(store)
    if current is not None:
        return current.to_json()
    manifest = write_manifest(
        store,
        single(version, stage="stable"),
        who="cvloop bootstrap",
        reason=f"bootstrap: version {version} is the first champion",
    )
    return manifest.to_json()


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
