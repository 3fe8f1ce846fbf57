"""Scoring a model on labelled frames outside Ultralytics' validator: calibration error of
the served ONNX model (champion and challenger on the same frames)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cvloop.adapters.datasets import read_yolo_labels, yolo_split_frames
from cvloop.core import slices
from cvloop.core.calibration import expected_calibration_error, restrict
from cvloop.core.frames import LabelBox
from cvloop.stages.model import (
    ChampionRef,
    TrainedModel,
    evaluate_model,
)

if TYPE_CHECKING:
    from cvloop.context import Context


def model_ece(
    onnx_path: Path,
    classes: Sequence[str],
    imgsz: int,
    data_yaml: Path,
    *,
    conf: float = 0.25,
    bins: int = 10,
    iou: float = 0.5,
    batch: int = 16,
    only: Sequence[str] | None = None,
) -> float | None:
    """ECE of an exported model on a YOLO evaluation set, at the serving threshold ``conf``;
    ``only``: over these classes' boxes (predicted and true) alone."""
    import cv2

    from cvloop.adapters.detector import OnnxDetector

    det = OnnxDetector(onnx_path, list(classes), imgsz)
    pairs = yolo_split_frames(Path(data_yaml))
    frames = []
    for i in range(0, len(pairs), batch):
        chunk = pairs[i : i + batch]
        images = [cv2.cvtColor(cv2.imread(str(img)), cv2.COLOR_BGR2RGB) for img, _ in chunk]
        for (_, lbl), d in zip(chunk, det.predict(images, conf=conf), strict=True):
            pred = [
                (LabelBox(classes[int(c)], *map(float, box)), float(s))
                for box, s, c in zip(d.cxcywh(), d.scores, d.classes, strict=True)
            ]
            truth = read_yolo_labels(lbl, classes)
            frames.append(restrict(pred, truth, only) if only is not None else (pred, truth))
    return expected_calibration_error(frames, bins=bins, iou=iou)


@dataclass(frozen=True)
class Evaluations:
    """Metrics per evaluation set (``holdout``, ``slice:<tag>``) for both models."""

    champion: dict
    challenger: dict
    sets: dict  # name -> frames
    slices: list[str]  # the drift slices that gate (each tag, then drift:all)
    new_classes: list[str] = field(default_factory=list)  # no champion baseline


def _metrics(result) -> dict:
    out = {"map50_95": result.map50_95, "map50": result.map50}
    out.update({"precision": result.precision, "recall": result.recall})
    out.update({f"ap50_95.{k}": v for k, v in result.per_class_ap50_95.items()})
    out.update({f"ap50.{k}": v for k, v in result.per_class_ap50.items()})
    return out


def evaluate_pair(
    ctx: Context,
    trained: TrainedModel,
    champion: ChampionRef,
    holdout_dir: str,
    slice_tags: list[str],
    work_dir: str,
    device: str,
    serving_conf: float = 0.25,
    corruptions: list[str] | None = None,
) -> Evaluations:
    """Champion and candidate on the same frames, in this run: the holdout, each drift
    slice of it, the slices pooled (``drift:all``) and its clean part; mAP, precision,
    recall, per-class AP (Ultralytics on the .pt) and the expected calibration error of the
    served model (ONNX, at the serving threshold); and the holdout as a worse camera gives
    it (``robust:<corruption>``: noise, blur, JPEG, dim; mAP only), for the robustness gate.
    Logged to the candidate's training run."""
    from cvloop.adapters.cameras import registry
    from cvloop.adapters.datasets import read_manifest
    from cvloop.adapters.eval_sets import build_slice_sets, class_view, corrupted_view
    from cvloop.stages.evaluate import model_ece

    sets = {"holdout": (Path(holdout_dir) / "data.yaml", len(read_manifest(Path(holdout_dir))))}
    groups = {c: r["group"] for c, r in registry(ctx.store).items()}
    for tag, (yaml_path, n) in build_slice_sets(
        Path(holdout_dir), slice_tags, Path(work_dir) / "slices", trained.classes, groups
    ).items():
        sets[f"slice:{tag}"] = (yaml_path, n)
    for kind in corruptions or []:
        view = corrupted_view(Path(holdout_dir), Path(work_dir) / "robust" / kind, kind,
                              list(trained.classes))  # fmt: skip
        sets[f"robust:{kind}"] = (view, sets["holdout"][1])
    # after a schema change the champion predicts another class list: it is scored on a
    # view of the same frames labelled in its classes, and its per-class results are named
    # by today's classes (a class it cannot predict has no champion baseline)
    view, renamed = _champion_view(ctx, champion, trained.classes)
    new_classes = (
        [c for c in trained.classes if c not in set(renamed.values())] if renamed is not None
        else []
    )  # fmt: skip
    # calibration is compared like with like: a class new in this schema has no champion
    # baseline, so the challenger's ECE leaves its boxes out (its own floor is the AP gate)
    shared = [c for c in trained.classes if c not in new_classes]
    champ, chall = {}, {}
    for name, (yaml_path, _n) in sets.items():
        key = name.replace(":", ".").replace(" ", "_")
        champ_yaml = yaml_path
        if view is not None:
            champ_yaml = class_view(Path(yaml_path).parent, Path(work_dir) / "champion-view" /
                                    key, list(champion.classes), view)  # fmt: skip
        for who, pt, onnx, out, yml, names in (
            ("champion", champion.pt, champion.onnx, champ, champ_yaml, champion.classes),
            ("challenger", trained.best_pt, trained.onnx, chall, yaml_path, trained.classes),
        ):
            res = evaluate_model(ctx, trained.run_id, pt, str(yml), trained.imgsz,
                                 f"{who}.{key}", device)  # fmt: skip
            out[name] = _metrics(res)
            if who == "champion" and renamed is not None:
                out[name] = _renamed(out[name], renamed)
            if name.startswith("robust:"):
                continue  # mAP only: calibration is judged on the holdout as it is
            ece = model_ece(Path(onnx), list(names), trained.imgsz, Path(yml),
                            conf=serving_conf,
                            only=shared if who == "challenger" and new_classes else None)  # fmt: skip
            if ece is not None:
                out[name]["ece"] = ece
                ctx.tracker.log_metrics(trained.run_id, {f"{who}.{key}.ece": ece})
    return Evaluations(
        champ,
        chall,
        {k: n for k, (_, n) in sets.items()},
        [*slice_tags, str(slices.DRIFT_ALL)] if slice_tags else [],
        new_classes,
    )


def _champion_view(
    ctx: Context, champion: ChampionRef, classes: list[str]
) -> tuple[dict[int, int | None] | None, dict[str, str] | None]:
    """(today's id -> champion id, champion name -> today's name) when the class lists
    differ; (None, None) when they are the same."""
    if list(champion.classes) == list(classes):
        return None, None
    from cvloop.stages.schema import schema_log

    sources = schema_log(ctx).sources(list(champion.classes)) or {
        c: c for c in classes if c in champion.classes
    }
    view = {
        i: (champion.classes.index(sources[c]) if c in sources else None)
        for i, c in enumerate(classes)
    }
    return view, {old: new for new, old in sources.items()}


def _renamed(metrics: dict, names: dict[str, str]) -> dict:
    """Per-class keys of the champion's metrics under today's class names (a class of its
    own that no longer exists is left out)."""
    out = {}
    for k, v in metrics.items():
        if k.startswith(("ap50_95.", "ap50.")):
            kind, cls = k.split(".", 1)
            if cls in names:
                out[f"{kind}.{names[cls]}"] = v
        else:
            out[k] = v
    return out
