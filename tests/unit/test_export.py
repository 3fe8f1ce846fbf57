"""Serving benchmark of an exported ONNX model; TensorRT says why it is skipped."""

from __future__ import annotations

from cvloop.adapters.export import benchmark_onnx, benchmark_onnx_isolated, tensorrt_status
from cvloop.app.bench.common import CLASSES, untrained_onnx


def test_onnx_benchmark_reports_percentiles_throughput_memory_size(tmp_path):
    onnx = untrained_onnx(tmp_path, 96)
    b = benchmark_onnx(onnx, list(CLASSES), 96, batch=4, warmup=2, iterations=20)
    assert b.format == "onnx" and b.device in ("cpu", "cuda")
    assert 0 < b.p50_ms <= b.p95_ms <= b.p99_ms
    assert b.throughput_fps > 0 and b.batch == 4
    assert b.file_mb > 0.1 and b.memory_mb >= 0


def test_isolated_benchmark_reports_the_peak_memory_the_model_adds(tmp_path):
    onnx = untrained_onnx(tmp_path, 96)
    b = benchmark_onnx_isolated(onnx, list(CLASSES), 96, batch=4, warmup=2, iterations=10)
    # a fresh process: the session, its arena and the batch buffers, not this test's imports
    assert 1.0 < b.memory_mb < 500.0 and b.p50_ms > 0 and b.batch == 4


def test_tensorrt_status_names_the_reason_when_it_cannot_run():
    ok, reason = tensorrt_status()
    assert ok or ("CUDA" in reason or "tensorrt" in reason)


def test_int8_calibration_set_spreads_over_the_train_split(tmp_path):
    import yaml

    from cvloop.adapters.datasets import write_data_yaml
    from cvloop.adapters.export import calibration_set

    root = tmp_path / "ds"
    (root / "images" / "train").mkdir(parents=True)
    for i in range(10):
        (root / "images" / "train" / f"f{i:02d}.jpg").write_bytes(b"x")
    data = write_data_yaml(root, list(CLASSES))
    calib = calibration_set(data, 3, tmp_path / "calib")
    picked = sorted(p.name for p in (calib.parent / "images" / "train").iterdir())
    assert picked == ["f00.jpg", "f03.jpg", "f06.jpg"]  # every 3rd frame, not the first 3
    spec = yaml.safe_load(calib.read_text())
    assert spec["names"] == dict(enumerate(CLASSES)) and spec["train"] == "images/train"
