"""The steps of ``cvloop demo`` that talk to the stack: the fleet it renders and serves, the
runs it follows, the simulated reviewer and approver, what it prints about each step.

Everything goes through the demo's one :class:`~cvloop.context.Context` (:func:`_ctx`),
built once its params are written."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace

from cvloop.app.deploy import run_and_wait
from cvloop.config.settings import Settings
from cvloop.context import Context
from cvloop.core.errors import CvloopError

DEMO_APPROVER = "demo ML lead (simulated approval)"


_CONTEXT: list[Context] = []


def _ctx() -> Context:
    """The demo's composition root: one per ``cvloop demo`` call, built once its params are
    written (every helper below talks to the stack through it)."""
    if not _CONTEXT:
        from cvloop.app.common import client_context

        _CONTEXT.append(client_context())
    return _CONTEXT[0]


def _wait_for_event_run(
    settings: Settings, flow: str, after_s: float, timeout_s: float = 120
) -> dict | None:
    """The first run of ``flow`` created after ``after_s`` (epoch seconds), if one appears."""
    from cvloop.adapters.prefect_rest import PrefectRest

    since = dt.datetime.fromtimestamp(after_s, dt.UTC).isoformat()
    deadline = time.time() + timeout_s
    body = {
        "flows": {"name": {"any_": [flow]}},
        "flow_runs": {"expected_start_time": {"after_": since}},
        "sort": "EXPECTED_START_TIME_DESC",
        "limit": 1,
    }
    with PrefectRest(settings.prefect_api_url) as api:
        while time.time() < deadline:
            runs = api.post("/flow_runs/filter", json=body)
            if runs:
                return runs[0]
            time.sleep(2)
    return None


def _flow_run(settings: Settings, flow_run_id: str) -> dict:
    from cvloop.adapters.prefect_rest import PrefectRest

    with PrefectRest(settings.prefect_api_url) as api:
        return api.get(f"/flow_runs/{flow_run_id}")


def _follow(
    settings: Settings, flow_run_id: str, out, timeout_s: float = 1800, pause_ends: bool = True
):
    """Print the run's state changes until it ends (or pauses, with ``pause_ends``)."""
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        fr = _flow_run(settings, flow_run_id)
        state = fr["state"]["name"] if fr.get("state") else "Unknown"
        if state != last:
            out(f"  retrain: {state}")
            last = state
        ends = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED", *(("PAUSED",) if pause_ends else ()))
        if fr.get("state", {}).get("type") in ends:
            return flow_run_id, state
        time.sleep(2)
    return flow_run_id, "still running"


PLANTED_BAD = 3


def _review(settings: Settings, flow_run_id: str, out) -> None:
    """Review every task of the run's queue as a person would (through the API), then let
    the review/watch deployment resume the run."""
    import json

    from cvloop.config.params import load_params
    from cvloop.sim.fleet.reviewer import REVIEWER, SECOND_REVIEWER, simulate_review
    from cvloop.stages.prefilter import selection_line

    store = _ctx().store
    info = json.loads(store.get_text(f"runs/retrain/{flow_run_id}/review-queue.json"))
    summary = f"runs/retrain/{flow_run_id}/selection-summary.json"
    if store.exists(summary):
        out(f"  selection: {selection_line(json.loads(store.get_text(summary)))}")
    out(f"  review queue: {info['project_url']} ({info['tasks']} frames)")
    size = load_params().fleet.image_size
    rep = simulate_review(
        _ctx().labelstudio,
        info["project_id"],
        _ctx().storage(settings.fleet_truth_uri),
        plant_bad=PLANTED_BAD,
        width=size,
        height=size,
        jitter_px=REVIEW_JITTER_PX,
        miss_rate=REVIEW_MISS_RATE,
        signed=True,
    )
    out(
        f"  SIMULATED reviewer (Label Studio user '{REVIEWER[1]} {REVIEWER[2]}', "
        f"{REVIEWER[0]}): {rep.submitted} frames reviewed from the fleet's ground truth; "
        f"{rep.jittered} boxes off by ~{REVIEW_JITTER_PX} px, {rep.missed} small boxes "
        f"overlooked, bad boxes planted: {sorted(rep.planted.values())}"
    )
    if rep.second:
        out(f"  SIMULATED second reviewer ('{SECOND_REVIEWER[1]}'): {rep.second} double-labeled "
            "frames annotated again, independently (inter-annotator agreement)")  # fmt: skip
    if rep.no_truth:
        out(f"  {rep.no_truth} frame(s) have no fleet ground truth: the simulation leaves them "
            "unreviewed")  # fmt: skip
    watch_run, state = run_and_wait("review-watch/watch", timeout_s=600, out=out)
    out(f"  review/watch run {watch_run}: {state}")
    progress = f"runs/retrain/{flow_run_id}/review-progress.json"
    if store.exists(progress):
        p = json.loads(store.get_text(progress))["progress"]
        agree = [f"{n} {c['agreement']:.2f} ({c['double_boxes']} boxes)"
                 for n, c in p["classes"].items() if c.get("agreement") is not None]  # fmt: skip
        out(f"  agreement of two reviewers on {p.get('double_frames', 0)} frames: "
            f"{', '.join(agree) or 'not measured'}")  # fmt: skip


