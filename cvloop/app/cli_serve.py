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
