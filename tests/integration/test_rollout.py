"""The rollout against the real local MLflow and Prefect, with the simulated fleet serving
the days between the stages (`cvloop fleet serve` honours the rollout manifest).

Days after today are used so that no other test's inference log overlaps the canary
windows. The scheduled `rollout/tick` deployment is paused while this module runs (its
ticks would race the steps the tests take one by one).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest

FIRST = dt.date.today() + dt.timedelta(days=10)


def _day(i: int) -> str:
    return (FIRST + dt.timedelta(days=i)).isoformat()


@pytest.fixture(scope="module")
def fleet(booted):
    """Six future days of the tiny fleet, dense enough for a 10 % canary sample."""
    b = booted
    paused = _pause_tick(b, True)
    b.stack.cli(
        "fleet", "generate", "--start", _day(0), "--days", "6", "--bursts-per-day", "60",
        "--workers", "1", env=b.env, timeout=600,
    )  # fmt: skip
    yield b
    if paused:
        _pause_tick(b, False)


def _pause_tick(b, pause: bool) -> bool:
    """Pause (or resume) the scheduled rollout/tick deployment if it was deployed."""
    import httpx

    api = b.stack.prefect_api
    r = httpx.get(f"{api}/deployments/name/rollout/tick")
    if r.status_code == 404:  # not deployed in this session: nothing schedules it
        return False
    r.raise_for_status()
    httpx.patch(f"{api}/deployments/{r.json()['id']}", json={"paused": pause}).raise_for_status()
    return True


def _json_tail(text: str) -> dict:
    """The indented JSON document a command prints last."""
    i = text.rfind("\n{\n")
    return json.loads(text[i + 1 :] if i >= 0 else text[text.index("{") :])


def _tick(b) -> dict:
    """`cvloop rollout tick`: one step, reported to Prefect as a flow run."""
    out = b.stack.cli("rollout", "tick", env=b.env).stdout
    return _json_tail(out)


def _register_copy_of_champion(tmp_path, name: str) -> str:
    """A candidate that passed the gates: the champion's own files, registered anew."""
    from mlflow import MlflowClient

    from cvloop.settings import load_settings
    from cvloop.training import EvalResult
    from registry.models import ModelRegistry
    from tasks.model import TrainedModel, register_model, start_training_run

    reg = ModelRegistry.from_settings()
    champ = reg.fetch_alias("champion")
    run_id = start_training_run("cvloop", name, {"lr0": 0.001, "epochs": 1}, {})
    d = tmp_path / name
    d.mkdir()
    for f in ("best.pt", "best.onnx", "model.json"):
        shutil.copy(champ.pt.parent / f, d / f)
    MlflowClient(load_settings().mlflow_tracking_uri).log_artifacts(run_id, str(d), "model")
    trained = TrainedModel(run_id, str(d / "best.pt"), str(d / "best.onnx"), champ.classes,
                           champ.imgsz, 1, 1.0)  # fmt: skip
    from cvloop.lineage import git_commit, params_sha256

    lineage = {
        "dataset_version": "dataset-v1",
        "parent_version": champ.version,
        "git_commit": git_commit(),
        "params_sha256": params_sha256(),
    }
    return register_model(
        run_id, trained, lineage, EvalResult(0.5, 0.7, 0.6, 0.6, {}, {}, 1, 1),
        {"cvloop.gate": "passed", "cvloop.gate.reasons": "[]"}, "cvloop-detector",
        ["challenger"], name,
    )  # fmt: skip


def _serve(b, day: int, *extra: str) -> dict:
    out = b.stack.cli("fleet", "serve", "--start", _day(day), "--days", "1", *extra, env=b.env)
    return _json_tail(out.stdout)


def _state():
    from cvloop.storage import open_storage
    from registry.manifest import read_manifest
    from registry.models import ModelRegistry

    m = read_manifest(open_storage())
    reg = ModelRegistry.from_settings()
    aliases = {a: reg.alias_version(a) for a in ("champion", "challenger", "previous-champion")}
    return m, aliases, reg