def _wait_for_versions(settings: Settings, flow_run_id: str, out, timeout_s: float = 900) -> str:
    """Wait until the resumed retrain has versioned the dataset (or ended); a run still
    waiting for its review by then is an error that says why it waits."""
    import json

    store = _ctx().store
    progress = f"runs/retrain/{flow_run_id}/review-progress.json"
    deadline = time.time() + timeout_s
    state, why = "Unknown", "no review check recorded"
    while time.time() < deadline:
        fr = _flow_run(settings, flow_run_id)
        state = fr["state"]["name"] if fr.get("state") else "Unknown"
        if store.exists(f"runs/retrain/{flow_run_id}/versions.json"):
            return state
        kind = fr.get("state", {}).get("type")
        if kind in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        if store.exists(progress):
            check = json.loads(store.get_text(progress))
            why = check.get("reason", why)
            if kind == "PAUSED" and not check.get("go"):
                break  # the review/watch check (run before this wait) said: not yet
        time.sleep(2)
    raise CvloopError(
        f"the retrain {flow_run_id} is still {state} after the review: {why}",
        fix=f"open {settings.prefect_ui_url}/runs/flow-run/{flow_run_id} and its review "
        f"queue; `cvloop review go {flow_run_id}` lets it go on with the frames reviewed",
    )


