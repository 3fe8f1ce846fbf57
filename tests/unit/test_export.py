"""Serving benchmark of an exported ONNX model; TensorRT says why it is skipped."""

from __future__ import annotations

from cvloop.bench.common import CLASSES, untrained_onnx
from cvloop.export import benchmark_onnx, tensorrt_status


def test_onnx_benchmark_reports_percentiles_throughput_memory_size(tmp_path):
    onnx = untrained_onnx(tmp_path, 96)
    b = benchmark_onnx(onnx, list(CLASSES), 96, batch=4, warmup=2, iterations=20)
    assert b.format == "onnx" and b.device in ("cpu", "cuda")
    assert 0 < b.p50_ms <= b.p95_ms <= b.p99_ms
    assert b.throughput_fps > 0 and b.batch == 4
    assert b.file_mb > 0.1 and b.memory_mb >= 0


def test_tensorrt_status_names_the_reason_when_it_cannot_run():
    ok, reason = tensorrt_status()
    assert ok or ("CUDA" in reason or "tensorrt" in reason)
