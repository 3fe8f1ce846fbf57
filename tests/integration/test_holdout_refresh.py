"""The quarterly holdout refresh against the real stack, as it runs each quarter: a sample
of the quarter's frames (none from any training version) waits in Label Studio; reviewers
label every frame (simulated through the API); `cvloop review watch` resumes the run; the
frames become the next holdout version (the previous one stays tagged), and the champion's
scores on the previous and the new holdout are both in MLflow, the new one as the
monitor's reference."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cvloop.adapters.datasets import read_manifest
from tests.conftest import REPO, prefect_rest

FRAMES = 14


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def refresh(booted, tmp_path_factory):
    """A private clone of the data repo (the shared one keeps its holdout), the refresh flow
    run in-process (it pauses for the labeling), then reviewed and resumed."""
    b = booted
    work = tmp_path_factory.mktemp("holdout-refresh")
    repo = work / "data-repo"
    subprocess.run(["git", "clone", "-q", str(b.repo), str(repo)], check=True)
    from cvloop.adapters.versioning import DataRepo

    data = DataRepo(repo, str(b.dvc_remote))
    data.ensure()
    data.checkout(["datasets.dvc", "holdout/data.dvc"])
    params = yaml.safe_load(Path(b.env["CVLOOP_PARAMS"]).read_text())
    params["review"]["poll_seconds"] = 2
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **b.env,
        "CVLOOP_DATA_REPO": str(repo),
        "CVLOOP_PARAMS": str(work / "params.yaml"),
        "PREFECT_API_URL": b.stack.prefect_api,
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    b.stack.cli(
        "fleet", "generate", "--start", "2026-07-01", "--days", "3", "--cameras", "2",
        "--bursts-per-day", "4", "--frames-per-burst", "2", env=b.env,
    )  # fmt: skip
    previous = (repo / "holdout" / "data" / "VERSION").read_text().strip()
    # a training frame that shows up again in production: it must not join the holdout
    import datetime as dt

    trained = sorted((repo / "datasets" / "images" / "train").glob("*.jpg"))[0]
    ts = int(dt.datetime(2026, 7, 2, 13, tzinfo=dt.UTC).timestamp() * 1000)
    again = b.store / "frames" / "cam-01" / "2026-07-02" / f"{ts}.jpg"
    again.write_bytes(trained.read_bytes())
    code = (
        "import json; from flows.holdout_refresh import holdout_refresh; "
        f"print('RESULT ' + json.dumps(holdout_refresh(window_end='2026-07-04', days=90, "
        f"frames={FRAMES}), default=str))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    api = b.stack.prefect_api
    try:
        paused = None
        deadline = time.time() + 600
        while time.time() < deadline and paused is None:
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(
                    f"the refresh exited ({proc.returncode}):\n{out}\n{err[-4000:]}"
                )
            runs = prefect_rest(api).post("/flow_runs/filter", json={
                "flows": {"name": {"any_": ["holdout-refresh"]}},
                "flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}})  # fmt: skip
            paused = runs[0] if runs else None
            time.sleep(2)
        assert paused, "the refresh never paused for labeling"
        queue = json.loads((b.store / "runs" / "holdout-refresh" / paused["id"] /
                            "review-queue.json").read_text())  # fmt: skip
        sim = b.stack.cli("review", "simulate", queue["dataset_version"], env=env).stdout
        watch = b.stack.cli("review", "watch", env=env).stdout
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{out}\n{err[-4000:]}"
        result = json.loads(out[out.index("RESULT ") + 7 :].splitlines()[0])
        yield b, env, repo, previous, queue, sim, watch, result
    finally:
        if proc.poll() is None:
            proc.kill()
        again.unlink(missing_ok=True)
        from mlflow import MlflowClient

        client = MlflowClient(b.stack.mlflow_uri)  # the shared champion: as it was
        champion = client.get_model_version_by_alias("cvloop-detector", "champion")
        for key in list(champion.tags):
            if key.startswith("cvloop.holdout.reference."):
                client.delete_model_version_tag("cvloop-detector", champion.version, key)


def test_the_sample_waits_in_label_studio_until_every_frame_is_labeled(refresh):
    _b, _env, _repo, previous, queue, sim, watch, result = refresh
    n = int(previous.rsplit("-v", 1)[1])
    assert queue["dataset_version"] == f"holdout-v{n + 1}"
    assert queue["title"] == f"cvloop-detector holdout-v{n + 1}"
    assert queue["tasks"] == FRAMES
    assert '"submitted": 0' not in sim
    assert "resumed: all" in watch and queue["dataset_version"] in watch
    sample = result["sample"]
    assert sample["already_labeled"] == 1  # the training frame seen again was left out
    assert sample["selected"] == FRAMES and sample["cameras"] == ["cam-01", "cam-02"]
    assert all(s.startswith(("cam-01 ", "cam-02 ")) for s in sample["strata"])
    assert len(sample["strata"]) >= 4  # two cameras x several parts of the day


def test_the_labeled_frames_are_the_next_holdout_version_and_none_was_trained_on(refresh):
    _b, _env, repo, previous, queue, _sim, _watch, result = refresh
    new = result["holdout_version"]
    assert new == queue["dataset_version"] and result["previous_version"] == previous
    tags = _git(repo, "tag", "-l", "holdout-v*").split()
    assert previous in tags and new in tags  # the previous version stays
    assert _git(repo, "show", f"{previous}:holdout/data.dvc") != _git(
        repo, "show", f"{new}:holdout/data.dvc"
    )
    assert "quarterly refresh" in _git(repo, "tag", "-l", "--format=%(contents:subject)", new)
    entries = read_manifest(repo / "holdout" / "data")
    assert len(entries) == result["frames"] >= 10
    assert {e.added_in for e in entries} == {new}
    assert all(e.split == "holdout" for e in entries)
    trained = {e.sha256 for e in read_manifest(repo / "datasets")}
    assert not trained & {e.sha256 for e in entries}
    # the holdout refresh is in the data repo the worker and the monitor read
    assert (repo / "holdout" / "data" / "VERSION").read_text().strip() == new


def test_the_champion_is_scored_on_both_holdouts_in_mlflow(refresh):
    b, env, _repo, previous, _queue, _sim, _watch, result = refresh
    from mlflow import MlflowClient

    client = MlflowClient(b.stack.mlflow_uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.tags["cvloop.holdout.version"] == result["holdout_version"]
    assert run.data.tags["cvloop.holdout.previous"] == previous
    m = run.data.metrics
    assert m["previous.map50_95"] == pytest.approx(result["champion_map50_95_previous"])
    assert m["new.map50_95"] == pytest.approx(result["champion_map50_95_new"])
    assert 0 <= m["new.map50_95"] <= 1 and m["frames"] == result["frames"]
    champion = client.get_model_version_by_alias("cvloop-detector", "champion")
    assert champion.tags["cvloop.holdout.reference.version"] == result["holdout_version"]
    ref = float(champion.tags["cvloop.holdout.reference.map50_95"])
    assert ref == pytest.approx(result["champion_map50_95_new"], abs=1e-6)
    shown = b.stack.cli("holdout", "show", "--json", env=env).stdout
    rows = json.loads(shown[shown.index("[") :])
    assert [r["version"] for r in rows if r["current"]] == [result["holdout_version"]]
    assert previous in [r["version"] for r in rows]