def _fleet(size, start: dt.date, days: int):
    """The demo's fleet: ``night`` drift at the drift cameras from the middle of the
    simulated weeks on (it goes on during the rollout days)."""
    from cvloop.config.params import load_params
    from cvloop.sim.fleet.generate import FleetConfig, Scenario, cameras_named

    p = load_params()
    drift = Scenario("night", start + dt.timedelta(days=days // 2), None, size.drift_cameras)
    return FleetConfig(
        seed=p.fleet.seed,
        cameras=cameras_named(p.fleet.cameras),
        image_size=p.fleet.image_size,
        bursts_per_day=size.bursts_per_day,
        frames_per_burst=size.frames_per_burst,
        burst_fps=p.fleet.fps,
        scenarios=(drift,),
        classes=tuple(p.classes),
    )


def _generate(settings: Settings, cfg, start: dt.date, days: int, out):
    from cvloop.sim.fleet.generate import generate_fleet

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 5) == 0:
            out(f"  {done}/{total} camera-days rendered")

    import functools

    ctx = _ctx()
    return generate_fleet(
        cfg,
        start,
        days,
        ctx.frame_store,
        functools.partial(ctx.storage, settings.fleet_truth_uri),
        workers=2,
        progress=progress,
    )


def _simulate(settings: Settings, size, out) -> tuple[dt.date, int]:
    days = size.weeks * 7
    start = dt.date.today() - dt.timedelta(days=days)
    rep = _generate(settings, _fleet(size, start, days), start, days, out)
    out(
        f"  {rep.frames_written} new frames ({rep.frames_skipped} already there), "
        f"night frames: {rep.scenario_frames.get('night', 0)}"
    )
    return start, days


def _rolling_out() -> bool:
    from registry.manifest import read_manifest

    m = read_manifest(_ctx().store)
    return m is not None and m.stage != "stable"


def _rollout(settings: Settings, size, out) -> str:
    """Each stage: the fleet captures and serves a day (the inference log grows), then the
    rollout/tick deployment judges it. The ML lead's approval is simulated, and says so."""
    from cvloop.config.params import load_params
    from cvloop.core.rollout import K_APPROVAL_ASKED, K_CHALLENGER
    from cvloop.sim.fleet.serve import audit_routing, serve_window_http, wait_for_routing
    from cvloop.stages.rollout import approve
    from registry.manifest import read_manifest
    from registry.names import APPROVED_BY, CHAMPION

    store = _ctx().store
    url = settings.serve_url
    route_by = load_params().serve.route_by
    server_pid = _server_pid(url)
    day = dt.date.today()
    cfg = replace(
        _fleet(size, day - dt.timedelta(days=size.weeks * 7), size.weeks * 7),
        bursts_per_day=size.rollout_bursts_per_day,
    )

    reg = _ctx().registry
    m = None
    for _ in range(6 * len(load_params().rollout.plan()[0])):  # holds for a small sample repeat
        m = read_manifest(store)
        if m is None or m.stage in ("stable", "rolled-back"):
            break
        version = m.extra[K_CHALLENGER]
        if m.extra.get(K_APPROVAL_ASKED) and not reg.get_version(version).tags.get(APPROVED_BY):
            approve(_ctx(), version, DEMO_APPROVER, note="cvloop demo: simulated ML lead approval")
            out(f"  v{version}: approved by '{DEMO_APPROVER}' (tag {APPROVED_BY}; in real life "
                "the ML lead sets it in MLflow or runs `cvloop approve`)")  # fmt: skip
        else:
            _generate(settings, cfg, day, 1, lambda _l: None)
            wait_for_routing(url, m)
            rep = serve_window_http(store, day, 1, url)
            audit = audit_routing(store, day, 1, m, route_by)
            split = ", ".join(f"v{a.version} {a.share:g}%" for a in m.allocations)
            out(f"  {day}: {rep.frames} frames sent to cvloop serve ({url}; {split}): the log it "
                f"wrote holds {audit['rows']} rows, by version {audit['by_version']}, "
                f"{audit['misrouted']} not where the manifest routes them")  # fmt: skip
            if audit["misrouted"] or not rep.frames - rep.errors <= audit["rows"] <= rep.frames:
                raise CvloopError(f"cvloop serve did not serve {day} as the manifest routes it: "
                                  f"{audit}", fix="read the serve service's log")  # fmt: skip
            day += dt.timedelta(days=1)
        run_id, _ = run_and_wait("rollout/tick", timeout_s=600, out=lambda _l: None)
        after = read_manifest(store)
        out(f"  rollout/tick: {after.stage}: {after.reason}")
        out(f"    {_canary_line(reg.get_version(version).tags)}")
        out(f"    {settings.prefect_ui_url}/runs/flow-run/{run_id} (artifact rollout-status)")
    m = read_manifest(store)
    if m is not None and m.stage == "stable":
        champion = reg.alias_version(CHAMPION)
        routing = wait_for_routing(url, m)
        same = _server_pid(url) == server_pid
        out(f"  cvloop serve now serves v{champion} at 100 % "
            f"({'the same process, no restart' if same else 'a restarted server'}; "
            f"warm: {routing.get('warm')})")  # fmt: skip
    return m.stage if m is not None else "none"


def _server_pid(url: str) -> int | None:
    import httpx

    try:
        return int(httpx.get(f"{url}/healthz", timeout=10).json()["pid"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def _canary_line(tags: dict) -> str:
    """What the last tick's canary said and which evidence decided it (model version tags)."""
    import json

    from registry.names import ROLLOUT_CANARY, ROLLOUT_EVIDENCE, ROLLOUT_KEPT

    kept = json.loads(tags.get(ROLLOUT_KEPT) or "{}")
    shares = ", ".join(f"{k} {v:.0%}" for k, v in kept.items() if v is not None)
    return (
        f"canary {tags.get(ROLLOUT_CANARY, '-')}, decided by {tags.get(ROLLOUT_EVIDENCE, '-')}"
        + (f"; the champion's confident boxes the challenger keeps: {shares}" if shares else "")
    )


def _serve(start: dt.date, days: int, out) -> dict[str, float]:
    from cvloop.sim.fleet.serve import serve_current_manifest

    last = [0.0]

    def progress(msg: str) -> None:
        if time.perf_counter() - last[0] > 10:
            out(msg)
            last[0] = time.perf_counter()

    rep, split = serve_current_manifest(_ctx().store, _ctx().registry, start, days,
                                        progress=progress)  # fmt: skip
    out(f"  {split}")
    return {"frames": rep.frames, "fps": rep.fps}


REVIEW_JITTER_PX = 0.75  # a careful person's box edges


REVIEW_MISS_RATE = 0.02  # small boxes overlooked
