"""Resize a trained detector's class head for a new class list, keeping what it learned.

When the schema adds, renames, retires or merges classes, the next fine-tune starts from
the champion's best.pt. Ultralytics, given a data.yaml with another class count, rebuilds
the model and transfers only the tensors whose shapes match — the last convolution of
each classification branch (one output channel per class) does not match, so the scores of
*every* class start from scratch. Here the head is rebuilt for the new class list and each
kept class gets its old output channel back:

* every tensor with the same shape is copied (backbone, neck, box branch, ...);
* the final class convolutions (``cv3.<level>.2`` and, for end-to-end heads,
  ``one2one_cv3.<level>.2``) get one row per new class: the row of the class it comes from
  (same name, or the old name of a renamed / merged class), or Ultralytics' fresh
  initialisation for a new class (its prior bias from ``Detect.bias_init``).

So, before any training step, the resized model gives the old classes exactly the scores
they had, and boxes exactly as before (tested).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

from cvloop.core.errors import CvloopError

_CLS_FINAL = re.compile(r"(^|\.)(one2one_)?cv3\.\d+\.2\.(weight|bias)$")


@dataclass
class HeadResize:
    """What happened to each tensor and class."""

    kept_classes: dict[str, str] = field(default_factory=dict)  # new name -> old name
    new_classes: list[str] = field(default_factory=list)
    dropped_classes: list[str] = field(default_factory=list)
    copied_tensors: int = 0
    reinitialised: list[str] = field(default_factory=list)  # other tensors whose shape changed


def resize_class_head(model, new_names: list[str], sources: dict[str, str] | None = None):
    """A copy of the Ultralytics ``DetectionModel`` ``model`` with a head for ``new_names``.

    Args:
        model: the trained detection model (e.g. ``YOLO(best.pt).model``).
        new_names: the class list of the new schema, in id order.
        sources: new class name -> old class name it inherits from (a rename or a merge
            target); by default a class inherits from the old class of the same name.

    Returns:
        ``(resized model, HeadResize report)``.
    """
    import torch
    from ultralytics.nn.tasks import DetectionModel

    old_names = [model.names[i] for i in sorted(model.names)]
    if len(set(new_names)) != len(new_names):
        raise CvloopError(
            f"duplicate class names in {new_names}", fix="each class name appears once"
        )
    sources = dict(sources or {})
    for new, old in sources.items():
        if new not in new_names:
            raise CvloopError(f"'{new}' is not in the new class list {new_names}")
        if old not in old_names:
            raise CvloopError(
                f"'{old}' is not a class of the model ({old_names})",
                fix="name a class the trained model has",
            )
    old_index = {n: i for i, n in enumerate(old_names)}
    report = HeadResize()
    rows: list[int | None] = []
    for name in new_names:
        src = sources.get(name, name if name in old_index else None)
        rows.append(old_index[src] if src is not None else None)
        if src is None:
            report.new_classes.append(name)
        else:
            report.kept_classes[name] = src
    used = set(report.kept_classes.values())
    report.dropped_classes = [n for n in old_names if n not in used]

    cfg = copy.deepcopy(model.yaml)
    cfg["nc"] = len(new_names)
    resized = DetectionModel(cfg, ch=cfg.get("channels", 3), nc=len(new_names), verbose=False)
    old_sd = model.state_dict()
    new_sd = resized.state_dict()
    with torch.no_grad():
        for key, tensor in new_sd.items():
            old = old_sd.get(key)
            if old is None:
                report.reinitialised.append(key)
            elif old.shape == tensor.shape and not _CLS_FINAL.search(key):
                tensor.copy_(old)
                report.copied_tensors += 1
            elif _CLS_FINAL.search(key) and old.shape[1:] == tensor.shape[1:]:
                for new_i, old_i in enumerate(rows):
                    if old_i is not None:
                        tensor[new_i].copy_(old[old_i])
                report.copied_tensors += 1
            else:
                report.reinitialised.append(key)
    resized.load_state_dict(new_sd)
    resized.names = dict(enumerate(new_names))
    resized.args = getattr(model, "args", {})
    resized.stride = model.stride
    return resized, report


def resize_checkpoint(
    pt: str | Path,
    new_names: list[str],
    out: str | Path,
    sources: dict[str, str] | None = None,
) -> tuple[Path, HeadResize]:
    """``pt`` (an Ultralytics checkpoint) with its class head resized for ``new_names``,
    written to ``out`` in the same checkpoint format (``YOLO(out)`` loads and trains it)."""
    import torch
    from ultralytics import YOLO

    src = YOLO(str(pt))
    resized, report = resize_class_head(src.model, new_names, sources)
    ckpt = {
        "model": resized.float(),
        "train_args": dict(getattr(src.model, "args", {}) or {}),
        "cvloop": {
            "resized_from": str(pt),
            "kept_classes": report.kept_classes,
            "new_classes": report.new_classes,
            "dropped_classes": report.dropped_classes,
        },
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return out, report
