"""``cvloop holdout``: the holdout's versions, and the quarterly refresh started by hand
(the same run as the scheduled ``holdout-refresh/quarterly`` deployment)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from cvloop.app.common import client_settings as _settings

holdout_app = typer.Typer(help="Holdout versions and the quarterly refresh.", no_args_is_help=True)


@holdout_app.command("show")
def show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every holdout version (newest last): when, and what it is; the current one marked."""
    from cvloop.adapters.versioning import HOLDOUT_DIR
    from cvloop.app.common import client_context

    repo = client_context().data_repo
    lines = repo.git(
        "for-each-ref", "--sort=taggerdate",
        "--format=%(refname:short)\t%(taggerdate:iso-strict)\t%(contents:subject)",
        "refs/tags/holdout-v*", check=False,
    )  # fmt: skip
    stamp = repo.root / HOLDOUT_DIR / "VERSION"
    current = stamp.read_text().strip() if stamp.exists() else None
    rows = [dict(zip(("version", "when", "what"), x.split("\t"), strict=False))
            for x in lines.splitlines() if x.strip()]  # fmt: skip
    for r in rows:
        r["current"] = r["version"] == current
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{'*' if r['current'] else ' '} {r['version']:<12} {r.get('when', '')[:19]}  "
              f"{r.get('what', '')}")  # fmt: skip


@holdout_app.command("refresh")
def refresh(
    frames: Annotated[int | None, typer.Option(help="frames to label (default: params)")] = None,
    days: Annotated[int | None, typer.Option(help="the window (default: refresh_days)")] = None,
    window_end: Annotated[str | None, typer.Option(help="last day (default: today)")] = None,
    wait_s: Annotated[
        float, typer.Option("--wait", help="follow the run this long (it waits for labeling)")
    ] = 900,
) -> None:
    """Start the quarterly holdout refresh now (deployment holdout-refresh/quarterly): the
    run samples the quarter's frames and waits, suspended, until they are labeled in Label
    Studio; `cvloop review watch` (or its schedule) resumes it."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from cvloop.app.services import require_healthy

    settings = _settings()
    require_healthy(settings, ["mlflow", "prefect", "labelstudio"])
    params = {k: v for k, v in (("frames", frames), ("days", days),
                                ("window_end", window_end)) if v is not None}  # fmt: skip
    run = run_deployment("holdout-refresh/quarterly", parameters=params, timeout=0)
    print(f"holdout refresh: flow run {run.name} ({run.id})")
    print(f"  {settings.prefect_ui_url}/runs/flow-run/{run.id}")
    deadline, last = time.monotonic() + wait_s, None
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            fr = client.read_flow_run(run.id)
            state = fr.state.name if fr.state else "Unknown"
            if state != last:
                print(f"  {state}")
                last = state
            if fr.state and (fr.state.is_final() or fr.state.is_paused()):
                break
            time.sleep(2)
    print(json.dumps({"flow_run_id": str(run.id), "state": last}))
    if last in ("Failed", "Crashed", "Cancelled"):
        raise typer.Exit(1)
