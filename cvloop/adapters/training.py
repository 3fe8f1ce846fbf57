"""Train, evaluate and export YOLO models with Ultralytics.

Training metrics and losses go to the caller (its MLflow run) through an Ultralytics callback
(``on_fit_epoch_end``), never by parsing output folders; the trainer object tells us where
``best.pt`` and the plots are. Ultralytics' own integrations stay off
(:func:`cvloop.config.offline.configure_ultralytics`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cvloop.config.params import TrainParams
from cvloop.core.errors import CvloopError


def resolve_device(device: str) -> str:
    """``auto`` -> ``0`` (first CUDA device) when one is present, else ``cpu``."""
    if device != "auto":
        return device
    try:
        import torch

        return "0" if torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


def _metric_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "", key)


class EpochLogger:
    """Ultralytics callback: per-epoch metrics, losses and learning rates, handed to ``log``
    (``log(values, step)``: the stage sends them to its tracking run)."""

    def __init__(self, log: Callable[[dict[str, float], int], None]) -> None:
        self.log = log
        self.epochs_logged = 0

    def on_fit_epoch_end(self, trainer) -> None:
        values: dict[str, float] = {}
        values.update(trainer.label_loss_items(trainer.tloss, prefix="train"))
        values.update(trainer.metrics or {})
        values.update(trainer.lr or {})
        clean = {_metric_name(k): float(v) for k, v in values.items() if v is not None}
        self.log(clean, int(trainer.epoch))
        self.epochs_logged += 1


@dataclass(frozen=True)
class OptimizerUsed:
    """What the trainer's optimizer actually started from (read back from the optimizer,
    not from params: ``optimizer=auto`` would silently replace both)."""

    name: str
    lr0: float
    momentum: float

    @staticmethod
    def of(optimizer) -> OptimizerUsed:
        group = optimizer.param_groups[0]
        lr0 = float(group.get("initial_lr", group["lr"]))  # the scheduler's start, before warmup
        momentum = group.get("momentum", (group.get("betas") or (float("nan"),))[0])
        return OptimizerUsed(type(optimizer).__name__, lr0, float(momentum))


@dataclass
class TrainResult:
    best_pt: Path
    save_dir: Path
    epochs_run: int
    seconds: float
    device: str
    plots: list[Path] = field(default_factory=list)
    epochs_planned: int = 0
    best_epoch: int = 0
    optimizer: OptimizerUsed | None = None

    @property
    def stopped_early(self) -> bool:
        """Early stopping (no fitness gain for ``train.patience`` epochs) ended training
        before the planned epochs."""
        return 0 < self.epochs_run < self.epochs_planned

    def lineage(self) -> tuple[dict[str, float], dict[str, str]]:
        """Metrics and tags for the training run: what training really did."""
        metrics = {"train.seconds": self.seconds, "train.epochs_run": self.epochs_run,
                   "train.epochs_planned": self.epochs_planned,
                   "train.best_epoch": self.best_epoch,
                   "train.stopped_early": float(self.stopped_early)}  # fmt: skip
        tags: dict[str, str] = {}
        if self.optimizer is not None:
            metrics |= {"train.lr0_used": self.optimizer.lr0,
                        "train.momentum_used": self.optimizer.momentum}  # fmt: skip
            tags["cvloop.train.optimizer_used"] = self.optimizer.name
        return metrics, tags


def ultralytics_train_args(p: TrainParams, *, epochs: int, lr0: float, device: str) -> dict:
    """The one place that spells Ultralytics' training arguments from ``params.yaml``'s
    ``train`` section (``epochs`` and ``lr0`` differ between the from-scratch baseline and a
    fine-tune, so the caller names them). The optimizer is always named: Ultralytics'
    ``optimizer=auto`` ignores ``lr0`` and ``momentum``."""
    return {
        "epochs": epochs,
        "optimizer": p.optimizer,
        "lr0": lr0,
        "momentum": p.momentum,
        "weight_decay": p.weight_decay,
        "imgsz": p.imgsz,
        "batch": p.batch,
        "device": device,
        "workers": p.workers,
        "patience": p.patience,
        "seed": p.seed,
        "deterministic": True,
        "plots": True,
        "verbose": False,
        "amp": device != "cpu",
        "val": True,
    }


def train(
    data_yaml: Path,
    model_source: str,
    out_dir: Path,
    name: str,
    p: TrainParams,
    *,
    epochs: int | None = None,
    lr0: float | None = None,
    on_epoch: Callable[[dict[str, float], int], None] | None = None,
    extra: dict | None = None,
) -> TrainResult:
    """Train (or fine-tune) a YOLO detector with ``params.yaml``'s ``train`` section.

    Args:
        model_source: a model YAML (from scratch, nothing downloaded) or a ``.pt`` to
            fine-tune from.
        out_dir, name: where Ultralytics writes (``out_dir/name``), chosen by the caller.
        epochs, lr0: default ``p.epochs`` / ``p.lr0`` (the fine-tune's).
        on_epoch: receives each epoch's metrics (``on_fit_epoch_end``).
    """
    from cvloop.config.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    if model_source.endswith(".pt") and not Path(model_source).exists():
        raise CvloopError(f"weights to fine-tune from not found: {model_source}")
    dev = resolve_device(p.device)
    model = YOLO(model_source)
    if on_epoch is not None:
        model.add_callback("on_fit_epoch_end", EpochLogger(on_epoch).on_fit_epoch_end)
    t0 = time.perf_counter()
    args = ultralytics_train_args(p, epochs=epochs or p.epochs, lr0=lr0 or p.lr0, device=dev)
    model.train(data=str(data_yaml), project=str(out_dir), name=name, exist_ok=True,
                **args, **(extra or {}))  # fmt: skip
    seconds = time.perf_counter() - t0
    trainer = model.trainer
    best = Path(trainer.best)
    if not best.exists():
        best = Path(trainer.last)
    save_dir = Path(trainer.save_dir)
    plots = sorted(p for p in save_dir.glob("*.png")) + sorted(save_dir.glob("*.jpg"))
    used = OptimizerUsed.of(trainer.optimizer) if trainer.optimizer is not None else None
    stopper = getattr(trainer, "stopper", None)
    return TrainResult(best, save_dir, int(trainer.epoch) + 1, seconds, dev, plots,
                       epochs_planned=int(args["epochs"]),
                       best_epoch=int(getattr(stopper, "best_epoch", 0) or 0),  # 1-based
                       optimizer=used)  # fmt: skip


@dataclass
class EvalResult:
    """Detection metrics of one model on one set of frames (fractions in [0, 1])."""

    map50_95: float
    map50: float
    precision: float
    recall: float
    per_class_ap50_95: dict[str, float]
    per_class_ap50: dict[str, float]
    images: int
    instances: int

    def as_metrics(self, prefix: str) -> dict[str, float]:
        out = {
            f"{prefix}.map50_95": self.map50_95,
            f"{prefix}.map50": self.map50,
            f"{prefix}.precision": self.precision,
            f"{prefix}.recall": self.recall,
        }
        for cls, v in self.per_class_ap50_95.items():
            out[f"{prefix}.ap50_95.{cls}"] = v
        for cls, v in self.per_class_ap50.items():
            out[f"{prefix}.ap50.{cls}"] = v
        return out


def evaluate(
    weights: Path,
    data_yaml: Path,
    *,
    imgsz: int,
    batch: int = 16,
    device: str = "auto",
    split: str = "val",
    out_dir: Path | None = None,
    name: str = "eval",
) -> EvalResult:
    """Validate ``weights`` (``.pt`` or an exported ``.onnx`` / ``.engine``) on a split.

    Per-class values are reported only for classes with instances in the split (Ultralytics
    fills absent classes with the mean, which would hide a missing class).
    """
    from cvloop.config.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    dev = resolve_device(device)
    model = YOLO(str(weights), task="detect")
    kwargs = dict(
        data=str(data_yaml),
        imgsz=imgsz,
        batch=batch if str(weights).endswith(".pt") else 1,
        device=dev,
        split=split,
        plots=False,
        verbose=False,
        workers=0,
    )
    if out_dir is not None:
        kwargs.update(project=str(out_dir), name=name, exist_ok=True)
    m = model.val(**kwargs)
    names = m.names
    box = m.box
    idx = [int(c) for c in getattr(box, "ap_class_index", [])]
    per95 = {names[int(c)]: float(box.ap[i]) for i, c in enumerate(idx)}
    per50 = {names[int(c)]: float(box.ap50[i]) for i, c in enumerate(idx)}
    nt = getattr(m, "nt_per_class", None)
    instances = int(nt.sum()) if nt is not None else 0
    return EvalResult(
        float(box.map),
        float(box.map50),
        float(box.mp),
        float(box.mr),
        per95,
        per50,
        _count_images(Path(data_yaml), split),
        instances,
    )


def _count_images(data_yaml: Path, split: str) -> int:
    """Images of a split (a folder or a list file) of a data.yaml."""
    import yaml

    spec = yaml.safe_load(data_yaml.read_text())
    target = data_yaml.parent / str(spec.get(split, ""))
    if target.is_dir():
        return sum(1 for p in target.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if target.is_file():
        return sum(1 for line in target.read_text().splitlines() if line.strip())
    return 0


def export_onnx(weights: Path, imgsz: int, dest: Path) -> Path:
    """Export to ONNX (dynamic batch, opset from Ultralytics) and move it to ``dest``."""
    from cvloop.config.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    path = Path(
        YOLO(str(weights)).export(
            format="onnx", imgsz=imgsz, dynamic=True, device="cpu", simplify=True
        )
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    path.replace(dest)
    return dest
