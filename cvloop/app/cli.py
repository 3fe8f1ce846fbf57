"""The ``cvloop`` command.

Heavy libraries (Ultralytics, MLflow, Prefect) are imported inside the commands that need
them, so ``cvloop services status`` answers at once.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from cvloop.app.common import client_settings as _settings
from cvloop.core.errors import CvloopError

app = typer.Typer(
    name="cvloop",
    help="The retraining runbook of a production YOLO detector, as Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
services_app = typer.Typer(help="Start, stop and check the local stack.", no_args_is_help=True)
params_app = typer.Typer(help="Inspect params.yaml.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(params_app, name="params")
registry_app = typer.Typer(help="The model registry's records.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")


def _register_subcommands() -> None:
    from cvloop.app.cli_fleet import fleet_app
    from cvloop.app.cli_review import review_app

    app.add_typer(fleet_app, name="fleet")
    app.add_typer(review_app, name="review")
    from cvloop.app.cli_schema import schema_app

    app.add_typer(schema_app, name="schema")
    from cvloop.app.cli_holdout import holdout_app

    app.add_typer(holdout_app, name="holdout")
    from cvloop.app.cli_rollout import approve, rollback, rollout_app, status, weekly

    app.add_typer(rollout_app, name="rollout")
    app.command("status")(status)
    app.command("approve")(approve)
    app.command("rollback")(rollback)
    app.command("weekly")(weekly)
    from cvloop.app.cli_adopt import adopt, init

    app.command("adopt")(adopt)
    app.command("init")(init)
    from cvloop.app.cli_serve import export_app, loadtest, serve

    app.command("serve")(serve)
    app.command("loadtest")(loadtest)
    app.add_typer(export_app, name="export")


_register_subcommands()


ServiceNames = Annotated[
    list[str] | None,
    typer.Argument(
        help="services to act on (s3, mlflow, labelstudio, prefect, worker, serve); all if none"
    ),
]


@services_app.command("up")
def services_up(names: ServiceNames = None) -> None:
    """Start the services (all by default), wait until healthy, print their URLs."""
    from cvloop.app.services import ServiceManager, format_status

    settings = _settings()
    mgr = ServiceManager(settings)
    print(f"cvloop home: {settings.home}")
    rows = mgr.up(names)
    print()
    print(format_status(rows))
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


@services_app.command("down")
def services_down(names: ServiceNames = None) -> None:
    """Stop the services this checkout started (by recorded pid)."""
    from cvloop.app.services import ServiceManager

    mgr = ServiceManager(_settings())
    stopped = mgr.down(names)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@services_app.command("status")
def services_status(
    names: ServiceNames = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
) -> None:
    """Each service, its URL, pid and health. Exit 1 if any started service is unhealthy."""
    from cvloop.app.services import ServiceManager, format_status

    rows = ServiceManager(_settings()).status(names)
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(format_status(rows))
    if any(r.state != "stopped" and not r.healthy for r in rows):
        raise typer.Exit(1)


@app.command("demo")
def demo(
    fast: Annotated[bool, typer.Option("--fast", help="tiny sizes, for tests")] = False,
    chapter: Annotated[
        str | None,
        typer.Option(
            help="new-class: after the demo, on its stack: a fourth class appears, the "
            "operator adds it to the schema, one retrain learns it"
        ),
    ] = None,
) -> None:
    """Run the demo on the embedded defaults and print the URLs to look at."""
    from cvloop.app.demo import FAST, FULL, run_demo

    size = FAST if fast else FULL
    if chapter is None:
        run_demo(_settings(), size)
        return
    if chapter != "new-class":
        raise CvloopError(f"unknown chapter {chapter!r}", fix="--chapter new-class")
    from cvloop.app.demo_schema import run_new_class

    out = run_new_class(_settings(), size)
    if out.get("gate") != "passed":
        raise typer.Exit(1)


@app.command("picture")
def picture(
    flow_run_id: Annotated[str, typer.Argument(help="a flow run id (Prefect UI: the run's URL)")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write")] = Path("flow-run.png"),
) -> None:
    """Draw a flow run as a timeline of its task runs (PNG), from the Prefect API."""
    from cvloop.app.pictures import flow_run_picture

    print(flow_run_picture(_settings().prefect_api_url, flow_run_id, out))


@app.command("bootstrap")
def bootstrap(
    force: Annotated[bool, typer.Option(help="retrain even if a champion exists")] = False,
    epochs: Annotated[int | None, typer.Option(help="params: train.bootstrap_epochs")] = None,
    train_frames: Annotated[int | None, typer.Option(help="params: bootstrap.train_frames")] = None,
    holdout_frames: Annotated[
        int | None, typer.Option(help="params: bootstrap.holdout_frames")
    ] = None,
) -> None:
    """Create the baseline champion v1: dataset v1 + holdout v1 (DVC), train, register."""
    from cvloop.app.services import require_healthy

    settings = _settings()
    require_healthy(settings, ["mlflow", "prefect"])
    from flows.bootstrap import bootstrap as bootstrap_flow

    version = bootstrap_flow(
        force=force, epochs=epochs, train_frames=train_frames, holdout_frames=holdout_frames
    )
    print(f"champion: version {version}")


@app.command("monitor")
def monitor(
    current_end: Annotated[
        str | None, typer.Option(help="end of the current window (exclusive); default today")
    ] = None,
    current_days: Annotated[int | None, typer.Option(help="params: monitor.current_days")] = None,
    reference_start: Annotated[
        str | None, typer.Option(help="default: the champion's first week in production")
    ] = None,
    reference_days: Annotated[
        int | None, typer.Option(help="params: monitor.reference_days")
    ] = None,
    no_event: Annotated[
        bool, typer.Option("--no-event", help="do not emit the drift event")
    ] = False,
) -> None:
    """Run the weekly drift check now (the monitor flow, reported to Prefect)."""
    from cvloop.app.services import require_healthy

    settings = _settings()
    require_healthy(settings, ["mlflow", "prefect"])
    from flows.monitor import monitor as monitor_flow

    fired = monitor_flow(
        current_end=current_end,
        current_days=current_days,
        reference_days=reference_days,
        reference_start=reference_start,
        emit=not no_event,
    )
    print(f"triggers fired: {', '.join(fired) if fired else 'none'}")


@app.command("retrain")
def retrain(
    camera: Annotated[
        list[str] | None, typer.Option("--camera", help="drift-flagged camera")
    ] = None,
    cls: Annotated[list[str] | None, typer.Option("--class", help="drift-flagged class")] = None,
    window_end: Annotated[
        str | None, typer.Option(help="collect up to this day (default today)")
    ] = None,
    days: Annotated[int | None, typer.Option(help="params: collect.days")] = None,
) -> None:
    """Run the retrain flow now, here (the drift event runs it on the worker on its own).

    It waits (paused) for the reviewers; `cvloop review watch` or the Prefect UI resumes it.
    """
    from cvloop.app.services import require_healthy

    settings = _settings()
    require_healthy(settings, ["mlflow", "prefect", "labelstudio"])
    from flows.retrain import retrain as retrain_flow

    out = retrain_flow(
        cameras=camera, classes=cls, window_end=window_end, days=days, triggers=["manual"]
    )
    print(json.dumps(out, indent=2))


@app.command("candidate")
def candidate(
    dataset: Annotated[
        str | None, typer.Option(help="dataset version, e.g. dataset-v2 (default: newest)")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="params: train.epochs")] = None,
    lr0: Annotated[float | None, typer.Option(help="params: train.lr0")] = None,
    camera: Annotated[
        list[str] | None, typer.Option("--camera", help="drift slice (default: the holdout's)")
    ] = None,
    cls: Annotated[list[str] | None, typer.Option("--class", help="drift slice class")] = None,
) -> None:
    """Fine-tune, gate and register a candidate on an existing dataset version, here.

    The model half of the retrain on its own: after a rejection, or to reproduce a model.
    Exit 1 when the gates reject it (it is registered either way, with its reasons).
    """
    from cvloop.app.services import require_healthy

    settings = _settings()
    require_healthy(settings, ["mlflow", "prefect"])
    from flows.candidate import candidate as candidate_flow

    out = candidate_flow(
        dataset_version=dataset, epochs=epochs, lr0=lr0, cameras=camera, classes=cls
    )
    print(json.dumps(out, indent=2))
    if out["gate"] != "passed":
        raise typer.Exit(1)


@app.command("bench")
def bench(
    name: Annotated[str, typer.Argument(help="drift | prefilter | video | labelstudio | dvc")],
    quick: Annotated[bool, typer.Option(help="smaller sizes")] = False,
) -> None:
    """Run a benchmark: one JSON object per case (name, value, unit, baseline, ratio)."""
    from cvloop.app.bench import run as run_bench
    from cvloop.config.offline import apply_offline

    apply_offline()
    run_bench(name, quick=quick)


@app.command("deploy")
def deploy(
    names: Annotated[list[str] | None, typer.Argument(help="deployments; all if none")] = None,
) -> None:
    """Create/update the deployments of prefect.yaml on the Prefect server, and the
    notifications automation (CVLOOP_NOTIFY_WEBHOOK_URL; runbooks/notifications.md)."""
    from cvloop.adapters.notify import ensure_notifications
    from cvloop.app.deploy import deploy_all

    settings = _settings()
    print("deployed: " + ", ".join(deploy_all(settings, names)))
    url = settings.notify_webhook_url
    print("notifications: " + ensure_notifications(url.get_secret_value() if url else None))


@app.command("run")
def run(
    deployment: Annotated[
        str, typer.Argument(help="flow/deployment, e.g. stack-check/stack-check")
    ],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="key=JSON value")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the run")] = 3600,
) -> None:
    """Run a deployment through the worker and wait for it; exit 1 unless it completes."""
    from cvloop.app.deploy import run_and_wait

    _settings()
    params = {}
    for item in param or []:
        key, _, raw = item.partition("=")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    run_id, state = run_and_wait(deployment, params, timeout_s=timeout)
    print(f"flow run {run_id}: {state}")
    if state != "Completed":
        raise typer.Exit(1)


@registry_app.command("trust")
def registry_trust(
    version: Annotated[str, typer.Argument(help="the registered version to vouch for")],
    reason: Annotated[str, typer.Option(help="why its files can be trusted (recorded)")],
) -> None:
    """Write the registration record of a version cvloop did not register (made by hand in
    MLflow, or before records existed), from its files as they are now; they must still
    match its sha256 tags. Needs write access to the store: who may vouch is who may write
    it (runbooks/rollout.md)."""
    from cvloop.app.common import client_context, me

    local = client_context().registry.trust(version, me(), reason)
    print(f"v{local.version}: recorded best.pt {local.sha256['pt'][:12]}, "
          f"best.onnx {local.sha256['onnx'][:12]} (vouched by {me()}: {reason})")  # fmt: skip


@params_app.command("show")
def params_show() -> None:
    """Validate params.yaml and print it as loaded (defaults filled in)."""
    import yaml

    from cvloop.config.params import load_params

    p = load_params()
    print(yaml.safe_dump(p.model_dump(by_alias=True, mode="json"), sort_keys=False), end="")


@params_app.command("check")
def params_check() -> None:
    """Validate params.yaml; exit 2 with every problem listed if it is invalid."""
    from cvloop.config.params import load_params, params_path

    load_params()
    print(f"{params_path()}: ok")


def main() -> None:
    """Console entry point: clear errors (message + fix) instead of tracebacks."""
    try:
        app()
    except CvloopError as exc:
        print(f"cvloop: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
