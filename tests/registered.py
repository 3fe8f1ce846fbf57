"""Model versions registered from files, as the candidate flow registers a model that passed
its gates (for tests that need a second version: rollout, serving)."""

from __future__ import annotations

import json
import shutil

from tests.conftest import context


def register_files(
    tmp_path, name: str, pt, onnx, classes, imgsz: int, parent: str, aliases=("challenger",)
) -> str:
    """A candidate that passed the gates, registered from its files (as the candidate flow
    would after its gates)."""
    from mlflow import MlflowClient

    from cvloop.adapters.training import EvalResult
    from cvloop.config.lineage import git_commit, params_sha256
    from cvloop.config.settings import load_settings
    from cvloop.stages.model import TrainedModel, register_model, start_training_run

    ctx = context()
    run_id = start_training_run(ctx, "cvloop", name, {"lr0": 0.001, "epochs": 1}, {})
    d = tmp_path / name
    d.mkdir()
    shutil.copy(pt, d / "best.pt")
    shutil.copy(onnx, d / "best.onnx")
    (d / "model.json").write_text(json.dumps({"classes": classes, "imgsz": imgsz}))
    MlflowClient(load_settings().mlflow_tracking_uri).log_artifacts(run_id, str(d), "model")
    trained = TrainedModel(run_id, str(d / "best.pt"), str(d / "best.onnx"), classes, imgsz,
                           1, 1.0)  # fmt: skip
    lineage = {
        "dataset_version": "dataset-v1",
        "parent_version": parent,
        "git_commit": git_commit(),
        "params_sha256": params_sha256(),
    }
    return register_model(
        ctx, run_id, trained, lineage, EvalResult(0.5, 0.7, 0.6, 0.6, {}, {}, 1, 1),
        {"cvloop.gate": "passed", "cvloop.gate.reasons": "[]"}, list(aliases), name,
    )  # fmt: skip


def register_copy_of_champion(tmp_path, name: str, aliases=("challenger",)) -> str:
    """A challenger identical to the champion: its own files, registered anew."""

    champ = context().registry.fetch_alias("champion")
    return register_files(tmp_path, name, champ.pt, champ.onnx, champ.classes, champ.imgsz,
                          champ.version, aliases)  # fmt: skip


def slower_onnx(src, dst, imgsz: int, pairs: int = 3) -> None:
    """The same detector made genuinely slower: a branch of ``pairs`` x 2 large MatMuls on
    the input whose result is multiplied by 0 and added to the output, so the detections
    are bit for bit the champion's and only the cost per frame grows (x3-4 on CPU)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    out = g.output[0].name
    for n in g.node:
        n.output[:] = [f"{o}_fast" if o == out else o for o in n.output]
    w = 2048
    g.initializer.extend([
        numpy_helper.from_array(np.full((imgsz, w), 1.0 / imgsz, np.float32), "slow_a"),
        numpy_helper.from_array(np.full((w, imgsz), 1.0 / w, np.float32), "slow_b"),
        numpy_helper.from_array(np.array([-1, imgsz], np.int64), "slow_shape"),
        numpy_helper.from_array(np.zeros((), np.float32), "slow_zero"),
    ])  # fmt: skip
    x = "slow_x0"
    nodes = [helper.make_node("Reshape", [g.input[0].name, "slow_shape"], [x])]
    for i in range(pairs):
        nodes += [helper.make_node("MatMul", [x, "slow_a"], [f"slow_h{i}"]),
                  helper.make_node("MatMul", [f"slow_h{i}", "slow_b"], [f"slow_x{i + 1}"])]  # fmt: skip
        x = f"slow_x{i + 1}"
    nodes += [helper.make_node("ReduceSum", [x], ["slow_sum"], keepdims=0),
              helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nil"]),
              helper.make_node("Add", [f"{out}_fast", "slow_nil"], [out])]  # fmt: skip
    g.node.extend(nodes)
    onnx.save(m, str(dst))


def register_slower_copy_of_champion(tmp_path, name: str) -> str:
    """A challenger with the champion's detections at x3-4 its cost per frame."""
    champ = context().registry.fetch_alias("champion")
    slow = tmp_path / f"{name}.onnx"
    slower_onnx(champ.onnx, slow, champ.imgsz)
    return register_files(tmp_path, name, champ.pt, slow, champ.classes, champ.imgsz, champ.version)
