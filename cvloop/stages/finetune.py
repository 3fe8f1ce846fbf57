"""Runbook step 6: fine-tune a candidate from the champion's best.pt on a dataset version
(its head resized when the class schema changed, new classes' frames repeated)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from cvloop.stages.candidate import TrainingData
from cvloop.stages.model import (
    ChampionRef,
    TrainedModel,
    start_training_run,
    train_model,
)
from registry.names import FLOW, HEAD_RESIZE

if TYPE_CHECKING:
    from cvloop.context import Context


def fine_tune(
    ctx: Context,
    retrain_run_id: str,
    champion: ChampionRef,
    data: TrainingData,
    out_dir: str,
    experiment: str,
    train,
) -> TrainedModel:
    """Fine-tune from the champion's best.pt on the new dataset version with ``train``
    (params.yaml's section: lr0, epochs, batch, device, ...) at the champion's imgsz; the
    training run is a child of the retrain's MLflow run."""
    from cvloop.config.lineage import git_commit

    # the champion's own image size, not params.yaml's (train.imgsz is the from-scratch
    # baseline's): an adopted 640 px detector is fine-tuned, exported and served at 640
    if champion.imgsz and champion.imgsz != train.imgsz:
        train = train.model_copy(update={"imgsz": champion.imgsz})
    run_id = start_training_run(
        ctx,
        experiment,
        f"finetune-{data.dataset['name']}-from-v{champion.version}",
        {
            "epochs": train.epochs,
            "optimizer": train.optimizer,
            "lr0": train.lr0,
            "momentum": train.momentum,
            "imgsz": train.imgsz,
            "batch": train.batch,
            "init": "champion",
        },
        {
            "mlflow.parentRunId": retrain_run_id,
            FLOW: "retrain",
            "cvloop.dataset.version": data.dataset["name"],
            "cvloop.dataset.dvc_md5": data.dataset["dvc_md5"],
            "cvloop.parent_version": champion.version,
            "cvloop.git_commit": git_commit(),
        },
    )
    source, classes = champion.pt, list(champion.classes)
    names = _dataset_names(data.dataset_yaml)
    if names and names != classes:
        # the class schema changed: start from best.pt with the head resized, each kept
        # class keeping its learned output (cvloop/adapters/head.py), new classes from the prior
        from cvloop.adapters.head import resize_checkpoint
        from cvloop.stages.schema import schema_log

        # renamed classes keep their rows under the new name (the schema log knows which)
        sources = schema_log(ctx).sources(classes)
        init, rep = resize_checkpoint(
            champion.pt,
            names,
            Path(out_dir) / run_id / "init" / "resized-from-champion.pt",
            sources or None,
        )
        resize = {"kept": rep.kept_classes, "new": rep.new_classes, "dropped": rep.dropped_classes}
        ctx.tracker.set_tags(run_id, {HEAD_RESIZE: json.dumps(resize)})
        source, classes = str(init), names
        data_yaml = repeat_new_class_frames(
            data.dataset_yaml, [names.index(c) for c in rep.new_classes],
            train.new_class_repeat, Path(out_dir) / run_id / "init",
        )  # fmt: skip
        ctx.tracker.log_params(run_id, {"new_class_repeat": train.new_class_repeat})
    else:
        data_yaml = data.dataset_yaml
    return train_model(ctx, run_id, data_yaml, source, classes, out_dir, train)


def repeat_new_class_frames(data_yaml: str, new_ids: list[int], repeat: int, dest: Path) -> str:
    """A data.yaml whose training list names each frame holding a new class ``repeat``
    times (repeat-factor sampling): a class the champion never saw starts from its prior
    with a few dozen frames among hundreds, and would otherwise barely move in a short
    fine-tune. Validation and the class list are the dataset's own; the dataset version
    itself is unchanged. Without new classes (or ``repeat`` 1) the dataset's data.yaml."""
    import yaml

    if not new_ids or repeat <= 1:
        return data_yaml
    src = Path(data_yaml)
    cfg = yaml.safe_load(src.read_text()) or {}
    root = Path(cfg.get("path") or src.parent)
    if not root.is_absolute():
        root = src.parent / root
    train_dir = root / str(cfg["train"])
    wanted = {str(i) for i in new_ids}
    lines = []
    for image in sorted(
        p for p in train_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    ):
        # Ultralytics' own rule: the last /images/ of the path becomes /labels/
        label = Path("/labels/".join(str(image.with_suffix(".txt")).rsplit("/images/", 1)))
        ids = (
            {ln.split()[0] for ln in label.read_text().splitlines() if ln.strip()}
            if label.exists()
            else set()
        )
        lines += [str(image)] * (repeat if ids & wanted else 1)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "train.txt").write_text("\n".join(lines) + "\n")
    val = root / str(cfg["val"])
    out = {**cfg, "path": str(root), "train": str(dest / "train.txt"), "val": str(val)}
    (dest / "data.yaml").write_text(yaml.safe_dump(out, sort_keys=False))
    return str(dest / "data.yaml")


def _dataset_names(data_yaml: str) -> list[str]:
    """The class names of a dataset's data.yaml, in id order."""
    import yaml

    names = (yaml.safe_load(Path(data_yaml).read_text()) or {}).get("names") or {}
    if isinstance(names, dict):
        return [names[k] for k in sorted(names, key=int)]
    return list(names)
