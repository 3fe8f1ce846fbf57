"""A team's own Ultralytics checkpoint, read safely: what it is before cvloop trusts it.

A ``.pt`` file is a pickle, and unpickling runs code. So the file is hashed first (the
caller records the sha256 before anything is loaded), hashed again right before the load
(a file swapped in between is refused), and loaded with ``weights_only=True`` against
Ultralytics' allow-list of its own model classes (``torch_safe_load(safe_only=True)``):
a checkpoint that needs any other type is refused, never executed.

What is read from it, and used from then on instead of params.yaml's synthetic defaults:
the task (only ``detect`` is adopted), the class names, the training image size, the
architecture and the Ultralytics version that wrote it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from cvloop.adapters.files import sha256_file
from cvloop.core.errors import CvloopError

_TASK_HINT = {
    "classify": "an image classifier",
    "segment": "an instance-segmentation model",
    "pose": "a pose (keypoint) model",
    "obb": "an oriented-box model",
}


@dataclass(frozen=True)
class CheckpointInfo:
    """What an adopted checkpoint says about itself."""

    path: str
    sha256: str
    size_bytes: int
    task: str
    classes: list[str]
    imgsz: int
    imgsz_from: str  # "checkpoint" (its train_args) | "given"
    architecture: str  # the model YAML it was built from, e.g. yolo11n.yaml
    ultralytics_version: str
    saved_at: str
    parameters: int
    epochs_trained: int | None

    def as_dict(self) -> dict:
        return asdict(self)


def _refuse(path: Path, what: str, fix: str) -> CvloopError:
    return CvloopError(f"checkpoint {path}: {what}", fix=fix)


def _load(path: Path):
    """``torch_safe_load(safe_only=True)`` with its errors turned into refusals."""
    from ultralytics.nn.tasks import torch_safe_load

    try:
        ckpt, _ = torch_safe_load(str(path), safe_only=True)
    except (TypeError, ModuleNotFoundError, AttributeError) as exc:
        text = str(exc)
        if "yolov5" in text.lower():
            raise _refuse(path, "a YOLOv5 checkpoint (github.com/ultralytics/yolov5), which "
                          "the ultralytics package cannot load",
                          "re-train or convert it with the ultralytics package "
                          "(YOLOv8 / YOLO11 / YOLO26)") from exc  # fmt: skip
        if "outside the supported" in text:
            raise _refuse(path, "it references Python types outside Ultralytics' checkpoint "
                          "format; cvloop loads checkpoints with weights_only=True and never "
                          "runs the code a pickle asks for",
                          "in a trusted environment, re-save it with plain ultralytics: "
                          "YOLO('best.pt').save('clean.pt'), and adopt clean.pt") from exc  # fmt: skip
        raise _refuse(path, "not a loadable checkpoint (empty, truncated, corrupted, or not a "
                      f"PyTorch file): {text.splitlines()[0][:200]}",
                      "copy the file again from where it was trained, or re-export it with "
                      "ultralytics") from exc  # fmt: skip
    except Exception as exc:  # torch's own errors for other damaged files
        raise _refuse(path, f"cannot be read ({type(exc).__name__}: {str(exc)[:200]})",
                      "copy the file again from where it was trained") from exc  # fmt: skip
    if not isinstance(ckpt, dict) or (ckpt.get("ema") or ckpt.get("model")) is None:
        raise _refuse(path, "a PyTorch file without an Ultralytics model in it",
                      "adopt the best.pt (or last.pt) an Ultralytics training wrote")  # fmt: skip
    return ckpt


def _names(path: Path, model) -> list[str]:
    names = getattr(model, "names", None)
    if isinstance(names, list | tuple):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise _refuse(path, "it carries no class names",
                      "train it with a data.yaml that names the classes")  # fmt: skip
    keys = sorted(names)
    if keys != list(range(len(keys))):
        raise _refuse(path, f"class ids {keys} are not 0..{len(keys) - 1}",
                      "re-save it with contiguous class ids")  # fmt: skip
    out = [str(names[k]).strip() for k in keys]
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup or any(not n for n in out):
        raise _refuse(path, f"class names {out} are empty or repeated ({dup})",
                      "give every class one distinct name in the data.yaml it is trained on")  # fmt: skip
    return out


def _imgsz(path: Path, ckpt: dict, given: int | None) -> tuple[int, str]:
    args = ckpt.get("train_args") or {}
    raw = args.get("imgsz")
    if isinstance(raw, list | tuple) and raw:
        raw = max(int(x) for x in raw)
    found = int(raw) if isinstance(raw, int | float) and raw else None
    if given is not None:
        if found is not None and found != given:
            raise _refuse(path, f"it was trained at imgsz {found}, not the {given} given",
                          f"drop --imgsz (cvloop reads {found} from the checkpoint) or give "
                          f"--imgsz {found}")  # fmt: skip
        return given, "given"
    if found is None:
        raise _refuse(path, "it does not record the image size it was trained at (no "
                      "train_args: a checkpoint saved outside a training run)",
                      "give it: --imgsz N (the imgsz it was trained and is served at)")  # fmt: skip
    if found % 32:
        raise _refuse(path, f"its imgsz {found} is not a multiple of 32 (the model's stride)",
                      "give the size it is served at: --imgsz N")  # fmt: skip
    return found, "checkpoint"


def sha256_of(path: str | Path) -> str:
    """The file's sha256, refusing what is not a file (a directory, a missing path)."""
    p = Path(path)
    if not p.is_file():
        raise _refuse(p, "no such file", "give the path of the .pt file (e.g. runs/detect/"
                      "train/weights/best.pt)")  # fmt: skip
    return sha256_file(p)


