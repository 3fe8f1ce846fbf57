"""The whole quarter at tiny scale, as a new user runs it: `cvloop demo --fast` on its own
stack (private home, free ports, its own data repo and DVC remote), then every claim of
the demo checked in the services themselves — Prefect, Label Studio, DVC/git, MLflow, the
rollout manifest."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import CVLOOP, REPO, prefect_rest, stack_env

DEMO_TIMEOUT_S = 2700


def _json_tail(text: str) -> dict:
    return json.loads(text[text.rfind("\n{\n") + 1 :] if not text.startswith("{") else text)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-home")
    env = stack_env(home)
    repo = home / "data-repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    env.update(CVLOOP_DATA_REPO=str(repo), CVLOOP_DVC_REMOTE=str(home / "dvc-remote"))

    def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [CVLOOP, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )

    try:
        proc = cli("demo", "--fast", timeout=DEMO_TIMEOUT_S)
        (home / "demo.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        assert proc.returncode == 0, (
            f"cvloop demo --fast failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n"
            f"{proc.stderr[-6000:]}"
        )
        yield home, env, repo, proc.stdout, cli
    finally:
        cli("services", "down")


def _secret(home: Path, key: str) -> str:
    for line in (home / "secrets.env").read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"{key} not in secrets.env")


def _field(obj, name: str):
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def _prefect(env: dict, path: str, body: dict | None = None):
    api = f"http://127.0.0.1:{env['CVLOOP_PREFECT_PORT']}/api"
    return prefect_rest(api).post(path, json=body or {})


def _runs(env: dict, flow: str) -> list[dict]:
    return _prefect(
        env,
        "/flow_runs/filter",
        {"flows": {"name": {"any_": [flow]}}, "sort": "EXPECTED_START_TIME_ASC"},
    )


def test_the_drift_event_started_the_retrain(demo):
    _, env, _, stdout, _ = demo
    monitors = [r for r in _runs(env, "monitor") if r["state_type"] == "COMPLETED"]
    retrains = _runs(env, "retrain")
    assert len(retrains) == 1, [r["name"] for r in retrains]
    run = retrains[0]
    # created by the automation of prefect.yaml reacting to cvloop.drift.detected,
    # after the monitor run that emitted it, for the drifted camera
    assert run["created_by"]["type"] == "AUTOMATION", run["created_by"]
    assert run["expected_start_time"] > monitors[0]["start_time"]
    assert "cam-01" in run["parameters"]["cameras"]
    assert run["state_type"] == "COMPLETED"
    assert "FIRED" in stdout


def test_label_studio_holds_the_pre_annotations_and_the_simulated_reviews(demo):
    home, env, _, stdout, _ = demo
    from cvloop.adapters.labelstudio import LabelStudioQueue
    from cvloop.sim.fleet.reviewer import REVIEWER, SECOND_REVIEWER

    q = LabelStudioQueue(
        f"http://127.0.0.1:{env['CVLOOP_LABEL_STUDIO_PORT']}",
        _secret(home, "LABEL_STUDIO_API_KEY"),
    )
    (project,) = [p for p in q.client.projects.list() if p.title == "cvloop-detector dataset-v2"]
    tasks = list(q.client.tasks.list(project=project.id, fields="all"))
    assert len(tasks) > 20
    reviewer, second = q.ensure_user(*REVIEWER), q.ensure_user(*SECOND_REVIEWER)
    doubles = q.double_labeled(project.id)
    # Label Studio's overlap cohort: review.agreement_share (10 %) of the tasks, two reviewers
    assert (project.maximum_annotations, project.overlap_cohort_percentage) == (2, 10)
    assert len(doubles) == int(len(tasks) * 10 / 100 + 0.5) > 0
    for t in tasks:
        # the champion's pre-annotation, and one review signed by the simulated reviewer (a
        # double-labeled task: one more, by the second reviewer)
        assert [_field(p, "model_version") for p in t.predictions] == ["cvloop-detector/1"]
        signed = [_field(a, "completed_by") for a in t.annotations]
        assert sorted(signed) == sorted([reviewer, second] if t.id in doubles else [reviewer])
    assert sum(len(_field(t.annotations[0], "result")) for t in tasks) > 0
    # the agreement the review/watch check measured on them (and it did not hold the review)
    assert f"agreement of two reviewers on {len(doubles)} frames: " in stdout


def test_dataset_v2_is_in_dvc_with_its_manifest(demo):
    _, env, repo, _, _ = demo
    tags = subprocess.run(["git", "tag"], cwd=repo, capture_output=True, text=True).stdout
    assert {"dataset-v1", "dataset-v2", "holdout-v1", "holdout-v2"} <= set(tags.split())
    # the tagged datasets.dvc names a directory that is in the DVC remote, manifest included
    dvc = subprocess.run(
        ["git", "show", "dataset-v2:datasets.dvc"], cwd=repo, capture_output=True, text=True
    ).stdout
    md5 = next(line.split(":")[1].strip() for line in dvc.splitlines() if "md5:" in line)
    remote = Path(env["CVLOOP_DVC_REMOTE"])
    listing = remote / "files" / "md5" / md5[:2] / md5[2:]
    assert listing.exists(), f"{listing} missing from the DVC remote"
    entries = {e["relpath"]: e["md5"] for e in json.loads(listing.read_text())}
    assert any(n.startswith("images/train/") for n in entries)

    def blob(relpath: str) -> str:
        md5 = entries[relpath]
        return (remote / "files" / "md5" / md5[:2] / md5[2:]).read_text()

    version = blob("VERSION").strip()
    assert version.endswith("v2"), version
    frames = [json.loads(line) for line in blob("manifest.jsonl").splitlines() if line]
    assert {f["added_in"] for f in frames} == {version.replace("v2", "v1"), version}
    reviewed = [f for f in frames if f["label_source"] == "reviewed"]
    assert reviewed and all(f["why_selected"] for f in reviewed)
    # every image of the manifest is in the version
    assert all(f"images/{f['split']}/{f['id']}.jpg" in entries for f in frames)


def test_the_new_model_is_champion_with_lineage_and_serves_all_traffic(demo):
    home, _, _, stdout, cli = demo
    status = _json_tail(cli("status", "--json").stdout)
    assert status["aliases"]["champion"] == "2"
    assert status["aliases"]["previous-champion"] == "1"
    (v2,) = [v for v in status["versions"] if v["version"] == "2"]
    assert v2["share"] == 100
    assert v2["gate"] == "passed"
    assert v2["dataset_version"] == "dataset-v2" and v2["dataset_dvc_md5"]
    assert v2["holdout_version"] == "holdout-v2" and v2["parent_version"] == "1"
    assert v2["git_commit"] and v2["params_sha256"] and v2["training_run"] and v2["sha256_pt"]
    assert v2["bench_onnx"]["p95_ms"] > 0
    assert v2["approved_by"] == "demo ML lead (simulated approval)"
    # the canary judged quality on paired frames (no labels in the demo's window), per class
    assert v2["rollout_evidence"] == "pairing"
    assert set(v2["rollout_kept_share"]) == {"crate", "barrel", "cone"}
    from cvloop.adapters.storage import LocalStorage
    from registry.manifest import read_manifest

    m = read_manifest(LocalStorage(home / "store"))
    assert m.stage == "stable"
    assert [(a.version, a.share) for a in m.allocations] == [("2", 100.0)]
    stages = [h["stage"] for h in status["history"]]
    assert {"canary-10", "canary-50", "canary-100", "stable"} <= set(stages)
    assert "which checkpoint is in prod" in stdout and "v2  100%  [champion]" in stdout


def test_the_rollout_went_through_cvloop_serve(demo):
    """Each stage's day was sent over HTTP to the stack's `cvloop serve`; the log it wrote
    holds every frame with the version the manifest routes it to; after the promotion the
    same server process serves v2."""
    home, env, _, stdout, _ = demo
    sent = [ln for ln in stdout.splitlines() if "frames sent to cvloop serve" in ln]
    assert sent and all("0 not where the manifest routes them" in ln for ln in sent), sent
    assert any("v1 90%, v2 10%" in ln and "'2':" in ln for ln in sent), sent
    assert "cvloop serve now serves v2 at 100 % (the same process, no restart" in stdout
    routing = httpx.get(f"http://127.0.0.1:{env['CVLOOP_SERVE_PORT']}/v1/routing").json()
    assert [(a["version"], a["share"]) for a in routing["allocations"]] == [("2", 100.0)]
    assert routing["models"]["2"]["sha256"]
    parts = list((home / "store" / "inference-log").rglob("part-*.parquet"))
    assert any(p.name.count("-") >= 4 for p in parts), "no part written by the server's writer"


def test_the_weekly_review_was_written(demo):
    _, env, _, stdout, _ = demo
    (run,) = [r for r in _runs(env, "weekly-review") if r["state_type"] == "COMPLETED"]
    arts = _prefect(
        env,
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["weekly-review"]}, "flow_run_id": {"any_": [run["id"]]}}},
    )
    assert len(arts) == 1
    md = arts[0]["data"]
    assert "## Is anything red?" in md and "## Did the deployment change, and why?" in md
    assert "## Service level objectives" in md and "| all |" in md  # the week's log, budgets
    assert "v2 is the champion" in md
    assert "Prefect orchestration:" in stdout


def test_the_demo_drew_its_pictures(demo):
    home, _, _, stdout, _ = demo
    for name in ("retrain-flow-run.png", "drift-confidence.png"):
        pic = home / "pictures" / name
        assert pic.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", pic
        assert pic.stat().st_size > 10_000
        assert str(pic) in stdout


def test_every_url_the_demo_prints_answers(demo):
    import re

    _, _, _, stdout, _ = demo
    opened = stdout[stdout.rfind("\nOpen:") :]
    urls = re.findall(r"(http://127\.0\.0\.1:\d+\S*)", opened)
    assert len(urls) >= 4, opened
    for url in urls:
        r = httpx.get(url.split("#")[0], timeout=30, follow_redirects=True)
        assert r.status_code == 200, (url, r.status_code)
    drift = next(u for u in urls if "drift-report.html" in u)
    report = httpx.get(drift, timeout=30).text
    assert "root_metric" in report and "box_area" in report and "confidence" in report


def test_no_secret_is_written_anywhere_the_demo_went(demo):
    """After the whole loop (monitor, retrain, review, candidate, rollout through cvloop
    serve, weekly review): Label Studio's token and password, and the S3 key, are in no
    parameter, tag, log, artifact, report or record (tests/secrets_audit.py)."""
    from tests.secrets_audit import leaks

    home, env, *_ = demo
    assert leaks(home, env) == []


# ---- chapter new-class: a fourth class appears; the schema changes; one retrain learns it --


@pytest.fixture(scope="module")
def new_class(demo):
    """`cvloop demo --fast --chapter new-class` on the demo's stack (after the tests above:
    it adds a retrain and model versions)."""
    home, env, repo, _, cli = demo
    proc = cli("demo", "--fast", "--chapter", "new-class", timeout=DEMO_TIMEOUT_S)
    (home / "new-class.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    lines = [x for x in proc.stdout.splitlines() if x.startswith('  {"candidate"')]
    assert lines, f"no result ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc, json.loads(lines[-1]), repo, env


def test_after_one_retrain_the_new_class_is_detected_and_the_old_ones_hold(new_class):
    proc, out, repo, _env = new_class
    from cvloop.config.params import load_params

    floor = load_params().gate.new_class_min_ap
    assert out["classes"] == ["crate", "barrel", "cone", "pallet"]
    pallet = out["class_gates"]["pallet"]
    assert "no champion baseline" in pallet["detail"]
    ap50 = float(pallet["detail"].split("AP50 ")[1].split(" ")[0])
    assert pallet["passed"] and ap50 >= floor, pallet
    for old in ("crate", "barrel", "cone"):  # no regression beyond the tolerance
        assert out["class_gates"][old]["passed"], out["class_gates"][old]
    assert out["gate"] == "passed" and proc.returncode == 0, proc.stdout[-4000:]
    # the head was resized from the champion, keeping the three learned classes
    resize = json.loads(out["head_resize"])
    assert resize["new"] == ["pallet"] and set(resize["kept"]) == {"crate", "barrel", "cone"}
    # the dataset, the holdout and the model version all name the new schema version
    assert out["model_schema"] == out["dataset_schema"] == out["holdout_schema"] == "schema-v2"
    for tag in (out["dataset_version"], out["holdout_version"]):
        logged = subprocess.run(["git", "show", f"{tag}:schema.yaml"], cwd=repo,
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "current: 2" in logged, tag
