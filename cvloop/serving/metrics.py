"""Prometheus metrics of the server, correct across several worker processes.

``cvloop serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before its workers start, so each worker
writes its samples to that folder and ``/metrics`` (answered by any worker) sums them, as
``prometheus_client``'s multiprocess mode documents. In one process (tests, an embedded
server) the default registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The server's instruments (one set per process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw = {"registry": registry} if registry is not None else {}
        self.requests = Counter("cvloop_serve_requests", "HTTP requests answered",
                                ["endpoint", "code"], **kw)  # fmt: skip
        self.frames = Counter("cvloop_serve_frames", "frames served, by model version",
                              ["model_version"], **kw)  # fmt: skip
        self.errors = Counter("cvloop_serve_frame_errors", "frames whose model call failed",
                              ["model_version"], **kw)  # fmt: skip
        self.overloaded = Counter("cvloop_serve_overloaded", "frames refused with 503 (queue full)",
                                  ["model_version"], **kw)  # fmt: skip
        self.shadow_dropped = Counter("cvloop_serve_shadow_dropped",
                                      "shadow copies dropped (the shadow's queue was full)",
                                      ["model_version"], **kw)  # fmt: skip
        self.latency = Histogram("cvloop_serve_frame_latency_seconds",
                                 "server time of a frame (pre + queue + model + post)",
                                 ["model_version"], buckets=_LATENCY_BUCKETS, **kw)  # fmt: skip
        self.batch = Histogram("cvloop_serve_batch_size", "frames per model call",
                               ["model_version"], buckets=_BATCH_BUCKETS, **kw)  # fmt: skip
        self.queue = Gauge("cvloop_serve_queue_depth", "frames waiting for a model",
                           ["model_version"], multiprocess_mode="livesum", **kw)  # fmt: skip
        self.log_pending = Gauge("cvloop_serve_log_pending_rows",
                                 "log rows journaled but not yet in a Parquet part",
                                 multiprocess_mode="livesum", **kw)  # fmt: skip
        self.log_lag = Gauge("cvloop_serve_log_lag_seconds",
                             "age of the oldest log row not yet in a part",
                             multiprocess_mode="livemax", **kw)  # fmt: skip
        self.log_failures = Counter("cvloop_serve_log_upload_failures",
                                    "failed uploads of log parts (kept and retried)", **kw)  # fmt: skip
        self.loads = Counter("cvloop_serve_model_loads", "model version loads",
                             ["model_version", "result"], **kw)  # fmt: skip
        self.ready = Gauge("cvloop_serve_ready", "1 when the worker has a routing to serve",
                           multiprocess_mode="livemin", **kw)  # fmt: skip


def exposition() -> tuple[bytes, str]:
    """The text for ``/metrics`` (all workers' samples in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
        return generate_latest(reg), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


_METRICS: Metrics | None = None


def get_metrics() -> Metrics:
    """The process's instruments (made once: a registry refuses a metric named twice)."""
    global _METRICS
    if _METRICS is None:
        _METRICS = Metrics()
    return _METRICS