def inspect_checkpoint(path: str | Path, sha256: str, imgsz: int | None = None) -> CheckpointInfo:
    """Read ``path`` once its ``sha256`` is recorded; refuse anything but an Ultralytics
    detection checkpoint, naming the file and the fix."""
    import torch

    p = Path(path).resolve()
    if p.suffix != ".pt":
        raise _refuse(p, f"the file name ends in {p.suffix or 'nothing'!r}, not .pt",
                      "adopt the PyTorch checkpoint (.pt); give its ONNX export with "
                      "--onnx")  # fmt: skip
    now = sha256_of(p)
    if now != sha256:
        raise _refuse(p, f"the file changed after its sha256 was recorded ({sha256[:12]} → "
                      f"{now[:12]})", "let the copy finish, then run the adoption again")  # fmt: skip
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # torch's zip format, or a legacy pickle
        raise _refuse(p, "not a PyTorch file (it starts with neither a zip nor a pickle header)",
                      "adopt the best.pt an Ultralytics training wrote")  # fmt: skip
    ckpt = _load(p)
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, torch.nn.Module):
        raise _refuse(p, "its model entry is not a network",
                      "adopt the best.pt an Ultralytics training wrote")  # fmt: skip
    from ultralytics.nn.tasks import guess_model_task

    task = getattr(model, "task", None) or guess_model_task(model)
    if task != "detect":
        what = _TASK_HINT.get(task, f"a {task!r} model")
        raise _refuse(p, f"{what}, not an object detector (task {task!r})",
                      "adopt a detection checkpoint (trained with task=detect)")  # fmt: skip
    classes = _names(p, model)
    head = getattr(model, "model", [None])[-1] if hasattr(model, "model") else None
    nc = getattr(head, "nc", None)
    if nc is not None and int(nc) != len(classes):
        raise _refuse(p, f"its head predicts {nc} classes but it names {len(classes)}",
                      "re-save it with the names of the data it was trained on")  # fmt: skip
    size, size_from = _imgsz(p, ckpt, imgsz)
    yaml = getattr(model, "yaml", None) or {}
    arch = str(yaml.get("yaml_file") or yaml.get("model") or type(model).__name__)
    scale = yaml.get("scale")
    if scale and arch.endswith(".yaml") and scale not in Path(arch).stem:
        arch = f"{arch} (scale {scale})"
    epoch = ckpt.get("epoch")
    if not isinstance(epoch, int) or epoch < 0:  # a finished run's best.pt says -1
        epoch = int((ckpt.get("train_args") or {}).get("epochs") or 0) - 1
    return CheckpointInfo(
        path=str(p),
        sha256=sha256,
        size_bytes=p.stat().st_size,
        task=task,
        classes=classes,
        imgsz=size,
        imgsz_from=size_from,
        architecture=arch,
        ultralytics_version=str(ckpt.get("version") or "unknown"),
        saved_at=str(ckpt.get("date") or "unknown"),
        parameters=int(sum(x.numel() for x in model.parameters())),
        epochs_trained=(int(epoch) + 1) if isinstance(epoch, int) and epoch >= 0 else None,
    )
