"""Offline by construction: Ultralytics train / val / predict / ONNX export with every
non-loopback connection made to fail (the guard in conftest records any attempt)."""

from __future__ import annotations

import os
import socket

import pytest

from cvloop.config.offline import OFFLINE_SWITCHES, configure_ultralytics
from tests import conftest


def test_guard_blocks_and_records_outbound_connections():
    before = len(conftest.BLOCKED)
    with socket.socket() as s, pytest.raises(OSError, match="test guard"):
        s.connect(("192.0.2.1", 80))  # TEST-NET-1
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("github.com", 443)
    assert len(conftest.BLOCKED) == before + 2
    del conftest.BLOCKED[before:]  # the attempts above were ours, on purpose
    # loopback stays allowed
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        with socket.create_connection(srv.getsockname(), timeout=2):
            pass


def test_offline_switches_are_applied():
    for key, value in OFFLINE_SWITCHES.items():
        assert os.environ.get(key) == value, key
    assert os.environ["YOLO_CONFIG_DIR"].startswith(os.environ["CVLOOP_HOME"])


def test_ultralytics_train_val_predict_export_make_no_outbound_connection(tmp_path):
    configure_ultralytics()
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    assert SETTINGS["sync"] is False and SETTINGS["mlflow"] is False
    data = conftest.tiny_yolo_dataset(tmp_path / "ds")
    model = YOLO("yolo11n.yaml")  # architecture only: no weights are downloaded
    model.train(
        data=str(data),
        epochs=1,
        imgsz=64,
        batch=4,
        workers=0,
        device="cpu",
        project=str(tmp_path / "runs"),
        name="t",
        exist_ok=True,
        plots=True,
        verbose=False,
        amp=False,
    )
    best = tmp_path / "runs" / "t" / "weights" / "best.pt"
    assert best.exists()
    trained = YOLO(str(best))
    metrics = trained.val(
        data=str(data),
        imgsz=64,
        batch=4,
        workers=0,
        device="cpu",
        project=str(tmp_path / "runs"),
        name="v",
        plots=True,
        verbose=False,
    )
    assert 0.0 <= metrics.box.map <= 1.0
    results = trained.predict(
        str(tmp_path / "ds" / "images" / "val"), imgsz=64, device="cpu", verbose=False
    )
    assert len(results) == 12
    onnx_path = trained.export(format="onnx", imgsz=64, device="cpu")
    assert str(onnx_path).endswith(".onnx") and os.path.getsize(onnx_path) > 10_000
    onnx_results = YOLO(onnx_path, task="detect").predict(
        str(tmp_path / "ds" / "images" / "val" / "0.jpg"), imgsz=64, device="cpu", verbose=False
    )
    assert len(onnx_results) == 1
    # nothing was written relative to the working directory
    assert not (conftest.REPO / "runs").exists()
    assert not (conftest.REPO / "mlflow.db").exists()
