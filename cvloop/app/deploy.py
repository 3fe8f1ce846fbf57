"""Deployments from ``prefect.yaml`` onto the configured Prefect server, and runs of them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cvloop.config.settings import Settings, code_dir, project_dir
from cvloop.core.errors import CvloopError


def deploy_all(settings: Settings, names: list[str] | None = None) -> list[str]:
    """``prefect --no-prompt deploy`` for every deployment in prefect.yaml (or ``names``).

    Returns the deployment names. ``prefect.yaml`` is the project's (``cvloop init`` copies
    it there, to edit schedules), else the checkout's; the worker runs the flows from the
    checkout (``CVLOOP_CODE_DIR``) for the project (``CVLOOP_PROJECT_DIR``), in the
    ``cvloop`` work pool.
    """
    from cvloop.app.services import client_env

    env = {**os.environ, **client_env(settings)}
    prefect = str(Path(sys.executable).parent / "prefect")
    args = [prefect, "--no-prompt", "deploy", "--prefect-file", str(prefect_file())]
    if names:
        for n in names:
            args += ["--name", n]
    else:
        args.append("--all")
    proc = subprocess.run(
        args, cwd=code_dir(), env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise CvloopError(
            f"prefect deploy failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}",
            fix="check prefect.yaml and that the Prefect server is up (`cvloop services status`)",
        )
    return _deployment_names()


def prefect_file() -> Path:
    """The project's prefect.yaml, else the checkout's."""
    own = project_dir() / "prefect.yaml"
    return own if own.is_file() else code_dir() / "prefect.yaml"


def _deployment_names() -> list[str]:
    import yaml

    spec = yaml.safe_load(prefect_file().read_text())
    return [d["name"] for d in spec.get("deployments", [])]


def run_and_wait(
    deployment: str,
    parameters: dict | None = None,
    timeout_s: float = 1800,
    poll_s: float = 2.0,
    out=print,
) -> tuple[str, str]:
    """Start a run of ``flow/deployment`` through the worker and wait for its final state.

    Returns ``(flow_run_id, state_name)``.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    flow_run = run_deployment(deployment, parameters=parameters or {}, timeout=0)
    out(f"  started flow run {flow_run.name} ({flow_run.id}) of {deployment}")
    deadline = time.monotonic() + timeout_s
    last = None
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            fr = client.read_flow_run(flow_run.id)
            state = fr.state.name if fr.state else "Unknown"
            if state != last:
                out(f"  {deployment}: {state}")
                last = state
            if fr.state and fr.state.is_final():
                return str(flow_run.id), state
            time.sleep(poll_s)
    raise CvloopError(
        f"flow run {flow_run.id} of {deployment} did not finish in {timeout_s:.0f}s",
        fix="look at it in the Prefect UI; is the worker up (`cvloop services status`)?",
    )
