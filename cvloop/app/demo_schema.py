"""``cvloop demo --chapter new-class``: the quarter's schema event on the demo's stack.

After ``cvloop demo`` (a champion that knows crate, barrel and cone), the next month:

1. the fleet starts to show a fourth kind of object, ``pallet``, at some cameras
   (scenario ``new-object``), and the frames reach the frame store;
2. the operator adds the class with three example frames and the cameras that show it
   (deployment ``schema/change``, run by the worker): schema-v2, dataset and holdout
   labels migrated into new versions, the labeling config of open projects updated;
3. a retrain (deployment ``retrain/on-drift``, started for the schema change) routes the
   seed frames and the low-confidence frames of those cameras to review; the simulated
   reviewer now draws pallets too (the project offers the label);
4. the fine-tune starts from the champion's best.pt with the head resized to four classes
   (the three old classes keep their learned outputs), and the gates judge ``pallet``
   against its own minimum AP (no champion baseline) and the old classes against the
   champion;
5. the chapter prints the verdict, the per-class APs, and the schema version that the
   dataset, holdout and model version name.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import replace

from cvloop.app.demo_steps import _ctx
from cvloop.app.deploy import run_and_wait
from cvloop.config.settings import Settings
from cvloop.core.errors import CvloopError
from registry.names import (
    CANDIDATE_VERSION,
    CLASSES,
    DATASET_VERSION,
    FLOW_RUN_ID,
    GATE,
    HEAD_RESIZE,
    HOLDOUT_VERSION,
    SCHEMA_VERSION,
)

NEW_CLASS = "pallet"


def run_new_class(settings: Settings, size, out=print) -> dict:
    """The chapter on a running demo stack; returns what it measured."""
    from cvloop.app.demo import demo_params
    from cvloop.app.demo_report import _candidate_lines, _dataset_lines
    from cvloop.app.demo_steps import _fleet, _follow, _generate, _review, _wait_for_versions
    from cvloop.app.deploy import deploy_all
    from cvloop.app.services import ServiceManager
    from cvloop.sim.fleet.generate import Scenario
    from cvloop.sim.fleet.scene import NEW_OBJECT

    assert NEW_OBJECT == NEW_CLASS
    from cvloop.app.demo import _merge

    size = replace(size, params=_merge(size.params, size.new_class_params))
    demo_params(settings, size)
    ServiceManager(settings, out=out).up()
    deploy_all(settings)
    phases: dict[str, float] = {}
    cameras = size.new_class_cameras
    start = dt.date.today() + dt.timedelta(days=30)  # the next month, after the rollout days
    days = size.new_class_days

    t = _phase(out, f"the next month: {', '.join(cameras)} start to show pallets ({days} days)")
    base = replace(_fleet(size, start, days), bursts_per_day=size.new_class_bursts_per_day)
    cfg = replace(base, scenarios=(Scenario("new-object", start, None, tuple(cameras)),))
    rep = _generate(settings, cfg, start, days, out)
    out(f"  {rep.frames_written} frames, with the new object: "
        f"{rep.scenario_frames.get('new-object', 0)}")  # fmt: skip
    seeds = _seed_keys(settings, cameras, start, days)
    phases["simulate"] = time.perf_counter() - t

    t = _phase(out, f"the operator adds the class '{NEW_CLASS}' (deployment schema/change)")
    run_id, state = run_and_wait(
        "schema-change/change",
        {"op": "add", "name": NEW_CLASS, "seeds": seeds, "cameras": list(cameras),
         "why": "pallets appear at the loading bays", "who": "demo operator (simulated)"},
        timeout_s=900, out=out,
    )  # fmt: skip
    if state != "Completed":
        raise CvloopError(
            f"schema-change run {run_id} ended {state}",
            fix=f"open {settings.prefect_ui_url}/runs/flow-run/{run_id}",
        )
    from cvloop.stages.schema import schema_log

    schema = schema_log(_ctx()).current
    out(f"  {schema.tag}: {', '.join(schema.classes)}; {len(seeds)} seed frames")
    phases["schema change"] = time.perf_counter() - t

    t = _phase(out, "a retrain for the new class: seeds and likely frames go to review")
    end = start + dt.timedelta(days=days)
    retrain_run = _start_retrain(settings, end.isoformat(), days)
    _, state = _follow(settings, retrain_run, out)
    if state != "Suspended":
        raise CvloopError(f"the retrain {retrain_run} ended {state} before the review")
    _review(settings, retrain_run, out)
    _wait_for_versions(settings, retrain_run, out)
    for line in _dataset_lines(settings, retrain_run):
        out(f"  {line}")
    phases["retrain+review"] = time.perf_counter() - t

    t = _phase(out, "fine-tune with the head resized to four classes, gate, register")
    _, state = _follow(settings, retrain_run, out, timeout_s=5400)
    for line in _candidate_lines(settings, retrain_run):
        out(f"  {line}")
    phases["candidate"] = time.perf_counter() - t
    result = _result(settings, retrain_run)
    result["phases"] = phases
    result["retrain_run"] = retrain_run
    out("  " + json.dumps({k: v for k, v in result.items() if k != "phases"}))
    out("phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()))
    return result


def _phase(out, name: str) -> float:
    out(f"\n==> {name}")
    return time.perf_counter()


def _seed_keys(settings: Settings, cameras, start: dt.date, days: int, n: int = 3) -> list[str]:
    """The operator's examples: the first frames of the new cameras' first day that show a
    pallet (from the fleet's ground truth, as a person would pick them by eye)."""
    from cvloop.sim.fleet.reviewer import TruthIndex

    store, truth = _ctx().store, TruthIndex(_ctx().storage(settings.fleet_truth_uri))
    keys = []
    for day in (start + dt.timedelta(days=i) for i in range(days)):
        for cam in cameras:
            for key in sorted(store.keys(f"frames/{cam}/{day.isoformat()}/")):
                boxes = truth.boxes(key, cam) or []
                if any(b.label == NEW_CLASS for b in boxes):
                    keys.append(key)
                if len(keys) >= n:
                    return keys
    return keys


def _start_retrain(settings: Settings, window_end: str, days: int) -> str:
    from prefect.deployments import run_deployment

    fr = run_deployment(
        "retrain/on-drift",
        parameters={"window_end": window_end, "days": days, "triggers": ["schema-change"]},
        timeout=0,
    )
    return str(fr.id)


def _result(settings: Settings, flow_run_id: str) -> dict:
    """The candidate of the run: verdict, pallet AP50, old classes' APs vs the champion,
    and the schema version of its dataset, holdout and model version."""
    from cvloop.adapters.datasets import folder_schema
    from cvloop.adapters.versioning import DATASET_DIR, HOLDOUT_DIR

    ctx = _ctx()
    runs = ctx.tracker.find_runs(ctx.params.registry.experiment,
                                 tags={FLOW_RUN_ID: flow_run_id}, max_results=1)  # fmt: skip
    v = runs[0].tags.get(CANDIDATE_VERSION) if runs else None
    if not v:
        return {"candidate": None}
    mv = ctx.registry.get_version(v)
    train_run = mv.run_id
    report = json.loads(ctx.tracker.download(train_run, "gate/report.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    root = ctx.data_repo.root
    return {
        "candidate": v,
        "gate": mv.tags.get(GATE),
        "classes": json.loads(mv.tags.get(CLASSES, "[]")),
        "model_schema": mv.tags.get(SCHEMA_VERSION),
        "dataset_schema": f"schema-v{folder_schema(root / DATASET_DIR)}",
        "holdout_schema": f"schema-v{folder_schema(root / HOLDOUT_DIR)}",
        "dataset_version": mv.tags.get(DATASET_VERSION),
        "holdout_version": mv.tags.get(HOLDOUT_VERSION),
        "class_gates": {
            k.split(":", 1)[1]: {"passed": c["passed"], "detail": c["detail"]}
            for k, c in checks.items()
            if k.startswith("class_ap:")
        },
        "head_resize": ctx.tracker.get_run(train_run).tags.get(HEAD_RESIZE),
    }
