"""A tiny `cvloop bootstrap` end to end against the real local services, then a simulated
fleet served by the new champion, with the inference log read back."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from cvloop.adapters.datasets import read_manifest
from tests.conftest import REPO, prefect_rest


def _mlflow(stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow_uri, registry_uri=stack.mlflow_uri)


def test_champion_is_registered_with_lineage(booted):
    b = booted
    assert "champion: version 1" in b.stdout
    mv = _mlflow(b.stack).get_model_version_by_alias("cvloop-detector", "champion")
    tags = mv.tags
    assert tags["cvloop.dataset.version"] == "dataset-v1"
    assert tags["cvloop.holdout.version"] == "holdout-v1"
    at_v1 = subprocess.run(
        ["git", "show", "dataset-v1:datasets.dvc"], cwd=b.repo, capture_output=True, text=True
    ).stdout  # later tests add versions: compare with the one the tag holds
    dvc = yaml.safe_load(at_v1)["outs"][0]
    assert tags["cvloop.dataset.dvc_md5"] == dvc["md5"]
    assert len(tags["cvloop.git_commit"]) >= 40
    assert len(tags["cvloop.params_sha256"]) == 64
    assert len(tags["cvloop.sha256.pt"]) == 64 and len(tags["cvloop.sha256.onnx"]) == 64
    assert json.loads(tags["cvloop.classes"]) == ["crate", "barrel", "cone"]
    assert 0.0 <= float(tags["cvloop.holdout.map50_95"]) <= 1.0
    run = _mlflow(b.stack).get_run(mv.run_id)
    assert "holdout.map50" in run.data.metrics and "holdout_onnx.map50" in run.data.metrics
    assert any(k.startswith("train/") for k in run.data.metrics)  # per-epoch callback
    assert run.info.status == "FINISHED"
    # the baseline trained at its own rate, read back from the trainer's optimizer
    t = yaml.safe_load(Path(b.env["CVLOOP_PARAMS"]).read_text())["train"]
    assert run.data.tags["cvloop.train.optimizer_used"] == t["optimizer"] == "AdamW"
    assert run.data.metrics["train.lr0_used"] == pytest.approx(t["bootstrap_lr0"])
    assert run.data.metrics["train.epochs_planned"] == t["bootstrap_epochs"]


def test_registered_artifacts_match_their_checksums(booted, monkeypatch):
    b = booted
    from registry.models import ModelRegistry

    reg = ModelRegistry(b.stack.mlflow_uri, "cvloop-detector", b.work / "cache")
    local = reg.fetch("1")  # verifies sha256 of .pt and .onnx against the tags
    assert local.pt.exists() and local.onnx.exists()
    assert local.classes == ["crate", "barrel", "cone"] and local.imgsz == 128


def test_dataset_and_holdout_are_dvc_versions_pushed_and_disjoint(booted):
    b = booted
    tags = subprocess.run(["git", "tag"], cwd=b.repo, capture_output=True, text=True).stdout.split()
    assert {"dataset-v1", "holdout-v1"} <= set(tags)
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=b.repo, capture_output=True, text=True
    ).stdout.split()
    assert "datasets.dvc" in tracked and "holdout/data.dvc" in tracked
    assert any(b.dvc_remote.rglob("*")), "nothing was pushed to the DVC remote"
    train = [e for e in read_manifest(b.repo / "datasets") if e.added_in == "dataset-v1"]
    hold = [e for e in read_manifest(b.repo / "holdout" / "data") if e.added_in == "holdout-v1"]
    assert len(train) == 48 and len(hold) == 24
    assert not {e.sha256 for e in train} & {e.sha256 for e in hold}
    assert {e.label_source for e in train} == {"synthetic-truth"}
    status = subprocess.run(
        [str(REPO / ".venv" / "bin" / "dvc"), "status", "-c"],
        cwd=b.repo,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0 and "new:" not in status.stdout


def test_bootstrap_again_is_a_no_op(booted):
    b = booted
    again = b.stack.cli("bootstrap", env=b.env, timeout=300)
    assert "nothing to bootstrap" in again.stdout + again.stderr
    versions = _mlflow(b.stack).search_model_versions("name='cvloop-detector'")
    assert len(versions) == 1


def test_bootstrap_flow_run_and_report_are_in_prefect(booted):
    b = booted
    runs = prefect_rest(b.stack.prefect_api).post(
        "/flow_runs/filter", json={"flows": {"name": {"any_": ["bootstrap"]}}}
    )
    assert any(r["state_type"] == "COMPLETED" for r in runs)
    arts = prefect_rest(b.stack.prefect_api).post(
        "/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["bootstrap"]}}},
    )
    assert arts and "holdout mAP50-95" in arts[0]["data"]


def test_fleet_serve_writes_a_log_that_reads_back(booted):
    b = booted
    b.stack.cli(
        "fleet",
        "generate",
        "--start",
        "2026-10-05",
        "--days",
        "2",
        "--cameras",
        "2",
        "--bursts-per-day",
        "3",
        "--frames-per-burst",
        "2",
        "-s",
        "night@2026-10-06:cam-02",
        env=b.env,
    )
    out = b.stack.cli("fleet", "serve", "--start", "2026-10-05", "--days", "2", env=b.env).stdout
    assert '"frames": 24' in out and '"1": 24' in out
    manifest = json.loads((b.store / "rollout" / "manifest.json").read_text())
    assert manifest["allocations"] == [{"version": "1", "share": 100.0}]
    log = b.stack.cli("fleet", "log", "--start", "2026-10-05", "--days", "2", env=b.env).stdout
    assert "cvloop.schema: 'inference-log/v1'" in log
    assert "frames: 24" in log
    # serving the same window again replaces its parts: still 24 frames
    b.stack.cli("fleet", "serve", "--start", "2026-10-05", "--days", "2", env=b.env)
    log = b.stack.cli("fleet", "log", "--start", "2026-10-05", "--days", "2", env=b.env).stdout
    assert "frames: 24" in log
