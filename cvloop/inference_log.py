"""The public API of the inference log, for serving loops that are not ``cvloop serve``.

A team whose own server (Triton, a batch job, an edge box) makes the predictions writes
them here, and every drift signal and canary check of cvloop reads them::

    from cvloop.inference_log import Detection, FrameRecord, LogWriter, open_log_store

    store = open_log_store()            # the frame store of this deployment (CVLOOP_* env)
    with LogWriter(store, spool_dir="/var/lib/cvloop/spool") as log:
        log.write([FrameRecord(ts, camera, frame_key, model_version, latency_ms, detections)])

The schema is ``inference-log/v1`` (docs/inference-log.md); boxes are ``cx, cy, w, h``
normalized to the frame. Servers that cannot run Python post the same rows to
``cvloop serve``'s ``POST /v1/ingest`` instead.
"""

from __future__ import annotations

from cvloop.adapters.inference_log import (
    SCHEMA,
    SCHEMA_VERSION,
    Detection,
    FrameRecord,
    LogSchemaError,
    read_log,
    write_log,
)
from cvloop.adapters.log_writer import LogWriter, RecoveryReport, recover

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "Detection",
    "FrameRecord",
    "LogSchemaError",
    "LogWriter",
    "RecoveryReport",
    "open_log_store",
    "read_log",
    "recover",
    "write_log",
]


def open_log_store():
    """The frame store of this deployment, from the environment (``CVLOOP_STORAGE_URI``,
    ``CVLOOP_S3_ENDPOINT_URL``, AWS credentials), as every cvloop command opens it."""
    from cvloop.context import Context

    return Context.from_env().store
