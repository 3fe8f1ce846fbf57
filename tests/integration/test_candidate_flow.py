"""The model half on its own (`cvloop candidate`) and the registration transaction, against
the real local MLflow and Prefect of the session stack."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import context


def _mlflow(stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow_uri, registry_uri=stack.mlflow_uri)


def test_candidate_on_an_existing_version_is_registered_with_its_verdict(booted):
    b = booted
    client = _mlflow(b.stack)
    before = client.get_registered_model("cvloop-detector").aliases
    proc = b.stack.cli("candidate", "--epochs", "1", env=b.env, check=False, timeout=900)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "{" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-6000:]
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert (proc.returncode == 0) == (out["gate"] == "passed")
    mv = client.get_model_version("cvloop-detector", out["candidate_version"])
    tags = mv.tags
    assert tags["cvloop.registration"] == "complete"
    assert tags["cvloop.parent_version"] == before["champion"]
    assert tags["cvloop.dataset.version"] == out["dataset_version"]
    assert tags["cvloop.gate"] == out["gate"]
    assert json.loads(tags["cvloop.exports"])["onnx"] == "ok"
    assert json.loads(tags["cvloop.bench.onnx"])["p99_ms"] > 0
    # the OpenVINO FP32 IR of the same ONNX: scored, benchmarked, its files' digest recorded
    assert json.loads(tags["cvloop.exports"])["openvino_fp32"] == "ok"
    assert json.loads(tags["cvloop.bench.openvino_fp32"])["p50_ms"] > 0
    assert len(tags["cvloop.sha256.openvino_fp32"]) == 64
    aliases = client.get_registered_model("cvloop-detector").aliases
    assert aliases["champion"] == before["champion"]  # only the rollout moves the champion
    if out["gate"] == "passed":
        assert aliases["challenger"] == out["candidate_version"]
        client.delete_registered_model_alias("cvloop-detector", "challenger")
    else:
        assert aliases.get("challenger") == before.get("challenger")
        assert out["gate_reasons"] == json.loads(tags["cvloop.gate.reasons"])
    # the comparison (both models, same frames, calibration, gates, benchmarks) is in MLflow
    md = Path(client.download_artifacts(mv.run_id, "gate/comparison.md")).read_text()
    import re

    assert re.search(r"\| holdout \| \d+ \|", md) and "ECE" in md  # the holdout's frames
    assert "| export_parity:onnx |" in md and "| clean_map |" in md and "| calibration |" in md
    run = client.get_run(mv.run_id)
    assert "champion.holdout.map50_95" in run.data.metrics
    # the fine-tune ran at the runbook's lr0 (read back from the trainer's optimizer)
    assert run.data.metrics["train.lr0_used"] == pytest.approx(0.001)
    assert run.data.tags["cvloop.train.optimizer_used"] == "AdamW"
    assert run.data.metrics["train.epochs_run"] == run.data.metrics["train.epochs_planned"] == 1
    assert "challenger_onnx.holdout.map50_95" in run.data.metrics
    ov, onnx = (
        run.data.metrics[f"challenger_{f}.holdout.map50_95"] for f in ("openvino_fp32", "onnx")
    )
    assert abs(ov - onnx) < 0.005, (ov, onnx)  # the same graph on another runtime
    assert "| export_parity:openvino_fp32 |" in md
    arts = [a.path for a in client.list_artifacts(mv.run_id, "model")]
    assert "model/best_openvino_model" in arts, arts
    assert run.data.tags["cvloop.dataset.version"] == out["dataset_version"]


def test_an_unknown_dataset_version_names_the_versions_there(booted, stack_client_env):
    from cvloop.adapters.versioning import VersioningError
    from cvloop.stages.candidate import training_data

    with pytest.raises(VersioningError, match=r"dataset-v99.*not found") as err:
        training_data(context(), None, "dataset-v99")
    assert "dataset-v1" in str(err.value)


def test_registration_is_one_transaction(booted, stack_client_env, monkeypatch, tmp_path):
    """A failure after the version exists deletes it and puts the alias back; the re-run
    registers it whole."""
    from cvloop.stages.model import TrainedModel, register_model, start_training_run
    from registry.models import ModelRegistry
    from registry.names import REGISTRATION

    client = _mlflow(stack_client_env)
    reg = context().registry
    champion = reg.fetch_alias("champion")
    client.set_registered_model_alias("cvloop-detector", "challenger", champion.version)
    run_id = start_training_run(context(), "cvloop", "transaction-test", {}, {})
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for f in ("best.pt", "best.onnx", "model.json"):
        shutil.copy(champion.pt.parent / f, model_dir / f)
    client.log_artifacts(run_id, str(model_dir), "model")
    trained = TrainedModel(
        run_id, str(model_dir / "best.pt"), str(model_dir / "best.onnx"), champion.classes,
        champion.imgsz, 1, 1.0,
    )  # fmt: skip
    from cvloop.adapters.training import EvalResult

    holdout = EvalResult(0.5, 0.7, 0.6, 0.6, {}, {}, 10, 10)
    args = (context(), run_id, trained, {"dataset_version": "dataset-v1"}, holdout, {})

    real = ModelRegistry.set_tags

    def crash_on_complete(self, version, tags):
        if tags.get(REGISTRATION) == "complete":
            raise RuntimeError("MLflow went away")
        return real(self, version, tags)

    monkeypatch.setattr(ModelRegistry, "set_tags", crash_on_complete)
    with pytest.raises(RuntimeError, match="went away"):
        register_model(*args, ["challenger"], "test")
    found = client.search_model_versions(f"name='cvloop-detector' and run_id='{run_id}'")
    assert found == []  # no half-registered version ...
    aliases = client.get_registered_model("cvloop-detector").aliases
    assert aliases["challenger"] == champion.version  # ... and the alias is back where it was
    monkeypatch.setattr(ModelRegistry, "set_tags", real)
    version = register_model(*args, ["challenger"], "test")
    mv = client.get_model_version("cvloop-detector", version)
    assert mv.tags[REGISTRATION] == "complete" and mv.tags["cvloop.training_run"] == run_id
    assert client.get_registered_model("cvloop-detector").aliases["challenger"] == version
    assert register_model(*args, ["challenger"], "test") == version  # idempotent re-run
    client.delete_registered_model_alias("cvloop-detector", "challenger")
    client.delete_model_version("cvloop-detector", version)
