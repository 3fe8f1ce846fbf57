"""``cvloop serve``: the inference server (runbooks/serve.md)."""

from __future__ import annotations

import os
import shutil
from typing import Annotated

import typer

from cvloop.app.common import client_settings as _settings


def serve(
    host: Annotated[str, typer.Option(help="address to bind (loopback by default)")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="port (default CVLOOP_SERVE_PORT, 8500)")] = None,
    workers: Annotated[
        int | None, typer.Option(help="worker processes (default serve.workers in params.yaml)")
    ] = None,
) -> None:
    """Serve the rollout: route each frame by the rollout manifest, batch, answer, and write
    the inference log. Stops cleanly on SIGTERM / Ctrl-C (every answered frame's row is in
    the log or in the journal the next start uploads)."""
    import uvicorn

    from cvloop.config.offline import apply_offline
    from cvloop.config.params import load_params

    settings = _settings()
    params = load_params()
    apply_offline(settings.home)
    # the journal, the metrics and the log parts are this user's only (as under `services up`,
    # which starts it with the same umask); the workers inherit it
    os.umask(0o077)
    port = port or settings.serve_port
    n = workers or params.serve.workers
    # Prometheus multiprocess mode: each worker writes its samples here, /metrics sums them
    metrics_dir = settings.home / "serve" / f"metrics-{port}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ["CVLOOP_SERVE_WORKERS"] = str(n)
    print(f"cvloop serve: http://{host}:{port} ({n} worker(s), runtime {params.serve.runtime}, "
          f"route by {params.serve.route_by}); log journal {settings.serve_spool}", flush=True)  # fmt: skip
    uvicorn.run(
        "cvloop.serving.app:create_app", factory=True, host=host, port=port, workers=n,
        timeout_graceful_shutdown=20, log_level="info", access_log=False,
    )  # fmt: skip


def loadtest(
    challenger: Annotated[str, typer.Option(help="the version the manifest moves to 10 %, 50 %")],
    url: Annotated[str | None, typer.Option(help="the server (default: this stack's)")] = None,
    users: Annotated[int, typer.Option(help="Locust users in the steady phases")] = 8,
    burst_users: Annotated[int, typer.Option(help="Locust users in the burst")] = 24,
    steady_seconds: Annotated[float, typer.Option(help="each steady phase")] = 20.0,
    burst_seconds: Annotated[float, typer.Option(help="the burst")] = 10.0,
    max_requests: Annotated[int, typer.Option(help="stop after this many requests")] = 50_000,
    kill_worker: Annotated[bool, typer.Option(help="SIGKILL one server worker mid-burst")] = False,
    frames: Annotated[
        str | None, typer.Option(help="a folder of frames (default: the store's)")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """A bounded load test of cvloop serve with Locust: steady, burst, steady; the manifest
    moves to the challenger at 10 % and 50 % and rolls back mid-run; reports requests/s,
    p50/p95/p99, errors and log rows against answered requests. It writes this store's
    rollout manifest (and restores it): a staging stack, never a rollout in progress."""
    import json
    import sys
    from pathlib import Path

    from cvloop.app.common import client_context
    from cvloop.app.loadtest import run_loadtest

    settings = _settings()
    rep = run_loadtest(
        client_context(), url or settings.serve_url, challenger=challenger, users=users,
        burst_users=burst_users, steady_seconds=steady_seconds, burst_seconds=burst_seconds,
        max_requests=max_requests, kill_worker=kill_worker,
        frames_dir=Path(frames) if frames else None,
        out=(lambda line: print(line, file=sys.stderr)) if json_out else print,
    )  # fmt: skip
    if json_out:
        print(json.dumps(rep.as_dict()))
    else:
        print(
            f"requests {rep.requests} in {rep.seconds:g} s ({rep.requests_per_s:g}/s), answered "
            f"{rep.answered}, failures {rep.failures} (503: {rep.overloaded_503}), p50/p95/p99 "
            f"{rep.p50_ms:g}/{rep.p95_ms:g}/{rep.p99_ms:g} ms"
        )
        print(
            f"answered by version {rep.by_version}; after the rollback the challenger "
            f"answered {rep.challenger_after_rollback}"
        )
        print(f"log rows {rep.log_rows} for {rep.answered} answers: {rep.answered_without_row} "
              f"answered without a row, {rep.duplicate_rows} doubled, {rep.rows_not_answered} "
              f"journaled but never answered")  # fmt: skip
    if not rep.ok():
        raise typer.Exit(1)


export_app = typer.Typer(help="Export a registered version for another serving stack.",
                         no_args_is_help=True)  # fmt: skip


@export_app.command("triton")
def export_triton(
    version: Annotated[str, typer.Argument(help="registered model version")],
    out: Annotated[str, typer.Option(help="the Triton model repository folder")] = "triton-models",
    instances: Annotated[int, typer.Option(help="model instances (instance_group count)")] = 1,
    gpu: Annotated[bool, typer.Option(help="KIND_GPU instances (default KIND_CPU)")] = False,
    max_batch: Annotated[
        int | None, typer.Option(help="max_batch_size (default serve.max_batch)")
    ] = None,
) -> None:
    """A Triton model repository (config.pbtxt + ONNX, dynamic batching) for VERSION; its
    predictions reach the inference log through cvloop.inference_log or POST /v1/ingest."""
    from pathlib import Path

    from cvloop.app.common import client_context
    from cvloop.stages.export import export_triton as export

    m = export(client_context(), version, Path(out), instances=instances, gpu=gpu,
               max_batch=max_batch)  # fmt: skip
    print(f"wrote {m.path} (version {m.version}):\n")
    print(m.config)
    print(f"start it: tritonserver --model-repository {Path(out).resolve()}")
