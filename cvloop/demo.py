"""``cvloop demo``: the local stack up, the flows deployed, and a real run through the worker.

Later stages of the project extend this to the whole loop (drift -> retrain -> rollout).
"""

from __future__ import annotations

import time

from cvloop.deploy import deploy_all, run_and_wait
from cvloop.errors import CvloopError
from cvloop.services import ServiceManager, format_status
from cvloop.settings import Settings


def run_demo(settings: Settings, out=print) -> dict[str, float]:
    """Run the demo; returns the wall time of each phase in seconds."""
    phases: dict[str, float] = {}

    def phase(name: str):
        out(f"\n==> {name}")
        return time.perf_counter()

    t = phase("starting the local services (first start of Label Studio takes ~45 s)")
    rows = ServiceManager(settings, out=out).up()
    phases["services"] = time.perf_counter() - t

    t = phase("deploying the flows in prefect.yaml to the local Prefect server")
    names = deploy_all(settings)
    out(f"  deployed: {', '.join(names)}")
    phases["deploy"] = time.perf_counter() - t

    t = phase("running the stack-check flow through the Prefect worker")
    run_id, state = run_and_wait("stack-check/stack-check", timeout_s=600, out=out)
    phases["stack-check"] = time.perf_counter() - t
    if state != "Completed":
        raise CvloopError(
            f"stack-check flow run {run_id} ended {state}",
            fix=f"open {settings.prefect_ui_url}/runs/flow-run/{run_id}",
        )

    out("\n==> the local stack")
    out(format_status(rows))
    out("\nOpen:")
    out(
        f"  Prefect UI      {settings.prefect_ui_url}  (flow run: "
        f"{settings.prefect_ui_url}/runs/flow-run/{run_id})"
    )
    out(f"  MLflow UI       {settings.mlflow_tracking_uri}")
    out(
        f"  Label Studio    {settings.label_studio_url}  (user {settings.label_studio_username}, "
        f"password in {settings.secrets_path})"
    )
    out(f"  S3 (loopback)   {settings.local_s3_endpoint}")
    out(f"  frame store     {settings.frame_store_uri}")
    out("\nStop everything with `cvloop services down` (or `make down`).")
    out("phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()))
    return phases
