"""``cvloop loadtest``: a bounded load test of ``cvloop serve`` with Locust, on loopback.

Locust (``locust --headless``, the users in :mod:`cvloop.app.locustfile`) sends a steady
load, a burst and a steady load again; in the middle, this driver moves the rollout
manifest the way a rollout does (the champion alone → the challenger at 10 % → 50 %) and
then rolls back (the champion alone again), optionally SIGKILLs one server worker during
the burst. It stops by itself (the phases' time, ``--max-requests``) and reports requests/s,
p50/p95/p99, errors, 503s, which version answered before and after each switch, and the
log rows the server wrote against the requests it answered (goal: equal, every answered
frame's row there once).

It writes the rollout manifest of the store it is given: run it on a staging stack (the
integration test gives it a private store), never on one whose rollout is in progress; it
refuses to start unless the manifest routes everything to one version, and leaves it so.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from cvloop.core.errors import CvloopError

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
DAY = dt.date(2030, 6, 1)  # the capture day of the load test's frames (its own partition)


@dataclass
class Switch:
    what: str
    split: str
    written_s: float  # seconds since the load started
    taken_s: float | None = None  # when the server answered with the new split


@dataclass
class LoadReport:
    run: str
    seconds: float
    requests: int
    answered: int
    failures: int
    overloaded_503: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    log_rows: int
    duplicate_rows: int
    answered_without_row: int
    rows_not_answered: int  # journaled, then the connection died before the answer (a kill)
    by_version: dict[str, int] = field(default_factory=dict)
    challenger_after_rollback: int = 0
    killed_worker: int | None = None
    switches: list[Switch] = field(default_factory=list)
    failure_kinds: dict[str, int] = field(default_factory=dict)

    def ok(self) -> bool:
        return (self.answered > 0 and self.duplicate_rows == 0 and self.answered_without_row == 0
                and self.challenger_after_rollback == 0)  # fmt: skip

    def as_dict(self) -> dict:
        return asdict(self)


def _frames(store, frames_dir: Path | None, out: Path, n: int = 64) -> int:
    """Copy up to ``n`` frames into ``out``: from ``frames_dir``, or from the store's
    ``frames/`` (any key layout below it)."""
    from cvloop.adapters.frame_keys import FRAMES_PREFIX

    out.mkdir(parents=True, exist_ok=True)
    exts = (".jpg", ".jpeg", ".png")
    if frames_dir is not None:
        files = sorted(p for p in frames_dir.rglob("*") if p.suffix.lower() in exts)[:n]
        for i, p in enumerate(files):
            shutil.copy(p, out / f"{i:03d}{p.suffix.lower()}")
        got = len(files)
    else:
        keys = [k for k in store.keys(f"{FRAMES_PREFIX}/") if k.lower().endswith(exts)][:n]
        for i, k in enumerate(keys):
            (out / f"{i:03d}{Path(k).suffix.lower()}").write_bytes(store.get_bytes(k))
        got = len(keys)
    if not got:
        raise CvloopError(
            f"no frames to send: {frames_dir or 'the frame store has no frames/'}",
            fix="pass --frames DIR (a folder of JPEG / PNG frames)",
        )
    return got


def _routing(url: str) -> dict:
    import httpx

    return httpx.get(f"{url}/v1/routing", timeout=10).json()


def _split_of(body: dict) -> list[tuple[str, float]]:
    return [(a["version"], float(a["share"])) for a in body.get("allocations", [])]


def run_loadtest(
    ctx,
    url: str,
    *,
    challenger: str,
    users: int = 8,
    burst_users: int = 24,
    steady_seconds: float = 20.0,
    burst_seconds: float = 10.0,
    max_requests: int = 50_000,
    kill_worker: bool = False,
    frames_dir: Path | None = None,
    workdir: Path | None = None,
    out=print,
) -> LoadReport:
    """Run the load test against the server at ``url`` serving ``ctx``'s store."""
    import httpx

    from cvloop.adapters.serve_client import worker_pids
    from registry.manifest import Allocation, RolloutManifest, read_manifest, single, write_manifest

    host = urlparse(url).hostname or ""
    if kill_worker and host not in ("127.0.0.1", "localhost", "::1"):
        raise CvloopError(f"--kill-worker needs the server on this machine, not {host}",
                          fix="run the load test on the server's host (loopback)")  # fmt: skip
    if shutil.which("locust") is None and not (Path(sys.executable).parent / "locust").exists():
        raise CvloopError("the locust command is not installed here",
                          fix="install requirements/main.lock (make setup)")  # fmt: skip
    store = ctx.store
    m = read_manifest(store)
    if m is None or len(m.allocations) != 1 or m.shadow:
        raise CvloopError(
            "the rollout manifest does not route everything to one version "
            f"({[(a.version, a.share) for a in m.allocations] if m else 'none written'}): "
            "the load test would disturb a rollout",
            fix="finish or roll back the rollout first, or run the load test on a staging stack",
        )
    champion = m.allocations[0].version
    if str(challenger) == champion:
        raise CvloopError(f"the challenger {challenger} is the version serving 100 %",
                          fix="name another registered version")  # fmt: skip
    try:
        start = _routing(url)
    except httpx.HTTPError as exc:
        raise CvloopError(f"cvloop serve does not answer at {url}: {exc}",
                          fix="start it: `cvloop services up serve` or `cvloop serve`") from None  # fmt: skip
    if _split_of(start) != [(champion, 100.0)]:
        raise CvloopError(f"the server at {url} does not serve this store's manifest "
                          f"(it routes {_split_of(start)}, the manifest {champion} 100 %)",
                          fix="point --url at the server of this project's store")  # fmt: skip
    run = uuid.uuid4().hex[:10]
    tmp = Path(tempfile.mkdtemp(prefix="cvloop-loadtest-", dir=workdir))
    n_frames = _frames(store, frames_dir, tmp / "frames")
    pids, _workers = worker_pids(url)
    phases = [(steady_seconds, users), (burst_seconds, burst_users), (steady_seconds, users)]
    env = {**os.environ, "CVLOOP_LT_FRAMES": str(tmp / "frames"),
           "CVLOOP_LT_PHASES": ",".join(f"{s:g}:{u}" for s, u in phases),
           "CVLOOP_LT_MAX_REQUESTS": str(max_requests), "CVLOOP_LT_RUN": run,
           "CVLOOP_LT_DAY": DAY.isoformat(), "CVLOOP_LT_ACKED": str(tmp / "acked.jsonl")}  # fmt: skip
    locust = shutil.which("locust") or str(Path(sys.executable).parent / "locust")
    cmd = [locust, "-f", str(LOCUSTFILE), "--headless", "--host", url, "--csv",
           str(tmp / "stats"), "--only-summary", "--stop-timeout", "10", "--loglevel", "WARNING",
           "--exit-code-on-error", "0"]  # fmt: skip
    total = 2 * steady_seconds + burst_seconds
    out(f"load test {run}: {n_frames} frames, {users} users steady, {burst_users} in the burst, "
        f"{total:g} s at most, {max_requests} requests at most, against {url} "
        f"({len(pids)} worker(s)); the manifest moves {champion} 100 % -> {challenger} 10 % "
        f"-> 50 % -> rollback")  # fmt: skip
    plan = [  # (seconds after start, what, split)
        (steady_seconds * 0.5, "canary 10 %", {champion: 90.0, str(challenger): 10.0}),
        (steady_seconds + burst_seconds * 0.3, "canary 50 %",
         {champion: 50.0, str(challenger): 50.0}),
        (steady_seconds + burst_seconds + steady_seconds * 0.25, "rollback", {champion: 100.0}),
    ]  # fmt: skip
    killed = None
    switches: list[Switch] = []
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=(tmp / "locust.log").open("w"),
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        for at, what, split in plan:
            while time.time() - t0 < at and proc.poll() is None:
                time.sleep(0.05)
            if proc.poll() is not None:
                break
            if what == "rollback":
                new = single(champion, reason=f"load test {run}: rollback")
            else:
                new = RolloutManifest([Allocation(v, s) for v, s in split.items()],
                                      stage="canary", reason=f"load test {run}: {what}")  # fmt: skip
            write_manifest(store, new, who="cvloop loadtest", reason=new.reason)
            sw = Switch(what, ", ".join(f"{v} {s:g}%" for v, s in split.items()),
                        round(time.time() - t0, 2))  # fmt: skip
            want = [(v, s) for v, s in split.items()]
            deadline, seen = time.time() + 30, 0
            while time.time() < deadline:  # three answers in a row: every worker polls alone
                try:
                    seen = seen + 1 if _split_of(_routing(url)) == want else 0
                except httpx.HTTPError:
                    seen = 0
                if seen >= 3:
                    sw.taken_s = round(time.time() - t0, 2)
                    break
                time.sleep(0.1)
            switches.append(sw)
            out(f"  {sw.written_s:6.1f} s  manifest -> {what} ({sw.split}); served from "
                f"{sw.taken_s if sw.taken_s is not None else 'never'} s")  # fmt: skip
            if kill_worker and what == "canary 50 %" and len(pids) > 1:
                killed = sorted(pids)[0]
                os.kill(killed, signal.SIGKILL)
                out(f"  {time.time() - t0:6.1f} s  SIGKILL worker {killed} (mid-burst)")
        proc.wait(timeout=total + 120)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        m_now = read_manifest(store)
        if m_now is None or [(a.version, a.share) for a in m_now.allocations] != [
            (champion, 100.0)
        ]:
            write_manifest(store, single(champion, reason=f"load test {run}: restored"),
                           who="cvloop loadtest", reason=f"load test {run}: restored")  # fmt: skip
    seconds = time.time() - t0
    return _report(ctx, url, run, tmp, t0, seconds, switches, str(challenger), killed)


