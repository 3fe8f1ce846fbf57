"""``cvloop fleet ...``: the synthetic camera fleet and the simulated serving fleet."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer

fleet_app = typer.Typer(
    help="The synthetic camera fleet: generate frames, serve models, read the inference log.",
    no_args_is_help=True,
)


def _date(value: str | None, default: dt.date) -> dt.date:
    return dt.date.fromisoformat(value) if value else default


def _kv(items: list[str] | None, cast=float) -> dict[str, float]:
    out = {}
    for item in items or []:
        key, _, val = item.partition("=")
        out[key] = cast(val)
    return out


@fleet_app.command("generate")
def generate(
    start: Annotated[
        str | None, typer.Option(help="first day (YYYY-MM-DD); default: --days before today")
    ] = None,
    days: Annotated[int, typer.Option(help="days to simulate")] = 28,
    cameras: Annotated[
        int | None, typer.Option(help="number of cameras (params: fleet.cameras)")
    ] = None,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            "-s",
            help="drift: name@YYYY-MM-DD[..YYYY-MM-DD][:cam-01,cam-02]; names: night, weather, "
            "new-class-look, new-camera (cameras named new-*)",
        ),
    ] = None,
    bursts_per_day: Annotated[int, typer.Option(help="capture events per camera and day")] = 12,
    frames_per_burst: Annotated[int, typer.Option(help="frames per capture event")] = 4,
    burst_fps: Annotated[
        float | None, typer.Option(help="frame rate within an event; default: fleet.fps")
    ] = None,
    videos: Annotated[
        float, typer.Option(help="also write a clip of N seconds per camera and day")
    ] = 0.0,
    seed: Annotated[int | None, typer.Option(help="params: fleet.seed")] = None,
    workers: Annotated[int, typer.Option(help="processes")] = 2,
    store: Annotated[
        str | None, typer.Option(help="frame store URI (default CVLOOP_STORAGE_URI)")
    ] = None,
) -> None:
    """Render the fleet's frames (deterministic from the seed) into the frame store."""
    import functools

    from cvloop.app.common import client_context
    from cvloop.sim.fleet.generate import FleetConfig, Scenario, cameras_named, generate_fleet

    ctx = client_context()
    s, p = ctx.settings, ctx.params
    first = _date(start, dt.date.today() - dt.timedelta(days=days))
    cfg = FleetConfig(
        seed=p.fleet.seed if seed is None else seed,
        cameras=cameras_named(cameras or p.fleet.cameras),
        image_size=p.fleet.image_size,
        bursts_per_day=bursts_per_day,
        frames_per_burst=frames_per_burst,
        burst_fps=p.fleet.fps if burst_fps is None else burst_fps,
        scenarios=tuple(Scenario.parse(x) for x in scenario or []),
        classes=tuple(p.classes),
    )
    store_uri = store or s.frame_store_uri
    print(f"fleet: {len(cfg.all_cameras())} cameras, {first} + {days} days -> {store_uri}")

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            print(f"  {done}/{total} camera-days")

    # the frame store through the context (its regions route each camera's frames); another
    # store by its URI
    frames = (
        ctx.frame_store
        if store_uri == s.frame_store_uri
        else functools.partial(ctx.storage, store_uri)
    )
    rep = generate_fleet(
        cfg,
        first,
        days,
        frames,
        functools.partial(ctx.storage, s.fleet_truth_uri),
        video_seconds=videos,
        workers=workers,
        progress=progress,
    )
    print(
        json.dumps(
            {
                "frames_written": rep.frames_written,
                "frames_skipped": rep.frames_skipped,
                "videos_written": rep.videos_written,
                "cameras": rep.cameras,
                "scenario_frames": rep.scenario_frames,
                "truth": s.fleet_truth_uri,
            },
            indent=2,
        )
    )


@fleet_app.command("register-camera")
def register_camera(
    camera: Annotated[str, typer.Argument(help="camera name, e.g. north-01")],
    group: Annotated[str, typer.Option(help="its camera group, e.g. north-dock")],
    region: Annotated[str, typer.Option(help="its region (optional), e.g. eu-west")] = "",
    why: Annotated[str, typer.Option(help="why (in the weekly review)")] = "",
    by: Annotated[str | None, typer.Option(help="who (default: you)")] = None,
) -> None:
    """Register a camera in a group (and region) in the frame store's camera registry. Its
    inference-log rows carry the group from then on; a group new to the fleet gets its own
    drift reference window (its first monitor.reference_days) instead of firing on day one."""
    from cvloop.adapters.cameras import register
    from cvloop.app.common import client_context
    from cvloop.app.common import me as _me

    store = client_context().store
    reg, changed = register(store, camera, group, region, by or _me(), why)
    print(json.dumps({"camera": reg.camera, "group": reg.group, "region": reg.region,
                      "frames_root": _frames_root(store, camera), "changed": changed},
                     indent=2))  # fmt: skip


def _frames_root(store, camera: str) -> str:
    """Where the camera's new frames go: its region's root (regions file) or the main
    store."""
    from cvloop.adapters.regions import RegionalStorage

    if isinstance(store, RegionalStorage):
        return store.store_for(f"frames/{camera}/x").uri
    return store.uri


@fleet_app.command("cameras")
def cameras() -> None:
    """The camera registry: each camera's group and region."""
    from cvloop.adapters.cameras import registry
    from cvloop.app.common import client_context

    store = client_context().store
    for cam, info in sorted(registry(store).items()):
        print(f"{cam:<16} {info['group']:<16} {info['region'] or '-':<12} "
              f"{_frames_root(store, cam)}")  # fmt: skip


