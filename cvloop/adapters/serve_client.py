"""Talking to a running ``cvloop serve`` from outside it (the fleet client, the load test).

A request reaches one worker process; what concerns every worker (the pids, a flush of each
worker's log journal) is asked again on fresh connections, which the kernel spreads over
the workers, until every worker has answered (``/healthz`` says how many there are).
"""

from __future__ import annotations

from cvloop.core.errors import CvloopError


def worker_pids(url: str, tries: int = 40) -> tuple[set[int], int]:
    """(the worker pids seen, the worker count the server reports)."""
    import httpx

    pids: set[int] = set()
    workers = 1
    for _ in range(tries):
        try:
            body = httpx.get(f"{url}/healthz", timeout=5).json()
            pids.add(int(body["pid"]))
            workers = int(body.get("workers") or 1)
        except (httpx.HTTPError, KeyError, ValueError):
            continue
        if len(pids) >= workers:
            break
    return pids, workers


def flush_all(url: str, tries_per_worker: int = 20) -> list[str]:
    """Every worker uploads its journal now; returns the parts written. Raises when a
    worker answers that its upload failed (the rows stay in its journal)."""
    import httpx

    _, workers = worker_pids(url, tries=5)
    writers: set[str] = set()
    parts: list[str] = []
    for _ in range(tries_per_worker * workers):
        try:
            r = httpx.post(f"{url}/v1/log/flush", timeout=60)
        except httpx.HTTPError:
            continue
        if r.status_code != 200:
            raise CvloopError(f"cvloop serve could not flush its log: {r.text[:300]}",
                              fix="the rows are kept in its journal; check the store, retry")  # fmt: skip
        body = r.json()
        if body.get("writer") not in writers:
            writers.add(body.get("writer"))
            parts += body.get("parts", [])
        if len(writers) >= workers:
            break
    return parts
