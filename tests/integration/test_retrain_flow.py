"""The retrain flow's data half against the real stack, as a user runs it: `cvloop retrain`
collects a drifted window, prefilters it with the registered champion, pre-annotates into
Label Studio and waits; reviewers submit through the Label Studio API (two planted bad
boxes among them); `cvloop review watch` resumes the run; the valid reviews become dataset
v2 (DVC tag, manifest with provenance) and holdout v2, the bad frames land in quarantine."""

from __future__ import annotations

import io
import json
import subprocess
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

from cvloop.adapters.parquet import read_parquet
from cvloop.adapters.storage import LocalStorage
from tests.conftest import CVLOOP, REPO, context, prefect_rest

WINDOW = ("--window-end", "2026-09-03", "--days", "2", "--camera", "cam-02")


def _paused_retrain(api: str, proc: subprocess.Popen, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(
                f"cvloop retrain exited ({proc.returncode}):\n{out}\n{err[-4000:]}"
            )
        runs = prefect_rest(api).post(
            "/flow_runs/filter",
            json={
                "flows": {"name": {"any_": ["retrain"]}},
                "flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}},
            },
        )
        if runs:
            return runs[0]
        time.sleep(2)
    raise AssertionError("the retrain never paused for review")


@pytest.fixture(scope="module")
def retrain_run(booted):
    """Start `cvloop retrain` (in-process flow, pauses for review) on a drifted window."""
    b = booted
    b.stack.cli(
        "fleet", "generate", "--start", "2026-09-01", "--days", "2", "--cameras", "2",
        "--bursts-per-day", "6", "--frames-per-burst", "3", "-s", "night@2026-09-02:cam-02",
        env=b.env,
    )  # fmt: skip
    store = LocalStorage(b.store)
    store.put_bytes("frames/cam-01/2026-09-01/1756684800123.jpg", b"\xff\xd8broken")
    env = {**b.env, "PREFECT_LOGGING_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [CVLOOP, "retrain", *WINDOW],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    paused = None
    try:
        paused = _paused_retrain(b.stack.prefect_api, proc)
        yield b, proc, paused, store
    finally:
        if proc.poll() is None:
            proc.kill()
        if paused is not None:  # a run left open would hold the session's retrain open
            run = prefect_rest(b.stack.prefect_api).get(f"/flow_runs/{paused['id']}")
            if run["state_type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                prefect_rest(b.stack.prefect_api).post(
                    f"/flow_runs/{paused['id']}/set_state",
                    json={"state": {"type": "CANCELLED", "name": "Cancelled"}, "force": True},
                )


def _token(b) -> str:
    secrets = (b.stack.home / "secrets.env").read_text()
    return next(
        line.split("=", 1)[1].strip()
        for line in secrets.splitlines()
        if line.startswith("LABEL_STUDIO_API_KEY=")
    )


def _queue(b):
    from cvloop.adapters.labelstudio import LabelStudioQueue

    return LabelStudioQueue(b.stack.label_studio_url, _token(b))


def test_selected_frames_wait_in_label_studio_with_pre_annotations(retrain_run):
    b, _proc, paused, store = retrain_run
    run_base = f"runs/retrain/{paused['id']}"
    selected = read_parquet(store.get_bytes(f"{run_base}/selected.parquet"))
    info = json.loads(store.get_text(f"{run_base}/review-queue.json"))
    assert info["title"] == "cvloop-detector dataset-v2"  # the model's own project
    assert info["imported"] == selected.num_rows > 0
    assert info["model_version"] == "cvloop-detector/1"
    # the planted broken frame was quarantined at collection, with its reason
    quarantine = json.loads(store.get_text(f"{run_base}/quarantine.json"))
    assert quarantine == [
        {
            "key": "frames/cam-01/2026-09-01/1756684800123.jpg",
            "reason": "truncated JPEG (no end-of-image marker)",
        }
    ]
    assert not any("1756684800123" in k for k in selected.column("key").to_pylist())
    q = _queue(b)
    tasks = q.tasks(info["project_id"])
    assert len(tasks) == selected.num_rows
    assert len({d["sha256"] for _, d, _ in tasks}) == len(tasks)
    assert any("drift:camera cam-02" in d["why"] for _, d, _ in tasks)
    # the images load from the frame store through Label Studio
    _, data, _ = tasks[0]
    img = httpx.get(
        f"{b.stack.label_studio_url}{data['image']}",
        headers={"Authorization": f"Token {_token(b)}"},
    )
    assert img.status_code == 200 and img.content[:2] == b"\xff\xd8"
    # every task carries the champion's prediction (boxes or none) with its model version
    t = q.client.tasks.get(id=tasks[0][0])
    assert [p.model_version for p in t.predictions] == ["cvloop-detector/1"]


def _client_env(b, mp):
    for k, v in b.env.items():
        if k.startswith(("CVLOOP_", "LABEL_STUDIO")):
            mp.setenv(k, v)
    mp.setenv("MLFLOW_TRACKING_URI", b.stack.mlflow_uri)
    mp.setenv("LABEL_STUDIO_URL", b.stack.label_studio_url)


def _push(b, run_base: str, selected_key: str, version: str, batch: int = 500):
    """The pre-annotation step as the flow calls it, from this test process."""
    from cvloop.stages.annotate import push_to_label_studio

    with pytest.MonkeyPatch.context() as mp:
        _client_env(b, mp)
        from cvloop.stages.model import resolve_champion

        ctx = context()
        return push_to_label_studio(
            ctx, run_base, selected_key, resolve_champion(ctx), version,
            ["crate", "barrel", "cone"], 0.5, batch,
        )  # fmt: skip


def test_pre_annotations_are_the_boxes_at_conf_0_5_with_scores(retrain_run):
    import pyarrow as pa

    b, _proc, paused, store = retrain_run
    rows = read_parquet(
        store.get_bytes(f"runs/retrain/{paused['id']}/selected.parquet")
    ).to_pylist()[:2]
    dets = [
        {"label": "cone", "conf": 0.91, "cx": 0.5, "cy": 0.4, "w": 0.2, "h": 0.3},
        {"label": "crate", "conf": 0.5, "cx": 0.2, "cy": 0.2, "w": 0.1, "h": 0.1},
        {"label": "barrel", "conf": 0.49, "cx": 0.7, "cy": 0.7, "w": 0.1, "h": 0.1},
    ]
    for r in rows:
        r["detections"] = dets
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    store.put_bytes("runs/retrain/preannotated/selected.parquet", buf.getvalue())
    queue = _push(
        b, "runs/retrain/preannotated", "runs/retrain/preannotated/selected.parquet", "dataset-v99"
    )
    q = _queue(b)
    try:
        assert queue.imported == 2
        for tid, _, _ in q.tasks(queue.project_id):
            pred = q.client.tasks.get(id=tid).predictions[0]
            assert pred.model_version == "cvloop-detector/1"
            got = sorted((r["value"]["rectanglelabels"][0], r["score"]) for r in pred.result)
            assert got == [("cone", 0.91), ("crate", 0.5)]
            cone = next(r for r in pred.result if r["value"]["rectanglelabels"] == ["cone"])
            assert cone["value"]["x"] == pytest.approx(40.0)
            assert cone["value"]["height"] == pytest.approx(30.0)
    finally:
        q.client.projects.delete(id=queue.project_id)


def test_pushing_again_adds_no_duplicate(retrain_run):
    b, _proc, paused, store = retrain_run
    run_base = f"runs/retrain/{paused['id']}"
    before = json.loads(store.get_text(f"{run_base}/review-queue.json"))
    again = _push(b, f"{run_base}-again", f"{run_base}/selected.parquet", "dataset-v2", 7)
    assert again.project_id == before["project_id"]
    assert again.imported == 0 and again.skipped == before["tasks"]
    assert len(_queue(b).tasks(before["project_id"])) == before["tasks"]


def test_reviews_become_dataset_v2_and_bad_boxes_are_quarantined(retrain_run):
    b, proc, paused, store = retrain_run
    sim = b.stack.cli("review", "simulate", "dataset-v2", "--plant-bad", "4", env=b.env)
    planted = json.loads(sim.stdout)["planted"]
    assert len(planted) == 4
    watch = b.stack.cli("review", "watch", env=b.env).stdout
    assert "resumed" in watch and "tasks reviewed" in watch
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out[out.index("{") :])
    assert summary["dataset_version"] == "dataset-v2"
    v = summary["validation"]
    assert v["quarantined"] == 4 and v["valid"] == v["reviewed"] - 4
    assert (
        set(v["rule_failures"])
        == set(planted.values())
        == {"box_inside_image", "min_box_area", "class_in_schema", "max_box_area"}
    )
    # the dataset: git tag, DVC pointer, manifest with provenance; no quarantined frame
    tags = subprocess.run(["git", "tag"], cwd=b.repo, capture_output=True, text=True).stdout
    assert "dataset-v2" in tags.split()
    manifest = [
        json.loads(line)
        for line in (b.repo / "datasets" / "manifest.jsonl").read_text().splitlines()
    ]
    new = [m for m in manifest if m["added_in"] == "dataset-v2"]
    assert len(new) == summary["added"]["train"] + summary["added"]["val"] > 0
    assert all(m["label_source"] == "reviewed" and m["why_selected"] for m in new)
    assert any("drift:camera cam-02" in m["slice_tags"] for m in new)
    assert all(set(m["edits"]) >= {"kept", "moved", "deleted", "added"} for m in new)
    assert any(m["label_source"] == "synthetic-truth" for m in manifest)  # v1 kept
    quarantine = json.loads(
        store.get_text(f"runs/retrain/{paused['id']}/annotation-quarantine.json")
    )
    bad_keys = {q["key"] for q in quarantine}
    assert len(bad_keys) == 4
    assert not bad_keys & {m["source_key"] for m in manifest}
    # holdout v2: new drift frames, no leakage into training
    assert summary["holdout_version"] == "holdout-v2"
    holdout = [
        json.loads(line)
        for line in (b.repo / "holdout" / "data" / "manifest.jsonl").read_text().splitlines()
    ]
    added = [h for h in holdout if h["added_in"] == "holdout-v2"]
    assert len(added) == summary["added"]["holdout"] > 0
    assert all(any(t.startswith("drift:") for t in h["slice_tags"]) for h in added)
    assert not {h["sha256"] for h in holdout} & {m["sha256"] for m in manifest}
    data_yaml = yaml.safe_load((b.repo / "datasets" / "data.yaml").read_text())
    assert data_yaml["train"] == "images/train"
    # MLflow: edit rates on the retrain run
    from mlflow import MlflowClient

    client = MlflowClient(b.stack.mlflow_uri)
    exp = client.get_experiment_by_name("cvloop")
    run = client.search_runs([exp.experiment_id], f"tags.`cvloop.flow_run_id` = '{paused['id']}'")[
        0
    ]
    assert any(k.startswith("review.edit_rate.") for k in run.data.metrics)
    assert run.data.tags["cvloop.dataset.version"] == "dataset-v2"
    # the model half: a candidate fine-tuned from v1 on dataset-v2, gated, registered
    # either way; `challenger` only on a pass, the reasons listed on a rejection
    version = summary["candidate_version"]  # other modules may have registered candidates
    mv = client.get_model_version("cvloop-detector", version)
    assert mv.tags["cvloop.registration"] == "complete"
    assert mv.tags["cvloop.parent_version"] == "1"
    assert mv.tags["cvloop.dataset.version"] == "dataset-v2"
    assert mv.tags["cvloop.holdout.version"] == "holdout-v2"
    assert mv.tags["cvloop.gate"] == summary["gate"]
    assert json.loads(mv.tags["cvloop.exports"])["onnx"] == "ok"
    aliases = client.get_registered_model("cvloop-detector").aliases
    assert aliases.get("champion") == "1"
    if summary["gate"] == "passed":
        assert aliases.get("challenger") == version and summary["gate_reasons"] == []
    else:
        assert "challenger" not in aliases
        assert summary["gate_reasons"] == json.loads(mv.tags["cvloop.gate.reasons"])
        assert summary["gate_reasons"]
    train_run = client.get_run(mv.run_id)
    assert train_run.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert "champion.holdout.map50_95" in train_run.data.metrics
    assert "challenger.holdout.map50_95" in train_run.data.metrics
    assert "challenger.slice.drift.camera_cam-02.map50_95" in train_run.data.metrics
    assert "bench.challenger.onnx.p95_ms" in train_run.data.metrics
    report = client.download_artifacts(mv.run_id, "gate/report.json")
    checks = {c["name"] for c in json.loads(Path(report).read_text())["checks"]}
    assert {
        "holdout_map",
        "drift_slice:drift:camera cam-02",
        "drift_slice:drift:all",
        "export_parity:onnx",
    } <= checks
    assert "champion.slice.clean.map50_95" in train_run.data.metrics
    # the queue step again, after the review: no task added, no annotation lost
    info = json.loads(store.get_text(f"runs/retrain/{paused['id']}/review-queue.json"))
    before = _queue(b).tasks(info["project_id"])
    again = _push(
        b,
        f"runs/retrain/{paused['id']}-rerun",
        f"runs/retrain/{paused['id']}/selected.parquet",
        "dataset-v2",
    )
    assert again.imported == 0 and again.project_id == info["project_id"]
    after = _queue(b).tasks(info["project_id"])
    assert after == before and sum(n for _, _, n in after) == v["reviewed"]


def test_label_studio_down_or_wrong_token_says_the_fix(stack):
    from cvloop.adapters.labelstudio import LabelStudioError, LabelStudioQueue
    from tests.conftest import free_port

    with pytest.raises(LabelStudioError, match="refuses the API token") as err:
        LabelStudioQueue(stack.label_studio_url, "not-a-token").check()
    assert "LABEL_STUDIO_API_KEY" in str(err.value)
    with pytest.raises(LabelStudioError, match="is not reachable") as err:
        LabelStudioQueue(f"http://127.0.0.1:{free_port()}", "x").check()
    assert "cvloop services up" in str(err.value)


def test_no_secret_is_written_anywhere_the_retrain_went(retrain_run):
    """Label Studio's token and password, and the S3 key, are in no parameter, tag, log,
    artifact, report or record the retrain, its Prefect runs and MLflow runs left behind
    (tests/secrets_audit.py says where it looks)."""
    from tests.secrets_audit import leaks

    b, *_ = retrain_run
    assert leaks(b.stack.home, b.env) == []
