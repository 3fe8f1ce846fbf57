"""A Triton Inference Server model repository for a registered version.

Layout (Triton's own, https://docs.nvidia.com/deeplearning/triton-inference-server)::

    <repo>/<model>/config.pbtxt
    <repo>/<model>/<version>/model.onnx        (or model.plan: a TensorRT engine)
    <repo>/<model>/labels.txt                  class names by id
    <repo>/<model>/CVLOOP.md                   where this came from, and how its
                                               predictions reach cvloop's inference log

The input and output names and shapes are read from the ONNX graph itself (any imgsz, any
class count; a dynamic axis is ``-1``, the input's spatial axes the model's imgsz); a graph exported with a dynamic batch axis gets ``max_batch_size`` and
``dynamic_batching``, a fixed one ``max_batch_size: 0``. The registered sha256 is checked
before the file is copied and written into the config's parameters, so the serving side
can say which registered version it runs.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from cvloop.core.errors import CvloopError

_ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32"}


@dataclass(frozen=True)
class TritonModel:
    path: Path
    config: str
    version: str


def _tensor(value_info) -> tuple[str, str, list]:
    t = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    return value_info.name, _ONNX_TYPES.get(t.elem_type, f"TYPE_UNKNOWN_{t.elem_type}"), dims


def config_pbtxt(name: str, onnx_path: Path, *, version: str, max_batch: int, max_wait_ms: float,
                 instances: int, gpu: bool, tags: dict[str, str],
                 imgsz: int | None = None) -> str:  # fmt: skip
    """The ``config.pbtxt`` of an ONNX detector."""
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    inputs = [_tensor(i) for i in g.input if i.name not in inits]
    outputs = [_tensor(o) for o in g.output]
    dynamic = bool(inputs) and inputs[0][2][0] in (-1, 0)
    if imgsz:  # an export with dynamic spatial axes: the model's own size (Triton takes -1 too)
        inputs = [(n, t, dims[:-2] + [imgsz if d == -1 else d for d in dims[-2:]])
                  for n, t, dims in inputs]  # fmt: skip

    def block(kind: str, tensors) -> str:
        rows = []
        for n, dtype, dims in tensors:
            shown = dims[1:] if dynamic else dims
            rows.append(f'  {{\n    name: "{n}"\n    data_type: {dtype}\n'
                        f"    dims: [ {', '.join(str(d) for d in shown)} ]\n  }}")  # fmt: skip
        return f"{kind} [\n" + ",\n".join(rows) + "\n]"

    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch if dynamic else 0}",
        f"version_policy: {{ specific: {{ versions: [ {version} ] }} }}",
        block("input", inputs),
        block("output", outputs),
    ]
    if dynamic:
        preferred = sorted({b for b in (max_batch // 2, max_batch) if b >= 1})
        lines.append(
            "dynamic_batching {\n"
            f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
            f"  max_queue_delay_microseconds: {int(max_wait_ms * 1000)}\n}}"
        )
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]")
    for key, value in sorted(tags.items()):
        lines.append(f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}')
    return "\n".join(lines) + "\n"


def write_repository(
    out: Path,
    name: str,
    version: str,
    onnx_path: Path,
    expected_sha256: str,
    classes: list[str],
    *,
    max_batch: int,
    max_wait_ms: float,
    instances: int = 1,
    gpu: bool = False,
    provenance: str = "",
    imgsz: int | None = None,
) -> TritonModel:
    """Write (or replace) ``out/name`` for ``version``; the ONNX checked against its sha256."""
    data = onnx_path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise CvloopError(
            f"{onnx_path} has sha256 {actual[:12]}, the registry recorded {expected_sha256[:12]}",
            fix="the artifact was altered after registration: restore it or register again",
        )
    if not version.isdigit():
        raise CvloopError(f"Triton model versions are integers, got {version!r}")
    model_dir = out / name
    tmp = out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / version).mkdir(parents=True)
    (tmp / version / "model.onnx").write_bytes(data)
    config = config_pbtxt(
        name, tmp / version / "model.onnx", version=version, max_batch=max_batch,
        max_wait_ms=max_wait_ms, instances=instances, gpu=gpu,
        tags={"cvloop.model_version": version, "cvloop.sha256.onnx": actual}, imgsz=imgsz,
    )  # fmt: skip
    (tmp / "config.pbtxt").write_text(config)
    (tmp / "labels.txt").write_text("\n".join(classes) + "\n")
    (tmp / "CVLOOP.md").write_text(_readme(name, version, classes, provenance))
    shutil.rmtree(model_dir, ignore_errors=True)
    tmp.rename(model_dir)  # the repository is never seen half-written
    return TritonModel(model_dir, config, version)


def _readme(name: str, version: str, classes: list[str], provenance: str) -> str:
    return f"""# {name} v{version} for Triton

Exported by `cvloop export triton {version}` from the model registry. {provenance}

Input: RGB, letterboxed to the model's square size with value 114, scaled to [0, 1], NCHW.
Output: `[batch, 4 + {len(classes)}, anchors]` (`cx, cy, w, h` in input pixels, then one
score per class); decode with NMS, then normalize the boxes to the original frame.
Classes (`labels.txt`): {", ".join(classes)}.

## Its predictions in cvloop's inference log

The drift monitor and the rollout canary read every served frame from the inference log.
From the Python that calls Triton, write each frame with `model_version="{version}"`:

```python
from cvloop.inference_log import Detection, FrameRecord, LogWriter, open_log_store
log = LogWriter(open_log_store(), spool_dir="/var/lib/cvloop/spool")
log.write([FrameRecord(ts, camera, frame_key, "{version}", latency_ms, detections)])
```

or post the rows to `POST /v1/ingest` of a `cvloop serve`. See runbooks/serve.md.
"""