def test_a_good_challenger_goes_10_50_approval_100_and_becomes_champion(
    fleet, stack_client_env, tmp_path, monkeypatch
):
    from tasks import rollout as ro

    b = fleet
    _, before, _ = _state()
    old = before["champion"]
    good = _register_copy_of_champion(tmp_path, "rollout-good")
    b.stack.cli("rollout", "start", good, env=b.env)
    m, aliases, _ = _state()
    assert m.stage == "canary-10" and m.share_of(good) == 10 and m.share_of(old) == 90
    assert aliases["challenger"] == good
    # no traffic served yet: the canary sample is too small, the stage holds
    assert _tick(b)["status"] in ("hold",)
    served = _serve(b, 0)
    assert served["frames"] > 0
    _tick(b)
    m, _, reg = _state()
    assert m.stage == "canary-50" and m.share_of(good) == 50
    _serve(b, 1)
    _tick(b)
    m, _, reg = _state()
    assert m.stage == "canary-50" and m.extra["approval_requested_at"]  # waits for the ML lead
    assert reg.get_version(good).tags["cvloop.rollout.status"] == "awaiting-approval"
    assert _tick(b)["status"] == "await_approval"  # holds at 50 % without approval
    b.stack.cli("approve", good, "--by", "Ada Lead", env=b.env)
    assert reg.get_version(good).tags["cvloop.approved_by"] == "Ada Lead"
    _tick(b)
    m, _, _ = _state()
    assert m.stage == "canary-100" and m.share_of(good) == 100
    assert m.reason.endswith("approved by Ada Lead")  # the history says who let it through
    _serve(b, 2)
    # a crash between the alias move and the manifest write of the promotion ...
    real = ro.write_manifest
    monkeypatch.setattr(
        ro, "write_manifest", lambda *a, **k: (_ for _ in ()).throw(OSError("disk"))
    )
    with pytest.raises(OSError):
        ro.rollout_tick("test")
    m, aliases, _ = _state()
    assert aliases["champion"] == good and m.stage == "canary-100"
    monkeypatch.setattr(ro, "write_manifest", real)
    # ... is finished by the next tick: one consistent state
    ro.rollout_tick("test")
    m, aliases, reg = _state()
    assert m.stage == "stable" and m.allocations[0].version == good and m.share_of(good) == 100
    assert aliases == {"champion": good, "challenger": None, "previous-champion": old}
    assert reg.get_version(good).tags["cvloop.rollout.status"] == "champion"
    # `cvloop status` answers "which checkpoint is in prod, trained on what?"
    status = json.loads(b.stack.cli("status", "--json", env=b.env).stdout)
    prod = [v for v in status["versions"] if v["share"] == 100]
    assert [v["version"] for v in prod] == [good]
    assert prod[0]["dataset_version"] == "dataset-v1" and prod[0]["approved_by"] == "Ada Lead"
    assert prod[0]["training_run"] and prod[0]["params_sha256"]
    stages = [h["stage"] for h in status["history"]]
    assert stages[:4] == ["stable", "canary-100", "canary-50", "canary-50"]
    text = b.stack.cli("status", env=b.env).stdout
    assert f"v{good}  100%  [champion]" in text and "ROLLOUT HISTORY" in text
    # manual rollback: the previous champion serves again at once
    b.stack.cli("rollback", "--reason", "test: back to the baseline", env=b.env)
    m, aliases, reg = _state()
    assert aliases["champion"] == old and m.share_of(old) == 100
    assert reg.get_version(good).tags["cvloop.rollout.status"] == "rolled-back"


def test_a_slow_error_prone_challenger_is_rolled_back_at_10_percent(
    fleet, stack_client_env, tmp_path
):
    b = fleet
    _, before, _ = _state()
    bad = _register_copy_of_champion(tmp_path, "rollout-bad")
    b.stack.cli("rollout", "start", bad, env=b.env)
    _serve(b, 3, "--slow", f"{bad}=40", "--errors", f"{bad}=0.2")
    out = _tick(b)
    m, aliases, reg = _state()
    assert m.stage == "stable" and m.share_of(before["champion"]) == 100
    assert aliases["challenger"] is None and aliases["champion"] == before["champion"]
    tags = reg.get_version(bad).tags
    assert tags["cvloop.rollout.status"] == "rolled-back"
    assert "canary breach at 10%" in tags["cvloop.rollout.reason"]
    assert "error_rate" in tags["cvloop.rollout.reason"]
    assert "p95_latency" in tags["cvloop.rollout.reason"]
    assert out["status"] == "rollback"  # the scheduled tick is paused: this one acted
    import httpx

    arts = httpx.post(
        f"{b.stack.prefect_api}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["rollout-breach"]}}},
    ).json()
    assert arts and "error_rate" in arts[0]["data"]
    # a version rolled back is not started again without --force, and says why
    proc = b.stack.cli("rollout", "start", bad, env=b.env, check=False)
    assert proc.returncode != 0
    assert "was rolled-back before" in proc.stdout + proc.stderr and "--force" in proc.stderr


def test_the_weekly_review_shows_the_red_and_the_changes(fleet):
    b = fleet
    out = b.stack.cli("weekly", env=b.env).stdout
    assert "## Is anything red?" in out
    assert "rollback: canary breach at 10%" in out  # the breach above
    assert "| canary-10 |" in out  # the deployment changes of the week, with their reasons
    assert "manual rollback of v" in out  # who rolled back, and why
