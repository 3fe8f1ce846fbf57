"""The retrain as the worker runs it (deployment retrain/on-drift): it *suspends* for the
review, so no process waits for days; the review/watch check resumes it when every task
is reviewed, and the rescheduled run picks up the finished steps from their persisted
results instead of running them again."""

from __future__ import annotations

import json
import time

from tests.conftest import prefect_rest


def _run(api: str, run_id: str) -> dict:
    return prefect_rest(api).get(f"/flow_runs/{run_id}")


def _wait(api: str, run_id: str, states: set[str], timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = _run(api, run_id)
        if run["state_type"] in states:
            return run
        time.sleep(2)
    raise AssertionError(f"run {run_id} stayed {run['state_name']}")


def test_deployment_run_suspends_for_review_and_resumes_from_cache(booted):
    b = booted
    api = b.stack.prefect_api
    b.stack.cli(
        "fleet", "generate", "--start", "2026-09-18", "--days", "2", "--cameras", "2",
        "--bursts-per-day", "4", "--frames-per-burst", "2", "-s", "night@2026-09-19:cam-02",
        env=b.env,
    )  # fmt: skip
    b.stack.cli("deploy", env=b.env)
    dep = prefect_rest(api).get("/deployments/name/retrain/on-drift")
    params = {"window_end": "2026-09-20", "days": 2, "cameras": ["cam-02"],
              "triggers": ["manual"]}  # fmt: skip
    # busy answers (503) are retried as Prefect's own client does
    run = prefect_rest(api).post(f"/deployments/{dep['id']}/create_flow_run",
                                 json={"parameters": params})  # fmt: skip
    paused = _wait(api, run["id"], {"PAUSED", "FAILED", "CRASHED", "COMPLETED"})
    assert paused["state_name"] == "Suspended", paused["state"]

    # a second trigger while this retrain waits for its reviewers (the monitor fires every
    # week): recorded on the open retrain, not started again on the same dataset version
    second = prefect_rest(api).post(
        f"/deployments/{dep['id']}/create_flow_run",
        json={"parameters": {**params, "cameras": ["cam-01"], "triggers": ["rule2"]}},
    )
    joined = _wait(api, second["id"], {"COMPLETED", "FAILED", "CRASHED"})
    assert joined["state_type"] == "COMPLETED", joined["state"]
    record = json.loads((b.store / "runs" / "retrain" / "open.json").read_text())
    assert record["run_id"] == run["id"]
    assert [(j["run_id"], j["triggers"], j["cameras"]) for j in record["joined"]] == [
        (second["id"], ["rule2"], ["cam-01"])
    ]
    assert not (b.store / "runs" / "retrain" / second["id"]).exists()  # collected nothing
    assert _run(api, run["id"])["state_name"] == "Suspended"
    queue = json.loads((b.store / "runs" / "retrain" / run["id"] / "review-queue.json").read_text())
    title = queue["dataset_version"]
    assert queue["tasks"] > 0 and title == f"dataset-v{_next_dataset(b)}"
    sim = b.stack.cli("review", "simulate", title, env=b.env).stdout
    assert '"submitted": 0' not in sim
    watch = b.stack.cli("review", "watch", env=b.env).stdout
    assert f"{run['id']} ({title})" in watch and "resumed: all" in watch
    done = _wait(api, run["id"], {"COMPLETED", "FAILED", "CRASHED"})
    assert done["state_type"] == "COMPLETED", done["state"]
    tasks = prefect_rest(api).post(
        "/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [run["id"]]}}, "sort": "EXPECTED_START_TIME_ASC"},
    )
    collect = [t["state_name"] for t in tasks if t["task_key"].startswith("collect_frames")]
    assert collect == ["Completed", "Cached"]  # ran once; the resumed run reused it
    # the retrain ended: nothing is open, the trigger recorded on it is kept with it
    record = json.loads((b.store / "runs" / "retrain" / "open.json").read_text())
    assert record["run_id"] is None and record["last"]["run_id"] == run["id"]
    assert [j["run_id"] for j in record["last"]["joined"]] == [second["id"]]


def _next_dataset(b) -> int:
    import subprocess

    tags = subprocess.run(["git", "tag"], cwd=b.repo, capture_output=True, text=True).stdout
    nums = [int(t.rsplit("-v", 1)[1]) for t in tags.split() if t.startswith("dataset-v")]
    return max(nums) + 1