@fleet_app.command("serve")
def serve(
    start: Annotated[
        str | None, typer.Option(help="first day; default: --days before today")
    ] = None,
    days: Annotated[int, typer.Option(help="days to serve")] = 7,
    camera: Annotated[list[str] | None, typer.Option("--camera", help="only these cameras")] = None,
    conf: Annotated[float, typer.Option(help="serving confidence threshold")] = 0.25,
    slow: Annotated[
        list[str] | None, typer.Option(help="VERSION=MS extra latency (simulation)")
    ] = None,
    errors: Annotated[
        list[str] | None, typer.Option(help="VERSION=RATE serving errors (simulation)")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            help="send the frames over HTTP to this `cvloop serve` (`local`: the one of "
            "`cvloop services up`), which routes them and writes the log"
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="requests in flight (--server)")] = 4,
) -> None:
    """Serve the registered models over the frames of a window; append to the inference log.

    Each frame goes to the model version the rollout manifest routes it to (no manifest:
    the champion takes 100 %). With ``--server`` the fleet is a client of the inference
    server and the server does the routing, the inference and the log; without it the
    models run in this process (a simulation that can add latency and errors).
    """
    from cvloop.app.common import client_context
    from cvloop.sim.fleet.serve import serve_current_manifest, serve_window_http

    ctx = client_context()
    first = _date(start, dt.date.today() - dt.timedelta(days=days))
    if server:
        if slow or errors:
            raise typer.BadParameter(
                "--slow/--errors simulate a server; a real one (--server) serves as it is"
            )
        url = ctx.settings.serve_url if server == "local" else server
        rep = serve_window_http(ctx.store, first, days, url, cameras=camera,
                                concurrency=concurrency, progress=print)  # fmt: skip
        print(json.dumps({"server": url, "frames": rep.frames, "errors": rep.errors,
                          "seconds": round(rep.seconds, 1),
                          "frames_per_second": round(rep.fps, 1), "by_version": rep.by_version,
                          "log_parts": rep.parts}, indent=2))  # fmt: skip
        return
    rep, split = serve_current_manifest(
        ctx.store,
        ctx.registry,
        first,
        days,
        cameras=camera,
        conf=conf,
        slow_ms=_kv(slow),
        error_rate=_kv(errors),
        progress=print,
    )
    print(split)
    print(
        json.dumps(
            {
                "frames": rep.frames,
                "errors": rep.errors,
                "seconds": round(rep.seconds, 1),
                "frames_per_second": round(rep.fps, 1),
                "by_version": rep.by_version,
            },
            indent=2,
        )
    )


@fleet_app.command("log")
def log(
    start: Annotated[
        str | None, typer.Option(help="first day; default: --days before today")
    ] = None,
    days: Annotated[int, typer.Option(help="days to read")] = 7,
) -> None:
    """Read the inference log back: schema, frames, detections per version and camera."""
    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import detections_per_frame, read_log
    from cvloop.app.common import client_context

    first = _date(start, dt.date.today() - dt.timedelta(days=days))
    table = read_log(client_context().store, first, first + dt.timedelta(days=days))
    print(table.schema.to_string(show_schema_metadata=True))
    print(
        f"\nframes: {table.num_rows}, detections: {int(pc.sum(detections_per_frame(table)).as_py() or 0)}"
    )
    if table.num_rows:
        by = table.group_by(["model_version", "camera"], use_threads=False).aggregate(
            [("frame_key", "count"), ("latency_ms", "mean")]
        )
        for row in sorted(by.to_pylist(), key=lambda r: (r["model_version"], r["camera"])):
            print(
                f"  v{row['model_version']:<4} {row['camera']:<10} {row['frame_key_count']:>7} "
                f"frames  mean latency {row['latency_ms_mean']:.1f} ms"
            )


@fleet_app.command("evaluate")
def evaluate_scenarios(
    version: Annotated[str, typer.Option(help="model version or alias")] = "champion",
    frames: Annotated[int, typer.Option(help="labelled frames per scenario")] = 150,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            "-s",
            help="clean, night, weather, new-class-look, new-camera (all if none)",
        ),
    ] = None,
    start: Annotated[
        str, typer.Option(help="day the scenario frames are drawn from")
    ] = "2026-07-01",
) -> None:
    """Score a registered model on labelled frames of each drift scenario (ground truth from
    the synthetic fleet): how much each drift hurts it."""
    import tempfile
    from pathlib import Path

    from cvloop.adapters.training import evaluate
    from cvloop.app.common import client_context
    from cvloop.sim.fleet.evaluate import SCENARIO_SETS, build_scenario_set
    from cvloop.sim.fleet.generate import FleetConfig, cameras_named

    ctx = client_context()
    p, reg = ctx.params, ctx.registry
    v = version if version.isdigit() else str(reg.version_by_alias(version).version)
    model = reg.fetch(v)
    base = FleetConfig(
        seed=p.fleet.seed + 1000,
        cameras=cameras_named(p.fleet.cameras),
        image_size=p.fleet.image_size,
        bursts_per_day=12,
        classes=tuple(model.classes),
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in scenario or SCENARIO_SETS:
            data = build_scenario_set(
                base, name, frames, dt.date.fromisoformat(start), Path(tmp) / name
            )
            r = evaluate(model.pt, data, imgsz=model.imgsz, device=p.train.device)
            rows.append(
                {
                    "scenario": name,
                    "frames": r.images,
                    "map50": round(r.map50, 4),
                    "map50_95": round(r.map50_95, 4),
                    "per_class_ap50": {k: round(x, 3) for k, x in r.per_class_ap50.items()},
                }
            )
            print(
                f"  {name:<15} mAP50 {r.map50:.3f}  mAP50-95 {r.map50_95:.3f}  ({r.images} frames)"
            )
    print(json.dumps({"version": v, "scenarios": rows}, indent=2))
