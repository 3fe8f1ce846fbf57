"""The rollout against the real local MLflow and Prefect, with the simulated fleet serving
the days between the stages (`cvloop fleet serve` honours the rollout manifest).

Days after today are used so that no other test's inference log overlaps the canary
windows. The scheduled `rollout/tick` deployment is paused while this module runs (its
ticks would race the steps the tests take one by one).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from cvloop.adapters.parquet import read_parquet
from tests.conftest import context, prefect_rest
from tests.registered import (
    register_copy_of_champion,
    register_files,
    register_slower_copy_of_champion,
)

FIRST = dt.date.today() + dt.timedelta(days=10)


def _day(i: int) -> str:
    return (FIRST + dt.timedelta(days=i)).isoformat()


@pytest.fixture(scope="module")
def fleet(booted):
    """Seven future days of the tiny fleet, dense enough for a 10 % canary sample."""
    b = booted
    paused = _pause_tick(b, True)
    b.stack.cli(
        "fleet", "generate", "--start", _day(0), "--days", "7", "--bursts-per-day", "60",
        "--workers", "1", env=b.env, timeout=600,
    )  # fmt: skip
    yield b
    if paused:
        _pause_tick(b, False)


def _pause_tick(b, pause: bool) -> bool:
    """Pause (or resume) the scheduled rollout/tick deployment if it was deployed."""
    api = b.stack.prefect_api
    r = prefect_rest(api).request("GET", "/deployments/name/rollout/tick")
    if r.status_code == 404:  # not deployed in this session: nothing schedules it
        return False
    r.raise_for_status()
    prefect_rest(api).patch(f"/deployments/{r.json()['id']}", json={"paused": pause})
    return True


def _json_tail(text: str) -> dict:
    """The indented JSON document a command prints last."""
    i = text.rfind("\n{\n")
    return json.loads(text[i + 1 :] if i >= 0 else text[text.index("{") :])


def _tick(b) -> dict:
    """`cvloop rollout tick`: one step, reported to Prefect as a flow run (its report is
    printed: `pytest -s` shows what each tick judged)."""
    from cvloop.stages.canary_report import canary_report

    out = _json_tail(b.stack.cli("rollout", "tick", env=b.env).stdout)
    print(canary_report(out))
    return out


CLASSES = ["crate", "barrel", "cone"]


@dataclass
class Trained:
    champion: str  # registered version (the champion alias is moved onto it)
    better: str  # its successor, trained on from its best.pt (not yet registered)
    better_pt: str
    better_onnx: str
    champion_map: float
    better_map: float


@pytest.fixture(scope="module")
def client_env(fleet):
    """This process pointed at the session stack for the whole module (as the CLI is)."""
    st = fleet.stack
    with pytest.MonkeyPatch.context() as mp:
        for key, value in st.env.items():
            if key.startswith("CVLOOP_"):
                mp.setenv(key, value)
        mp.setenv("PREFECT_API_URL", st.prefect_api)
        mp.setenv("MLFLOW_TRACKING_URI", st.mlflow_uri)
        mp.setenv("CVLOOP_S3_ENDPOINT_URL", st.s3_endpoint)
        yield


@pytest.fixture(scope="module")
def trained(fleet, client_env, tmp_path_factory):
    """A champion worth canarying against, and a better successor, trained here with fixed
    seeds on frames of the session's tiny fleet: 25 epochs from the model YAML on 240
    frames (the session champion, 2 epochs on 48, has too few confident boxes to pair),
    then 10 more epochs from its best.pt. Both are scored on a holdout of later days; the
    champion alias moves to the first for this module and back at its end."""
    from cvloop.adapters.training import evaluate
    from cvloop.sim.baseline import build_baseline
    from cvloop.sim.fleet.generate import FleetConfig, cameras_named
    from cvloop.stages.model import resolve_model_source, start_training_run, train_model
    from registry.manifest import single, write_manifest

    tmp = tmp_path_factory.mktemp("rollout-models")
    cfg = FleetConfig(seed=7, cameras=cameras_named(2), image_size=160, classes=tuple(CLASSES))
    ds, ho = tmp / "dataset", tmp / "holdout"
    build_baseline(cfg, dt.date(2026, 8, 1), 5, 240, 60, ds, ho, CLASSES, 1, 0.2, 4)
    from cvloop.config.params import TrainParams

    ctx = context()
    tp = TrainParams(imgsz=128, batch=8, device="cpu", workers=0, patience=100, seed=0)
    run = start_training_run(ctx, "cvloop", "rollout-test-champion", {}, {})
    champ = train_model(ctx, run, str(ds / "data.yaml"), resolve_model_source("yolo11p.yaml"),
                        CLASSES, str(tmp / "runs"), tp, epochs=25, lr0=0.01)  # fmt: skip
    run = start_training_run(ctx, "cvloop", "rollout-test-better", {}, {})
    better = train_model(ctx, run, str(ds / "data.yaml"), champ.best_pt, CLASSES,
                         str(tmp / "runs"), tp, epochs=10, lr0=0.001)  # fmt: skip
    maps = [evaluate(Path(m.best_pt), ho / "data.yaml", imgsz=128, device="cpu",
                     out_dir=tmp / "eval", name=n).map50_95
            for n, m in (("champion", champ), ("better", better))]  # fmt: skip
    reg = context().registry
    old = reg.alias_version("champion")
    version = register_files(tmp, "rollout-test-champion", champ.best_pt, champ.onnx, CLASSES, 128,
                        old)  # fmt: skip
    reg.set_alias("champion", version)
    reg.delete_alias("challenger")
    store = context().store
    write_manifest(store, single(version, stage="stable"), who="test",
                   reason=f"test: v{version} serves for the rollout tests")  # fmt: skip
    yield Trained(version, "", better.best_pt, better.onnx, *maps)
    reg.set_alias("champion", old)
    write_manifest(store, single(old, stage="stable"), who="test",
                   reason=f"test: v{old} serves again after the rollout tests")  # fmt: skip


def _audit_labels(b, day: int) -> int:
    """Reviewed labels for the frames of one served day (the weekly audit's kind), from the
    fleet's ground truth: the labels a careful reviewer would give."""
    from cvloop.adapters.label_store import LabeledFrame, write_labels
    from cvloop.core.frames import LabelBox

    frames = []
    for path in sorted((b.stack.home / "fleet-truth").glob(f"*/{_day(day)}.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            ts = dt.datetime.fromtimestamp(r["ts_ms"] / 1000, dt.UTC)
            frames.append(LabeledFrame(ts, r["camera"], r["frame_key"],
                                       [LabelBox(*x) for x in r["boxes"]], "audit",
                                       "test: fleet ground truth"))  # fmt: skip
    write_labels(context().store, frames)
    return len(frames)


def _checks(out: dict) -> dict[str, dict]:
    return {c["name"]: c for c in out["canary"]["checks"]}


def _serve(b, day: int, *extra: str) -> dict:
    out = b.stack.cli("fleet", "serve", "--start", _day(day), "--days", "1", *extra, env=b.env)
    return _json_tail(out.stdout)


def _poison_the_log(log: Path, day: str) -> dict:
    """What a fleet's log can hold besides good parts: a zero-byte part and one of rows from
    another day in the stage's partition, a part in a folder that names no date, and a
    far-future partition (a writer's clock years ahead). Returns the paths (relative to the
    log) of the bad ones and of the far-future one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = sorted((log / f"date={day}").glob("*.parquet"))[0]
    table = read_parquet(good.read_bytes())
    (log / f"date={day}" / "part-zero.parquet").write_bytes(b"")
    ts = pa.array(
        [dt.datetime(2031, 1, 1, tzinfo=dt.UTC)] * table.num_rows, table.schema.field("ts").type
    )
    pq.write_table(table.set_column(0, "ts", ts), log / f"date={day}" / "part-elsewhen.parquet")
    (log / "date=bogus").mkdir()
    pq.write_table(table, log / "date=bogus" / "part-odd.parquet")
    (log / "date=2999-01-01").mkdir()
    far = pa.array([dt.datetime(2999, 1, 1, 12, tzinfo=dt.UTC)] * table.num_rows, ts.type)
    pq.write_table(table.set_column(0, "ts", far), log / "date=2999-01-01" / "part-far.parquet")
    return {"bad": [f"date={day}/part-zero.parquet", f"date={day}/part-elsewhen.parquet",
                    "date=bogus/part-odd.parquet"],
            "future": "date=2999-01-01/part-far.parquet"}  # fmt: skip


def _last_tags(version: str) -> dict:
    """What the last tick mirrored on a version (the canary's verdict and evidence)."""
    return dict(context().registry.get_version(version).tags)


def _state():
    from registry.manifest import read_manifest

    m = read_manifest(context().store)
    reg = context().registry
    aliases = {a: reg.alias_version(a) for a in ("champion", "challenger", "previous-champion")}
    return m, aliases, reg


def test_a_better_challenger_goes_10_50_approval_100_and_becomes_champion(
    fleet, trained, stack_client_env, tmp_path, monkeypatch
):
    from cvloop.stages import rollout as ro

    b = fleet
    assert trained.better_map > trained.champion_map  # better on the labeled holdout
    _, before, _ = _state()
    old = before["champion"]
    assert old == trained.champion
    good = register_files(tmp_path, "rollout-better", trained.better_pt, trained.better_onnx,
                     CLASSES, 128, old)  # fmt: skip
    b.stack.cli("rollout", "start", good, env=b.env)
    m, aliases, _ = _state()
    assert m.stage == "canary-10" and m.share_of(good) == 10 and m.share_of(old) == 90
    assert aliases["challenger"] == good
    # no traffic served yet: the canary sample is too small, the stage holds
    assert _tick(b)["status"] in ("hold",)
    served = _serve(b, 0)
    assert served["frames"] > 0
    out = _tick(b)
    assert out["status"] == "advance", out["reason"]
    # the pairing decided: both models on the same frames, per class
    c = out["canary"]
    assert c["evidence"] == "pairing" and c["quality"]["frames"] > 0
    kept = {k: v["kept_share"] for k, v in c["quality"]["classes"].items() if v["kept_share"]}
    assert set(kept) == set(CLASSES) and min(kept.values()) > 0.6, kept
    assert _checks(out)["confidence"]["kind"] == "signal"
    m, _, reg = _state()
    assert m.stage == "canary-50" and m.share_of(good) == 50
    tags = reg.get_version(good).tags
    assert tags["cvloop.rollout.evidence"] == "pairing"
    assert set(json.loads(tags["cvloop.rollout.kept_share"])) == set(CLASSES)
    # reviewed labels of the served frames (the weekly audit's kind) beat the pairing
    assert _audit_labels(b, 1) >= 50
    _serve(b, 1)
    out = _tick(b)
    assert out["canary"]["evidence"] == "labels", out["reason"]
    lab = out["canary"]["quality"]["labels"]
    assert lab["challenger"]["map50_95"] > lab["champion"]["map50_95"]
    assert _checks(out)["labels:map50_95"]["passed"]
    assert _checks(out)["kept:all classes"]["kind"] == "signal"  # reported, not deciding
    m, _, reg = _state()
    assert m.stage == "canary-50" and m.extra["approval_requested_at"]  # waits for the ML lead
    assert reg.get_version(good).tags["cvloop.rollout.status"] == "awaiting-approval"
    assert reg.get_version(good).tags["cvloop.rollout.evidence"] == "labels"
    assert _tick(b)["status"] == "await_approval"  # holds at 50 % without approval
    b.stack.cli("approve", good, "--by", "Ada Lead", env=b.env)
    assert reg.get_version(good).tags["cvloop.approved_by"] == "Ada Lead"
    _tick(b)
    m, _, _ = _state()
    assert m.stage == "canary-100" and m.share_of(good) == 100
    assert m.reason.endswith("approved by Ada Lead")  # the history says who let it through
    _serve(b, 2)
    # at 100 % the champion serves nothing: both models are re-timed on the same frames
    measured = ro.measure_tick(context(), "test")
    lat = {x.name: x for x in measured.canary.checks}["p95_latency"]
    assert "re-timed in this tick on the same" in lat.detail, lat.detail
    assert measured.canary.status == "ok", measured.canary.reasons
    # the promotion writes the manifest first: a failed write moves nothing ...
    real_write, real_finish = ro.write_manifest, ro._finish_promotion
    monkeypatch.setattr(
        ro, "write_manifest", lambda *a, **k: (_ for _ in ()).throw(OSError("disk"))
    )
    with pytest.raises(OSError):
        ro.rollout_tick(context(), "test")
    m, aliases, _ = _state()
    assert aliases["champion"] == old and m.stage == "canary-100", _last_tags(good)
    monkeypatch.setattr(ro, "write_manifest", real_write)
    # ... and a crash between the manifest and the aliases ...
    monkeypatch.setattr(
        ro, "_finish_promotion", lambda *a, **k: (_ for _ in ()).throw(OSError("MLflow down"))
    )
    with pytest.raises(OSError):
        ro.rollout_tick(context(), "test")
    m, aliases, _ = _state()
    assert m.stage == "stable" and m.share_of(good) == 100 and aliases["champion"] == old
    monkeypatch.setattr(ro, "_finish_promotion", real_finish)
    # ... is finished by the next tick: one consistent state, the alias moved once
    done = ro.rollout_tick(context(), "test")
    assert done["status"] == "idle" and done["promoted"] == good, done
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
    assert prod[0]["rollout_evidence"] == "labels"
    stages = [h["stage"] for h in status["history"]]
    assert stages[:4] == ["stable", "canary-100", "canary-50", "canary-50"]
    text = b.stack.cli("status", env=b.env).stdout
    assert f"v{good}  100%  [champion]" in text and "ROLLOUT HISTORY" in text
    assert "canary decided by labels" in text
    # manual rollback: the previous champion serves again at once, even when the command is
    # killed (SIGKILL) at each step boundary and run again
    why = ["rollback", "--reason", "test: back to the baseline"]
    killed = b.stack.cli(*why, env={**b.env, "CVLOOP_CRASH_AT": "rollback:manifest-written"},
                         check=False)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    m, aliases, _ = _state()
    assert m.share_of(old) == 100 and aliases["champion"] == good  # traffic moved first
    killed = b.stack.cli(*why, env={**b.env, "CVLOOP_CRASH_AT": "rollback:champion-moved"},
                         check=False)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    m, aliases, _ = _state()
    assert aliases["champion"] == old and aliases["previous-champion"] == old
    b.stack.cli(*why, env=b.env)  # run again: finishes what was left
    m, aliases, reg = _state()
    assert aliases["champion"] == old and aliases["previous-champion"] is None
    assert m.share_of(old) == 100 and m.extra["rolled_back"] == good
    assert reg.get_version(good).tags["cvloop.rollout.status"] == "rolled-back"
    assert reg.get_version(old).tags["cvloop.rollout.status"] == "champion"
    from registry.manifest import history

    rollbacks = [
        h for h in history(context().store) if h.reason.startswith(f"manual rollback of v{good}")
    ]
    assert len(rollbacks) == 1  # the manifest written once, not once per attempt
    again = b.stack.cli(*why, env=b.env, check=False)  # done: a fourth run changes nothing
    assert again.returncode != 0 and "nothing to roll back to" in again.stdout + again.stderr


def test_a_label_map_mix_up_is_rolled_back_at_10_percent_by_the_quality_check(
    fleet, trained, stack_client_env, tmp_path
):
    """The champion with two class rows of its head swapped (crate <-> barrel), as a
    retrain with a mixed-up class order would ship: the same boxes, confidences, volume
    and speed — every guard passes and the confidence histogram does not move — but it
    names two classes wrong. Only the quality check can see it."""
    from cvloop.adapters.head import resize_checkpoint
    from cvloop.adapters.training import export_onnx

    b = fleet
    champ = context().registry.fetch(trained.champion)
    pt, _ = resize_checkpoint(champ.pt, CLASSES, tmp_path / "swapped.pt",
                              {"crate": "barrel", "barrel": "crate"})  # fmt: skip
    onnx = export_onnx(pt, 128, tmp_path / "swapped.onnx")
    bad = register_files(tmp_path, "rollout-swapped", pt, onnx, CLASSES, 128, champ.version)
    b.stack.cli("rollout", "start", bad, env=b.env)
    _serve(b, 3)
    out = _tick(b)
    assert out["status"] == "rollback", out["reason"]
    c = out["canary"]
    assert c["evidence"] == "pairing"
    checks = _checks(out)
    assert all(x["passed"] for x in checks.values() if x["kind"] == "guard"), checks
    assert "no marked shift" in checks["confidence"]["detail"]  # the histogram did not move
    failed = {x["name"] for x in checks.values() if not x["passed"]}
    assert failed == {"kept:all classes", "kept:crate", "kept:barrel"}, failed
    kept = c["quality"]["classes"]
    assert kept["crate"]["kept_share"] == 0 and kept["barrel"]["kept_share"] == 0
    assert kept["cone"]["kept_share"] == 1.0
    m, aliases, reg = _state()
    assert m.stage == "stable" and m.share_of(trained.champion) == 100
    assert aliases["challenger"] is None and aliases["champion"] == trained.champion
    tags = reg.get_version(bad).tags
    assert tags["cvloop.rollout.status"] == "rolled-back"
    assert "canary breach at 10%: kept:" in tags["cvloop.rollout.reason"]
    assert tags["cvloop.rollout.evidence"] == "pairing"
    # without the quality evidence the guards alone would have let it through
    assert [x["name"] for x in c["checks"] if x["kind"] == "guard"] == [
        "error_rate",
        "p95_latency",
        "volume",
        "slo",
    ]


def test_an_identical_challenger_passes(fleet, trained, stack_client_env, tmp_path):
    b = fleet
    # a candidate gated against a champion that no longer serves is not canaried
    champ = context().registry.fetch_alias("champion")
    assert champ.version != "1"
    stale = register_files(tmp_path, "rollout-stale-parent", champ.pt, champ.onnx, champ.classes,
                           champ.imgsz, "1")  # fmt: skip
    refused = b.stack.cli("rollout", "start", stale, env=b.env, check=False)
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "gated against v1" in said and "--force" in said, said
    same = register_copy_of_champion(tmp_path, "rollout-same")
    b.stack.cli("rollout", "start", same, env=b.env)
    _serve(b, 4)
    out = _tick(b)
    assert out["status"] == "advance", out["reason"]
    assert out["canary"]["evidence"] == "pairing"
    classes = out["canary"]["quality"]["classes"]
    assert {v["kept_share"] for v in classes.values() if v["kept_share"] is not None} == {1.0}
    # a tick that measured before a rollback landed cannot undo it (compare-and-swap on the
    # manifest): its write is refused and it says so
    from cvloop.core.rollout import Decision
    from cvloop.stages import rollout as ro

    measured = ro.measure_tick(context(), "test")  # reads the 50 % manifest and the log ...
    b.stack.cli("rollback", "--reason", "test: identical challenger, enough", env=b.env)
    late = ro.apply_tick(context(), measured, Decision("promote", "a late tick"), "test")
    assert late["status"] == "stale", late
    assert (
        "changed after this writer read it" in late["reason"]
        and "manual rollback" in late["reason"]
    )
    m, aliases, _ = _state()
    assert m.stage == "stable" and aliases["champion"] == trained.champion
    assert m.share_of(same) == 0 and aliases["challenger"] is None


def test_a_slow_error_prone_challenger_is_rolled_back_at_10_percent(
    fleet, trained, stack_client_env, tmp_path
):
    b = fleet
    _, before, _ = _state()
    bad = register_slower_copy_of_champion(tmp_path, "rollout-bad")
    b.stack.cli("rollout", "start", bad, env=b.env)
    _serve(b, 5, "--errors", f"{bad}=0.2")
    poisoned = _poison_the_log(b.store / "inference-log", _day(5))
    out = _tick(b)
    m, aliases, reg = _state()
    # the poisoned parts did not stop the tick: the breach rolled back within this one tick
    assert m.stage == "stable" and m.share_of(before["champion"]) == 100
    quarantine = b.store / "inference-log-quarantine"
    for rel in poisoned["bad"]:
        assert not (b.store / "inference-log" / rel).exists(), rel  # moved out of the log ...
        assert (quarantine / rel).exists() and (quarantine / f"{rel}.reason.json").exists()
    reasons = {json.loads((quarantine / f"{r}.reason.json").read_text())["reason"]
               for r in poisoned["bad"]}  # fmt: skip
    assert any("zero bytes" in r for r in reasons) and any("date=YYYY-MM-DD" in r for r in reasons)
    assert any("rows have a ts outside" in r for r in reasons)
    # ... and the far-future partition was not taken as the log's clock (nor moved)
    assert (b.store / "inference-log" / poisoned["future"]).exists()
    import shutil

    shutil.rmtree(quarantine)  # later rollouts of this module start on a clean log
    shutil.rmtree((b.store / "inference-log" / poisoned["future"]).parent)
    assert aliases["challenger"] is None and aliases["champion"] == before["champion"]
    tags = reg.get_version(bad).tags
    assert tags["cvloop.rollout.status"] == "rolled-back"
    assert "canary breach at 10%" in tags["cvloop.rollout.reason"]
    assert "error_rate" in tags["cvloop.rollout.reason"]
    # the served p95 tripped the screen and the same frames through both models confirmed it
    assert "p95_latency" in tags["cvloop.rollout.reason"]
    assert "the model is slower" in tags["cvloop.rollout.reason"]
    assert tags["cvloop.rollout.evidence"] == "guards"
    assert out["status"] == "rollback"  # the scheduled tick is paused: this one acted

    arts = prefect_rest(b.stack.prefect_api).post(
        "/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["rollout-breach"]}}},
    )
    (art,) = [a for a in arts if f"v{bad} rollback" in a["data"]]
    assert "error_rate" in art["data"] and "**Decided by: guards**" in art["data"]
    # a version rolled back is not started again without --force, and says why
    proc = b.stack.cli("rollout", "start", bad, env=b.env, check=False)
    assert proc.returncode != 0
    assert "was rolled-back before" in proc.stdout + proc.stderr and "--force" in proc.stderr


def test_a_shadow_stage_judges_copies_of_live_frames_before_any_traffic(
    fleet, trained, stack_client_env, tmp_path
):
    """rollout.shadow_hours > 0: the challenger first answers no frame; its detections on a
    copy of each frame go to the shadow log, and the canary judges them against the
    champion's on the same frames before 10 % of the traffic moves."""
    import yaml

    from cvloop.adapters.inference_log import SHADOW_PREFIX, read_log
    from cvloop.config.params import load_params, with_overrides

    b = fleet
    params = with_overrides(load_params(b.env["CVLOOP_PARAMS"]), {"rollout": {"shadow_hours": 8}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump(by_alias=True,
                                                                           mode="json")))  # fmt: skip
    env = dict(b.env, CVLOOP_PARAMS=str(tmp_path / "params.yaml"))
    same = register_copy_of_champion(tmp_path, "rollout-shadow")
    b.stack.cli("rollout", "start", same, env=env)
    m, aliases, _ = _state()
    champ = aliases["champion"]
    assert m.stage == "shadow" and m.shadow == [same]
    assert [(a.version, a.share) for a in m.allocations] == [(champ, 100.0)]
    served = _serve(b, 6)
    assert served["by_version"] == {champ: served["frames"]}  # the shadow answered nothing
    day = dt.date.fromisoformat(_day(6))
    live = read_log(context().store, day, day + dt.timedelta(days=1))
    copies = read_log(context().store, day, day + dt.timedelta(days=1), prefix=SHADOW_PREFIX)
    assert set(copies.column("model_version").to_pylist()) == {same}
    assert sorted(copies.column("frame_key").to_pylist()) == sorted(
        live.column("frame_key").to_pylist())  # fmt: skip
    out = _json_tail(b.stack.cli("rollout", "tick", env=env).stdout)
    assert out["status"] == "advance" and "canary ok in shadow" in out["reason"], out["reason"]
    assert out["canary"]["evidence"] == "pairing"
    m, _, _ = _state()
    assert m.stage == "canary-10" and m.shadow == []
    assert {a.version: a.share for a in m.allocations} == {champ: 90.0, same: 10.0}
    b.stack.cli("rollback", "--reason", "test: shadow stage seen, enough", env=env)
    m, aliases, _ = _state()
    assert m.stage == "stable" and aliases["champion"] == champ


def test_the_weekly_review_shows_the_red_and_the_changes(fleet):
    b = fleet
    out = b.stack.cli("weekly", env=b.env).stdout
    assert "## Is anything red?" in out
    assert "## Service level objectives" in out  # attainment and error budget per version
    assert "rollback: canary breach at 10%" in out  # the breach above
    assert "| canary-10 |" in out  # the deployment changes of the week, with their reasons
    assert "manual rollback of v" in out  # who rolled back, and why
