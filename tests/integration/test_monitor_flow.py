"""The monitor flow against the real stack: a log where two cameras drift, the weekly check
run as a user would (`cvloop monitor`), and what it leaves in Prefect and MLflow."""

from __future__ import annotations

import httpx
import pytest

from cvloop.adapters.storage import LocalStorage
from tests.conftest import prefect_rest
from tests.unit.test_monitor import DRIFTED, _fill


@pytest.fixture(scope="module")
def checked(booted):
    _fill(LocalStorage(booted.store))  # champion v1 served a drifting fortnight
    booted.stack.cli("deploy", env=booted.env)  # the retrain automation listens from now on
    out = booted.stack.cli(
        "monitor",
        "--current-end",
        "2026-11-16",
        "--reference-start",
        "2026-11-02",
        env=booted.env,
        timeout=600,
    )
    return booted, out.stdout + out.stderr


def test_the_drifted_cameras_fire_the_trigger(checked):
    _, out = checked
    assert "triggers fired: severe_drift" in out


def test_drift_event_names_the_drifted_cameras_only(checked):
    b, _ = checked
    events = prefect_rest(b.stack.prefect_api).post(
        "/events/filter",
        json={
            "filter": {
                "event": {"name": ["cvloop.drift.detected"]},
                "occurred": {"since": "2020-01-01T00:00:00Z"},
            },
            "limit": 10,
        },
    )
    found = events.get("events", [])
    assert found, "no cvloop.drift.detected event on the Prefect server"
    payload = found[0]["payload"]
    assert set(payload["cameras"]) == DRIFTED
    assert payload["triggers"] == ["severe_drift"]
    assert payload["window"]["start"].startswith("2026-11-09")
    assert found[0]["resource"]["prefect.resource.id"] == "cvloop.model.cvloop-detector"


def test_report_artifact_has_the_trigger_table_and_dashboard_link(checked):
    b, _ = checked
    arts = prefect_rest(b.stack.prefect_api).post(
        "/artifacts/filter",
        json={
            "artifacts": {"key": {"any_": ["monitor-report"]}},
            "sort": "CREATED_DESC",
            "limit": 1,
        },
    )
    md = arts[0]["data"]
    for rule in (
        "holdout_map_drop",
        "confidence_ks_with_ap_regression",
        "new_labels",
        "days_since_training",
        "severe_drift",
    ):
        assert f"| {rule} |" in md
    assert "🔴 FIRED" in md and "drift-report.html" in md and "confidence-histograms.png" in md
    assert "detection-volume.png" in md  # the third signal, plotted
    link = prefect_rest(b.stack.prefect_api).post(
        "/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["drift-dashboard"]}}},
    )
    assert link and "drift-report.html" in link[0]["data"]
    url = link[0]["data"].split("](")[1].rstrip(")")  # [text](url)
    html = httpx.get(url)
    assert html.status_code == 200
    assert "box_area" in html.text and "confidence" in html.text
    stored = b.store / "reports" / "monitor" / "202646"
    for name in ("drift-report.html", "confidence-histograms.png", "detection-volume.png"):
        assert (stored / name).exists(), name


def test_mlflow_has_the_holdout_trend_and_drift_figures(checked):
    from mlflow import MlflowClient

    b, _ = checked
    client = MlflowClient(b.stack.mlflow_uri)
    exp = client.get_experiment_by_name("cvloop-monitor")
    run = client.search_runs([exp.experiment_id], "tags.`cvloop.champion` = '1'")[0]
    hist = client.get_metric_history(run.info.run_id, "holdout.map50_95")
    assert [m.step for m in hist] == [202646]  # ISO week of 2026-11-15
    assert "drift.volume.camera.cam-01.psi" in run.data.metrics
    arts = [a.path for a in client.list_artifacts(run.info.run_id, "drift-report")]
    assert "drift-report/drift-report.html" in arts
    assert "drift-report/confidence-histograms.png" in arts
    assert "drift-report/detection-volume.png" in arts


def test_the_event_starts_the_retrain_deployment_with_the_drift_slices(checked):
    import time

    b, _ = checked
    deadline = time.time() + 120
    runs = []
    while time.time() < deadline:
        runs = prefect_rest(b.stack.prefect_api).post(
            "/flow_runs/filter",
            json={"flows": {"name": {"any_": ["retrain"]}}, "sort": "EXPECTED_START_TIME_DESC"},
        )
        # the run the event started (other tests of the session start retrains by hand)
        runs = [r for r in runs if (r.get("parameters") or {}).get("triggers") == ["severe_drift"]]
        if runs and runs[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED"):
            break
        time.sleep(2)
    assert runs, "the drift event did not start a retrain run"
    params = runs[0]["parameters"]
    assert set(params["cameras"]) == DRIFTED
    assert params["triggers"] == ["severe_drift"]
    assert {s["name"] for s in params["drift_slices"] if s["kind"] == "camera"} == DRIFTED
    assert params["window_end"].startswith("2026-11-16")
    deployment = prefect_rest(b.stack.prefect_api).get(f"/deployments/{runs[0]['deployment_id']}")
    assert deployment["name"] == "on-drift"
    # the worker ran it: this store holds the inference log but no frames, so the retrain
    # stops at the review queue with a message that names the store
    assert runs[0]["state_type"] == "FAILED", runs[0]["state_name"]
    logs = prefect_rest(b.stack.prefect_api).post(
        "/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [runs[0]["id"]]}}, "limit": 200},
    )
    assert any("no frame was selected for review" in log["message"] for log in logs)
