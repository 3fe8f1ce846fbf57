"""Exported models and what they cost to serve (runbook step 7: export + benchmark).

:func:`benchmark_onnx` measures an ONNX model the way the serving fleet runs it (ONNX
Runtime, letterboxed frames): latency percentiles at batch 1, throughput at a batch, the
process memory the session adds, and the file size. :func:`tensorrt_status` says whether a
TensorRT engine can be built here, and if not, why (the gate report records the reason).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ServingBenchmark:
    format: str
    device: str
    file_mb: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    batch: int
    throughput_fps: float
    memory_mb: float  # resident memory the loaded model adds (session + arena)

    def as_dict(self) -> dict:
        return asdict(self)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return _rss_mb()


def benchmark_onnx_isolated(path: Path, classes: list[str], imgsz: int, **kw) -> ServingBenchmark:
    """:func:`benchmark_onnx` in a fresh process, so that ``memory_mb`` is the peak memory
    the model adds to a serving process (session, arena, buffers) and nothing that this
    process loaded before counts (the retrain has trained and evaluated by then)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_benchmark_fresh, str(path), list(classes), imgsz, kw).result()


def _benchmark_fresh(path: str, classes: list[str], imgsz: int, kw: dict) -> ServingBenchmark:
    import onnxruntime  # noqa: F401  (the runtime itself is not the model's cost)

    from cvloop.adapters import detector  # noqa: F401

    if kw.get("runtime") == "openvino":
        import openvino  # noqa: F401

    return benchmark_onnx(Path(path), classes, imgsz, peak=True, **kw)


