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


def test_openvino_serves_the_same_detections_as_onnx_runtime(tmp_path):
    """The same ONNX compiled by OpenVINO (FP32, spatial axes fixed at imgsz, batch dynamic):
    the head agrees with ORT's, frames of any size come back as the same boxes, a batch and
    frames one by one give the same answer, and threads can share one compiled model."""
    import concurrent.futures as cf

    import numpy as np

    from cvloop.adapters.detector import OnnxDetector, OpenVinoDetector, make_detector

    onnx = untrained_onnx(tmp_path, 96)
    ort_det = OnnxDetector(onnx, list(CLASSES), 96)
    ov_det = make_detector("openvino", onnx, list(CLASSES), 96, threads=2,
                           model_bytes=onnx.read_bytes())  # fmt: skip
    assert isinstance(ov_det, OpenVinoDetector) and ov_det.dynamic_batch
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
              for h, w in ((96, 96), (120, 200), (300, 90))]  # fmt: skip
    x, _ = ort_det.preprocess(frames)
    a, b = ort_det.forward(x), ov_det.forward(x)
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-3
    for da, db in zip(ort_det.predict(frames, conf=0.01), ov_det.predict(frames, conf=0.01),
                      strict=True):  # fmt: skip
        assert len(da) == len(db)
        assert np.allclose(da.xyxy, db.xyxy, atol=1e-3) and (da.classes == db.classes).all()
    one_by_one = [ov_det.forward(x[i : i + 1]) for i in range(len(frames))]
    assert np.abs(np.concatenate(one_by_one) - b).max() < 1e-4
    with cf.ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _i: ov_det.forward(x), range(8)))
    assert all(np.abs(o - b).max() < 1e-4 for o in outs)


def test_openvino_refuses_a_model_of_other_classes_and_a_missing_file(tmp_path):
    import pytest

    from cvloop.adapters.detector import OpenVinoDetector
    from cvloop.core.errors import CvloopError

    onnx = untrained_onnx(tmp_path, 96)
    with pytest.raises(CvloopError, match="predicts 3 classes but 2 names"):
        OpenVinoDetector(onnx, ["a", "b"], 96)
    with pytest.raises(CvloopError, match="not found"):
        OpenVinoDetector(tmp_path / "nope.onnx", list(CLASSES), 96)


def test_openvino_export_is_an_ir_ultralytics_reads_and_benchmarks_beside_ort(tmp_path):
    """The IR in Ultralytics' layout (xml + bin + metadata.yaml with the ONNX's names and
    imgsz), replaced whole when exported again; its benchmark is OpenVINO's."""
    import yaml

    from cvloop.adapters.export import export_openvino, openvino_status

    assert openvino_status() == (True, "")
    onnx = untrained_onnx(tmp_path, 96)
    ir = export_openvino(onnx, 96, list(CLASSES))
    assert ir.name == f"{onnx.stem}_openvino_model"
    assert {p.name for p in ir.iterdir()} == {f"{onnx.stem}.bin", f"{onnx.stem}.xml",
                                              "metadata.yaml"}  # fmt: skip
    meta = yaml.safe_load((ir / "metadata.yaml").read_text())
    assert meta["task"] == "detect" and "crate" in meta["names"]
    (ir / "stale.txt").write_text("from an older export")
    assert export_openvino(onnx, 96, list(CLASSES)) == ir and not (ir / "stale.txt").exists()
    from cvloop.config.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics.nn.autobackend import AutoBackend

    backend = AutoBackend(str(ir), device="cpu")
    assert list(backend.names.values()) == list(CLASSES)
    b = benchmark_onnx(onnx, list(CLASSES), 96, batch=4, warmup=2, iterations=10,
                       runtime="openvino")  # fmt: skip
    assert b.format == "openvino_fp32" and 0 < b.p50_ms <= b.p99_ms and b.throughput_fps > 0


def test_the_server_loads_a_version_on_openvino_from_its_verified_bytes(tmp_path):
    from cvloop.adapters.detector import OpenVinoDetector
    from cvloop.serving.models import check_runtime, file_loader

    onnx = untrained_onnx(tmp_path, 96)
    check_runtime("openvino")  # installed and a CPU device: no refusal
    model = file_loader(onnx, list(CLASSES), 96)(None, "7", runtime="openvino", threads=1)
    assert isinstance(model.detector, OpenVinoDetector)
    assert model.describe()["runtime"] == "openvino" and model.version == "7"