def _report(ctx, url, run, tmp, t0, seconds, switches, challenger, killed) -> LoadReport:
    import csv

    from cvloop.adapters.inference_log import read_log
    from cvloop.adapters.serve_client import flush_all

    stats = list(csv.DictReader((tmp / "stats_stats.csv").open()))
    agg = next((r for r in stats if r["Name"] == "Aggregated"), None)
    if agg is None:
        raise CvloopError(f"locust wrote no statistics: {(tmp / 'locust.log').read_text()[-2000:]}",
                          fix="read the locust log above")  # fmt: skip
    kinds: dict[str, int] = {}
    fpath = tmp / "stats_failures.csv"
    if fpath.exists():
        for r in csv.DictReader(fpath.open()):
            kinds[r["Error"][:80]] = kinds.get(r["Error"][:80], 0) + int(r["Occurrences"])
    acked = [json.loads(ln) for ln in (tmp / "acked.jsonl").read_text().splitlines() if ln]
    answered = {a["key"] for a in acked}
    # every worker uploads its journal (a new worker adopts a killed one's within its poll)
    prefix = f"loadtest/{run}/"
    rows: list[str] = []
    deadline = time.time() + 90
    while time.time() < deadline:
        flush_all(url)
        table = read_log(ctx.store, DAY, DAY + dt.timedelta(days=1), columns=["frame_key"])
        rows = [k for k in table.column("frame_key").to_pylist() if k.startswith(prefix)]
        if answered <= set(rows):
            break
        time.sleep(1.0)
    by_version: dict[str, int] = {}
    for a in acked:
        by_version[str(a["version"])] = by_version.get(str(a["version"]), 0) + 1
    rollback = next((s for s in switches if s.what == "rollback"), None)
    after = 0
    if rollback is not None and rollback.taken_s is not None:
        # answered by the challenger over 1 s after a worker showed the rollback (each
        # worker polls the manifest on its own)
        after = sum(1 for a in acked if a["version"] == challenger
                    and a["t"] - t0 > rollback.taken_s + 1.0)  # fmt: skip
    return LoadReport(
        run=run, seconds=round(seconds, 1), requests=int(agg["Request Count"]),
        answered=len(acked), failures=int(agg["Failure Count"]),
        overloaded_503=sum(n for k, n in kinds.items() if "503" in k),
        requests_per_s=round(float(agg["Requests/s"]), 1), p50_ms=float(agg["50%"]),
        p95_ms=float(agg["95%"]), p99_ms=float(agg["99%"]), log_rows=len(rows),
        duplicate_rows=len(rows) - len(set(rows)),
        answered_without_row=len(answered - set(rows)),
        rows_not_answered=len(set(rows) - answered), by_version=by_version,
        challenger_after_rollback=after, killed_worker=killed, switches=switches,
        failure_kinds=kinds,
    )  # fmt: skip