def benchmark_onnx(
    path: Path,
    classes: list[str],
    imgsz: int,
    *,
    batch: int,
    warmup: int,
    iterations: int,
    frames: list[np.ndarray] | None = None,
    peak: bool = False,
    runtime: str = "onnxruntime",
    threads: int | None = None,
) -> ServingBenchmark:
    """Latency (batch 1, end to end: letterbox + inference + NMS) and throughput (``batch``).

    ``memory_mb``: resident memory the model added (``peak``: the process's peak above what
    it held before loading it; meaningful in a fresh process, see
    :func:`benchmark_onnx_isolated`). ``runtime``: ``onnxruntime`` or ``openvino`` (the same
    ONNX graph compiled by OpenVINO, FP32; its format is then ``openvino_fp32``)."""
    from cvloop.adapters.detector import make_detector

    before = _rss_mb()
    det = make_detector(runtime, path, classes, imgsz, threads=threads)
    rng = np.random.default_rng(0)
    if not frames:
        frames = [rng.integers(0, 255, (imgsz, imgsz, 3), dtype=np.uint8) for _ in range(8)]
    for i in range(warmup):
        det.predict([frames[i % len(frames)]])
    lat = []
    for i in range(iterations):
        t = time.perf_counter()
        det.predict([frames[i % len(frames)]])
        lat.append((time.perf_counter() - t) * 1000)
    batch_frames = [frames[i % len(frames)] for i in range(batch)]
    det.predict(batch_frames)
    rounds = max(1, iterations // batch)
    t = time.perf_counter()
    for _ in range(rounds):
        det.predict(batch_frames)
    throughput = rounds * batch / (time.perf_counter() - t)
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    provider = det.session.get_providers()[0] if runtime == "onnxruntime" else "CPU"
    return ServingBenchmark(
        "onnx" if runtime == "onnxruntime" else "openvino_fp32",
        "cuda" if provider.startswith("CUDA") else "cpu",
        round(Path(path).stat().st_size / 2**20, 2),
        round(float(p50), 3),
        round(float(p95), 3),
        round(float(p99), 3),
        batch,
        round(throughput, 1),
        round(max(0.0, (_hwm_mb() if peak else _rss_mb()) - before), 1),
    )


def openvino_status() -> tuple[bool, str]:
    """(can export to and run OpenVINO here, why not)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return False, "the openvino package is not installed in this environment"
    import openvino as ov

    if "CPU" not in ov.Core().available_devices:
        return False, "OpenVINO sees no CPU device on this machine"
    return True, ""


def export_openvino(
    onnx_path: Path, imgsz: int, classes: list[str] | None = None, out_dir: Path | None = None
) -> Path:
    """An OpenVINO IR (FP32) of the ONNX export, in Ultralytics' layout
    (``<stem>_openvino_model/<stem>.xml`` + ``.bin`` + ``metadata.yaml``, the ONNX's own
    Ultralytics metadata, ``names`` from ``classes``) so that Ultralytics' validator scores the
    engine itself.

    Converted from the ONNX rather than from the .pt: the graph the server compiles with
    OpenVINO (:class:`cvloop.adapters.detector.OpenVinoDetector`) is the one scored here.
    The axes stay as the ONNX has them, so the validator runs the engine at the shapes it
    runs the ONNX (the server fixes the spatial axes at ``imgsz`` when it compiles).
    Idempotent: an existing directory is replaced as a whole.
    """
    import shutil

    import onnx
    import openvino as ov
    import yaml

    out_dir = out_dir or onnx_path.with_name(f"{onnx_path.stem}_openvino_model")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # the runtime's ONNX reader, not ov.convert_model: the converter sends usage telemetry
    # unless opted out, and cvloop never calls home. Same graph, the ONNX's own axes.
    model = ov.Core().read_model(str(onnx_path))
    ov.save_model(model, str(tmp / f"{onnx_path.stem}.xml"), compress_to_fp16=False)
    meta = {
        p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props
    }
    meta.setdefault("imgsz", str([imgsz, imgsz]))
    if classes:  # the model's class schema is cvloop's record, not what the graph was told
        meta["names"] = str(dict(enumerate(classes)))
    (tmp / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def tensorrt_status() -> tuple[bool, str]:
    """(can build a TensorRT engine here, why not)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is in the lock
        return False, "PyTorch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA device (torch.cuda.is_available() is False): TensorRT skipped"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "the tensorrt package is not installed (pip install tensorrt on a CUDA host)"
    return True, ""


def export_tensorrt(
    weights: Path,
    imgsz: int,
    dest: Path,
    *,
    int8: bool = False,
    calibration_yaml: Path | None = None,
    calibration_frames: int = 300,
    batch: int = 8,
) -> Path:
    """A TensorRT engine (FP16; INT8 calibrated on ``calibration_yaml``'s train split) with a
    dynamic batch up to ``batch``, built by Ultralytics on CUDA device 0. CUDA only."""
    ok, why = tensorrt_status()
    if not ok:
        raise RuntimeError(why)
    from cvloop.config.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    kwargs: dict = dict(format="engine", imgsz=imgsz, device=0, dynamic=True, batch=batch)
    if int8:
        if calibration_yaml is None:
            raise ValueError("INT8 needs calibration frames: pass the dataset's data.yaml")
        calib = calibration_set(calibration_yaml, calibration_frames, dest.parent / "int8-calib")
        kwargs.update(int8=True, data=str(calib), fraction=1.0)
    else:
        kwargs.update(half=True)
    out = Path(YOLO(str(weights)).export(**kwargs))
    dest.parent.mkdir(parents=True, exist_ok=True)
    out.replace(dest)
    return dest


def calibration_set(data_yaml: Path, frames: int, out_dir: Path) -> Path:
    """A YOLO set of ``frames`` images of the dataset's train split (every k-th, so all
    cameras and days are in it) for INT8 calibration; hard links, a data.yaml."""
    import os
    import shutil

    import yaml

    from cvloop.adapters.datasets import write_data_yaml

    spec = yaml.safe_load(Path(data_yaml).read_text())
    train = Path(data_yaml).parent / str(spec["train"])
    images = sorted(p for p in train.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise ValueError(f"no calibration frames in {train} (data.yaml {data_yaml})")
    step = max(1, len(images) // max(1, frames))
    shutil.rmtree(out_dir, ignore_errors=True)
    for split in ("train", "val"):
        (out_dir / "images" / split).mkdir(parents=True)
    for img in images[::step][:frames]:
        for split in ("train", "val"):
            dst = out_dir / "images" / split / img.name
            try:
                os.link(img, dst)
            except OSError:
                shutil.copy2(img, dst)
    names = spec["names"]
    classes = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    return write_data_yaml(out_dir, classes, ["train", "val"])


def benchmark_engine(
    path: Path, imgsz: int, *, batch: int, warmup: int, iterations: int, fmt: str
) -> ServingBenchmark:
    """Latency (batch 1) and throughput (``batch``) of a model on CUDA device 0 through
    Ultralytics' backend (``.engine`` or ``.pt``, the PyTorch FP32 baseline): the network
    alone on a device tensor, synchronized, so that formats compare like for like. Memory
    is the device memory the loaded model takes."""
    import torch

    from cvloop.config.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics.nn.autobackend import AutoBackend

    dev = torch.device("cuda:0")
    torch.cuda.synchronize()
    free_before = torch.cuda.mem_get_info(dev)[0]
    model = AutoBackend(str(path), device=dev, fp16=False)
    model.eval()
    half = getattr(model, "fp16", False)
    dtype = torch.float16 if half else torch.float32

    def run(n: int) -> float:
        x = torch.rand(n, 3, imgsz, imgsz, device=dev, dtype=dtype)
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            model(x)
        torch.cuda.synchronize()
        return (time.perf_counter() - t) * 1000.0

    for _ in range(warmup):
        run(1)
        run(batch)
    lat = np.array([run(1) for _ in range(iterations)])
    tput = np.array([run(batch) for _ in range(max(5, iterations // 4))])
    used = (free_before - torch.cuda.mem_get_info(dev)[0]) / 2**20
    return ServingBenchmark(
        fmt,
        torch.cuda.get_device_name(dev),
        round(Path(path).stat().st_size / 2**20, 2),
        round(float(np.percentile(lat, 50)), 3),
        round(float(np.percentile(lat, 95)), 3),
        round(float(np.percentile(lat, 99)), 3),
        batch,
        round(batch / (float(np.median(tput)) / 1000.0), 1),
        round(max(0.0, used), 1),
    )
