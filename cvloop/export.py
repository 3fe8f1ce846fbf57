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


def benchmark_onnx(
    path: Path,
    classes: list[str],
    imgsz: int,
    *,
    batch: int,
    warmup: int,
    iterations: int,
    frames: list[np.ndarray] | None = None,
) -> ServingBenchmark:
    """Latency (batch 1, end to end: letterbox + inference + NMS) and throughput (``batch``)."""
    from cvloop.detector import OnnxDetector

    before = _rss_mb()
    det = OnnxDetector(path, classes, imgsz)
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
    provider = det.session.get_providers()[0]
    return ServingBenchmark(
        "onnx",
        "cuda" if provider.startswith("CUDA") else "cpu",
        round(Path(path).stat().st_size / 2**20, 2),
        round(float(p50), 3),
        round(float(p95), 3),
        round(float(p99), 3),
        batch,
        round(throughput, 1),
        round(max(0.0, _rss_mb() - before), 1),
    )


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
