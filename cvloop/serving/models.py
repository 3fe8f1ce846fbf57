"""A registered model version, loaded for serving only after its bytes match the registry.

The registry's download already checks the files against their registration record
(:mod:`registry.records`);
the server checks again the very bytes it hands to the runtime, so a file altered between
the check and the load is refused too. A refused version is named with the reason, and the
server keeps serving what it served before (:mod:`cvloop.serving.routing`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from dataclasses import dataclass

from cvloop.adapters.detector import OnnxDetector, OpenVinoDetector, make_detector
from cvloop.core.errors import CvloopError

RUNTIMES = ("onnxruntime", "openvino", "tensorrt")


class ModelRefused(CvloopError):
    """A model version the server will not serve (checksum, missing file, runtime)."""


@dataclass
class ServingModel:
    """One loaded version: its runtime session and what identifies it."""

    version: str
    detector: OnnxDetector | OpenVinoDetector
    sha256: str
    classes: list[str]
    imgsz: int
    runtime: str
    loaded_at: float

    def describe(self) -> dict:
        return {"version": self.version, "sha256": self.sha256[:12], "imgsz": self.imgsz,
                "runtime": self.runtime, "classes": self.classes}  # fmt: skip


def check_runtime(runtime: str) -> None:
    """Refuse a runtime this machine cannot run, with the way out."""
    if runtime == "onnxruntime":
        return
    if runtime == "openvino":
        if importlib.util.find_spec("openvino") is None:
            raise ModelRefused(
                "serve.runtime is openvino but the openvino package is not installed here",
                fix="install openvino in this environment, or set serve.runtime: onnxruntime",
            )
        import openvino as ov

        if "CPU" not in ov.Core().available_devices:
            raise ModelRefused("serve.runtime is openvino but OpenVINO sees no CPU device here",
                               fix="set serve.runtime: onnxruntime")  # fmt: skip
        return
    if runtime == "tensorrt":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ModelRefused(
                "serve.runtime is tensorrt but no CUDA device is available to this server",
                fix="run the server on a GPU host, or set serve.runtime: onnxruntime",
            )
        raise ModelRefused(
            "serve.runtime tensorrt is not served by this version of cvloop yet",
            fix="set serve.runtime: onnxruntime (CUDA is used by it where present)",
        )
    raise ModelRefused(f"unknown serve.runtime {runtime!r}", fix=f"use one of {RUNTIMES}")


def load_model(registry, version: str, *, runtime: str, threads: int) -> ServingModel:
    """Fetch ``version`` from the registry and load it, its ONNX bytes verified first."""
    check_runtime(runtime)
    try:
        local = registry.fetch(str(version))
    except CvloopError as exc:
        raise ModelRefused(f"model version {version} refused: {exc.message}", fix=exc.fix) from None
    expected = local.sha256.get("onnx")
    data = local.onnx.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if not expected or actual != expected:
        raise ModelRefused(
            f"model version {version} refused: {local.onnx.name} has sha256 {actual[:12]}, "
            f"the registry recorded {str(expected)[:12]}",
            fix="the artifact was altered after registration: restore it, or register the "
            "model again with cvloop",
        )
    try:
        det = make_detector(runtime, local.onnx, local.classes, local.imgsz, threads=threads,
                            spinning=False, model_bytes=data)  # fmt: skip
    except Exception as exc:  # the runtime refuses a malformed graph
        raise ModelRefused(f"model version {version} refused by {runtime}: {exc}"[:500]) from None
    return ServingModel(str(version), det, actual, local.classes, local.imgsz, runtime, time.time())


def file_loader(path, classes: list[str], imgsz: int):
    """A loader that serves one ONNX file as every version (benchmarks, no registry): the
    file's own sha256 is what it is checked against."""
    from pathlib import Path

    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()

    def load(_registry, version: str, *, runtime: str, threads: int) -> ServingModel:
        check_runtime(runtime)
        det = make_detector(runtime, path, list(classes), imgsz, threads=threads,
                            spinning=False, model_bytes=data)  # fmt: skip
        return ServingModel(str(version), det, digest, list(classes), imgsz, runtime, time.time())

    return load
