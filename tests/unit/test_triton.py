"""The Triton model repository: config read from the graph, checksum before copy, never
half-written."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cvloop.adapters.triton import write_repository
from cvloop.core.errors import CvloopError


def _onnx(path, batch="batch", size=96, nc=2):
    """A graph with a YOLO head's shapes: images [B,3,S,S] -> [B,4+nc,A]."""
    anchors = (size // 8) ** 2
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 4 + nc, anchors])
    shape = numpy_helper.from_array(np.array([0, 4 + nc, -1], np.int64), "shape")
    pool = helper.make_node("AveragePool", ["images"], ["p"], kernel_shape=[8, 8], strides=[8, 8])
    conv_w = numpy_helper.from_array(np.ones((4 + nc, 3, 1, 1), np.float32), "w")
    conv = helper.make_node("Conv", ["p", "w"], ["c"])
    reshape = helper.make_node("Reshape", ["c", "shape"], ["output0"])
    g = helper.make_graph([pool, conv, reshape], "head", [x], [y], [shape, conv_w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(m, str(path))
    return path


def test_the_config_comes_from_the_graph(tmp_path):
    src = _onnx(tmp_path / "best.onnx")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    m = write_repository(tmp_path / "repo", "det", "7", src, sha, ["forklift", "pallet"],
                         max_batch=8, max_wait_ms=4)  # fmt: skip
    cfg = m.config
    assert 'platform: "onnxruntime_onnx"' in cfg and "max_batch_size: 8" in cfg
    assert 'name: "images"' in cfg and "dims: [ 3, 96, 96 ]" in cfg
    assert 'name: "output0"' in cfg and "dims: [ 6, 144 ]" in cfg
    assert "max_queue_delay_microseconds: 4000" in cfg and "preferred_batch_size: [ 4, 8 ]" in cfg
    assert f'string_value: "{sha}"' in cfg and "versions: [ 7 ]" in cfg
    assert (tmp_path / "repo/det/7/model.onnx").read_bytes() == src.read_bytes()
    assert (tmp_path / "repo/det/labels.txt").read_text().split() == ["forklift", "pallet"]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "repo/det/7/model.onnx"))
    out = sess.run(None, {"images": np.zeros((2, 3, 96, 96), np.float32)})[0]
    assert out.shape == (2, 6, 144)  # what the config declares, batch first


def test_a_fixed_batch_graph_gets_no_batching(tmp_path):
    src = _onnx(tmp_path / "fixed.onnx", batch=1)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    cfg = write_repository(tmp_path / "r", "det", "3", src, sha, ["a", "b"], max_batch=8,
                           max_wait_ms=4).config  # fmt: skip
    assert "max_batch_size: 0" in cfg and "dynamic_batching" not in cfg
    assert "dims: [ 1, 3, 96, 96 ]" in cfg


def test_a_tampered_file_is_refused_and_the_old_repository_stays(tmp_path):
    src = _onnx(tmp_path / "best.onnx")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    write_repository(tmp_path / "repo", "det", "7", src, sha, ["a", "b"], max_batch=4,
                     max_wait_ms=2)  # fmt: skip
    src.write_bytes(src.read_bytes() + b"\0")
    with pytest.raises(CvloopError, match="the registry recorded"):
        write_repository(tmp_path / "repo", "det", "8", src, sha, ["a", "b"], max_batch=4,
                         max_wait_ms=2)  # fmt: skip
    assert (tmp_path / "repo/det/7/model.onnx").exists()
    assert not (tmp_path / "repo/det/8").exists()
