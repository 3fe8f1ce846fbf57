"""Stack checks: each real service is reached the way the flows reach it.

Plain functions (callable without Prefect); ``tasks/stack.py`` wraps them.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cvloop.context import Context


@dataclass(frozen=True)
class CheckResult:
    """One service check."""

    service: str
    ok: bool
    detail: str
    seconds: float


def _timed(service: str, fn) -> CheckResult:
    start = time.perf_counter()
    try:
        detail = fn()
        return CheckResult(service, True, detail, round(time.perf_counter() - start, 3))
    except Exception as exc:  # a failed check is a result, reported with the others
        return CheckResult(
            service, False, f"{type(exc).__name__}: {exc}", round(time.perf_counter() - start, 3)
        )


def _round_trip(store, key: str) -> None:
    """Write, read back and delete one object."""
    store.put_text(key, "ok")
    assert store.get_text(key) == "ok"
    store.delete(key)


def check_frame_store(ctx: Context) -> CheckResult:
    """Write, read back and delete an object in the configured frame store."""

    def run() -> str:
        from cvloop.adapters.regions import RegionalStorage

        store = ctx.store
        _round_trip(store, f"_cvloop/stack-check/{uuid.uuid4().hex}.txt")
        roots = [store.uri]
        if isinstance(store, RegionalStorage):  # each region's root, with its own endpoint
            for name, region in store.regions.items():
                _round_trip(region, f"_cvloop/stack-check/{uuid.uuid4().hex}.txt")
                roots.append(f"{name}: {region.uri}")
        return f"read/write ok at {'; '.join(roots)}"

    return _timed("frame-store", run)


def check_s3(ctx: Context) -> CheckResult:
    """Round-trip an object through the S3 endpoint (the loopback server by default)."""
    from cvloop.adapters.storage import open_storage

    def run() -> str:
        settings = ctx.settings
        endpoint = settings.s3_endpoint_url or settings.local_s3_endpoint
        store = open_storage("s3://cvloop-stack-check", endpoint_url=endpoint, create_bucket=True)
        _round_trip(store, f"{uuid.uuid4().hex}.txt")
        return f"read/write ok at {endpoint}"

    return _timed("s3", run)


def check_mlflow(ctx: Context) -> CheckResult:
    """Log a run with a metric to MLflow and read it back through the tracking server."""

    def run() -> str:
        t = ctx.tracker
        run_id = t.start_run("cvloop-stack-check", "stack-check")
        t.log_metrics(run_id, {"ok": 1.0})
        t.finish(run_id)
        got = t.get_run(run_id).metrics["ok"]
        assert got == 1.0
        return f"run {run_id} logged"

    return _timed("mlflow", run)


def check_label_studio(ctx: Context) -> CheckResult:
    """Authenticate to Label Studio with the configured token."""

    def run() -> str:
        from label_studio_sdk import LabelStudio

        settings = ctx.settings
        client = LabelStudio(
            base_url=settings.label_studio_url, api_key=settings.label_studio_token()
        )
        return f"authenticated as {client.users.whoami().email}"

    return _timed("labelstudio", run)


def report_markdown(results: list[CheckResult]) -> str:
    """A markdown table of the checks, red/green."""
    rows = ["| service | result | detail | seconds |", "|---|---|---|---|"]
    for r in results:
        mark = "OK" if r.ok else "**FAILED**"
        rows.append(f"| {r.service} | {mark} | {r.detail} | {r.seconds:.2f} |")
    return "# cvloop stack check\n\n" + "\n".join(rows) + "\n"


def require_all_ok(results: list[CheckResult]) -> None:
    """Raise with every failing check listed at once."""
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(
            "stack check failed: " + "; ".join(f"{r.service}: {r.detail}" for r in failed)
        )
