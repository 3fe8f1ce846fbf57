"""A durable writer of the inference log, for any Python serving loop.

``cvloop serve`` writes the log through it, and so can a team's own server (a Triton client,
a batch job)::

    from cvloop.inference_log import Detection, FrameRecord, LogWriter

    with LogWriter(store, spool_dir="/var/lib/cvloop/spool") as log:
        log.write([FrameRecord(ts, "cam-3", key, "7", 12.5, [Detection("forklift", 0.91, ...)])])

**Journal first, Parquet after.** :meth:`LogWriter.write` appends the rows to a journal
segment on local disk (one ``write`` call, then ``fsync`` unless turned off) and returns:
from then on the rows survive a crash of the process (and, with ``fsync``, of the machine).
A background thread turns each closed segment into one Parquet part of the log
(``inference-log/date=…/part-<writer>-<seq>.parquet``) and only then deletes the segment.
A segment is closed when it holds ``flush_rows`` rows or is ``flush_seconds`` old, and on
:meth:`close` (a clean shutdown, SIGTERM in ``cvloop serve``).

**No row lost, none written twice.** The part of a segment is named by its writer and
sequence number, so converting the same segment again (a crash between the upload and the
delete) replaces the part instead of duplicating its rows. Each writer holds an exclusive
lock on its spool folder for its whole life, taken before the folder gets its writer's name
(so no other process ever sees it unlocked); a writer that finds a folder whose lock is
free (its owner died) adopts it and uploads what it left (:func:`recover`). A journal line
torn by a kill in the middle of a write belonged to a request that was never answered, so
it is dropped and counted, never guessed.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cvloop.adapters.inference_log import (
    LOG_PREFIX,
    Detection,
    FrameRecord,
    to_table,
    write_log,
)
from cvloop.adapters.storage import Storage

SEGMENT_SUFFIX = ".jsonl"
LOCK_NAME = "lock"


@dataclass
class WriterStats:
    """What a writer has done (the server's /metrics reads it)."""

    rows_journaled: int = 0
    rows_uploaded: int = 0
    parts_written: int = 0
    upload_failures: int = 0
    torn_lines: int = 0
    pending_rows: int = 0
    oldest_pending: float | None = None  # time.time() of the oldest row not in a part yet
    last_error: str | None = None

    def lag_seconds(self, now: float | None = None) -> float:
        if self.oldest_pending is None:
            return 0.0
        return max(0.0, (now or time.time()) - self.oldest_pending)


@dataclass
class RecoveryReport:
    """What :func:`recover` found in abandoned spool folders."""

    spools: list[str] = field(default_factory=list)
    rows: int = 0
    parts: list[str] = field(default_factory=list)
    torn_lines: int = 0


def _encode(r: FrameRecord) -> dict:
    return {
        "ts": int(r.ts.timestamp() * 1000),
        "camera": r.camera,
        "camera_group": r.camera_group,
        "frame_key": r.frame_key,
        "model_version": r.model_version,
        "latency_ms": r.latency_ms,
        "error": r.error,
        "detections": [[d.label, d.conf, d.cx, d.cy, d.w, d.h] for d in r.detections],
    }


def _decode(row: dict) -> FrameRecord:
    return FrameRecord(
        dt.datetime.fromtimestamp(row["ts"] / 1000, dt.UTC),
        row["camera"],
        row["frame_key"],
        row["model_version"],
        float(row["latency_ms"]),
        [Detection(*d) for d in row["detections"]],
        row.get("camera_group") or "default",
        row.get("error"),
    )


def read_segment(path: Path) -> tuple[list[FrameRecord], int]:
    """The rows of a journal segment and the count of torn lines (a write cut by a kill)."""
    rows, torn = [], 0
    data = path.read_bytes()
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            rows.append(_decode(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            torn += 1
    return rows, torn


def _segments(spool: Path) -> list[Path]:
    return sorted(spool.glob(f"seg-*{SEGMENT_SUFFIX}"))


def _seq(segment: Path) -> int:
    return int(segment.name.removeprefix("seg-").removesuffix(SEGMENT_SUFFIX))


def upload_segment(store: Storage, writer_id: str, segment: Path, prefix: str = LOG_PREFIX):
    """One closed segment -> one Parquet part (named by writer and sequence), then delete it.

    Returns (rows, part keys, torn lines)."""
    rows, torn = read_segment(segment)
    keys = (
        write_log(store, rows, part=f"{writer_id}-{_seq(segment):06d}", prefix=prefix)
        if rows
        else []
    )
    segment.unlink()
    return len(rows), keys, torn


def _try_lock(path: Path) -> int | None:
    """An exclusive, non-blocking lock on ``path`` (created); the fd, or None if held.

    Raises FileNotFoundError when the folder of ``path`` is gone."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _lock_existing_spool(spool: Path) -> int | None:
    """The lock of an existing spool folder if its writer is gone; None while a live writer
    holds it, or when the folder went away meanwhile (another process adopted and removed
    it: the lock then held would be on a file no longer in the folder)."""
    try:
        fd = _try_lock(spool / LOCK_NAME)
    except FileNotFoundError:
        return None
    if fd is None:
        return None
    try:
        same = os.fstat(fd).st_ino == os.stat(spool / LOCK_NAME).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


NEW_PREFIX = ".new-"  # a spool folder being made: locked before it gets its writer's name


def _claim_spool(root: Path, writer_id: str) -> tuple[Path, int]:
    """The spool folder of ``writer_id``, locked for this process's life.

    A new folder is made under a temporary name that :func:`recover` never touches, locked,
    and only then renamed to the writer's name, so no other process can find it unlocked (a
    recovery that did would remove a live writer's folder: found by two workers of
    ``cvloop serve`` starting together). A folder of the same name left by an earlier life
    of this writer is adopted under its lock, its segments kept."""
    spool = root / writer_id
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        if spool.is_dir():
            fd = _lock_existing_spool(spool)
            if fd is not None:
                return spool, fd
            if spool.is_dir():
                raise RuntimeError(f"spool {spool} is held by another live writer")
            continue  # adopted and removed meanwhile: make it anew
        tmp = root / f"{NEW_PREFIX}{writer_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        fd = _try_lock(tmp / LOCK_NAME)
        assert fd is not None  # nobody else locks a folder it did not make
        try:
            os.rename(tmp, spool)
        except OSError:  # the name was taken meanwhile (a non-empty folder)
            os.close(fd)
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        return spool, fd
    raise RuntimeError(f"could not claim the spool folder {spool}: it keeps changing")


def _sweep_unborn(root: Path, older_than_s: float = 600.0) -> None:
    """Remove folders of writers that died while making their spool (they hold no segment:
    a segment is only written after the rename)."""
    now = time.time()
    for tmp in root.glob(f"{NEW_PREFIX}*"):
        try:
            if now - tmp.stat().st_mtime < older_than_s:
                continue
        except FileNotFoundError:
            continue
        fd = _lock_existing_spool(tmp)
        if fd is not None:
            try:
                shutil.rmtree(tmp, ignore_errors=True)
            finally:
                os.close(fd)


def recover(
    store: Storage, spool_root: str | Path, *, prefix: str = LOG_PREFIX, skip: str | None = None
) -> RecoveryReport:
    """Upload what writers that died left in ``spool_root`` (folders whose lock is free).

    Safe to run from several processes at once: a folder is adopted under its own lock, and
    its parts keep their dead writer's names, so a second upload replaces, never duplicates.
    """
    rep = RecoveryReport()
    root = Path(spool_root)
    if not root.is_dir():
        return rep
    spools = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name != skip and not p.name.startswith(NEW_PREFIX)
    )
    for spool in spools:
        fd = _lock_existing_spool(spool)
        if fd is None:
            continue  # a live writer owns it, or another process adopted it meanwhile
        try:
            for seg in _segments(spool):
                rows, keys, torn = upload_segment(store, spool.name, seg, prefix)
                rep.rows += rows
                rep.parts += keys
                rep.torn_lines += torn
            rep.spools.append(spool.name)
            shutil.rmtree(spool, ignore_errors=True)
        finally:
            os.close(fd)
    _sweep_unborn(root)
    return rep


class LogWriter:
    """Journal-first writer of the inference log (see the module docstring).

    Args:
        store: where the log lives (the frame store).
        spool_dir: a local folder for journals; one sub-folder per writer.
        flush_rows: close a segment (and upload it) at this many rows ...
        flush_seconds: ... or when its first row is this old.
        fsync: ``fsync`` each write (survives a machine crash, not only a process kill).
        writer_id: names the parts (default: host, pid and a random suffix).
        on_event: called with a line for each upload failure or recovery (logging).
    """

    def __init__(
        self,
        store: Storage,
        spool_dir: str | Path,
        *,
        flush_rows: int = 2000,
        flush_seconds: float = 10.0,
        fsync: bool = True,
        writer_id: str | None = None,
        prefix: str = LOG_PREFIX,
        on_event: Callable[[str], None] | None = None,
        recover_every_s: float = 30.0,
    ) -> None:
        self.store = store
        self.root = Path(spool_dir)
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.fsync = fsync
        self.prefix = prefix
        self.on_event = on_event or (lambda _line: None)
        self.writer_id = writer_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.spool, self._lock_fd = _claim_spool(self.root, self.writer_id)
        self.stats = WriterStats()
        self._mu = threading.Lock()
        # one upload at a time: the background thread and a flush() (a request to
        # /v1/log/flush, SIGTERM) would otherwise both upload a segment, and the second
        # would find it gone
        self._upload_mu = threading.Lock()
        self._seq = max((_seq(s) for s in _segments(self.spool)), default=0)
        self._fd: int | None = None
        self._rows_in_segment = 0
        self._segment_started = 0.0
        self._pending: dict[int, list] = {}  # seq -> [time of its first row, rows]
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._recover_every_s = recover_every_s
        self._closed = False
        self.recovered = self._recover()
        self._thread = threading.Thread(target=self._run, name="cvloop-log-writer", daemon=True)
        self._thread.start()

    # ---- writing ------------------------------------------------------------------------
    def write(self, records: Sequence[FrameRecord]) -> None:
        """Journal ``records``; returns when they are durable. Validates them first (a bad
        record raises :class:`~cvloop.adapters.inference_log.LogSchemaError`, nothing is
        written)."""
        if not records:
            return
        to_table(list(records))  # the contract, checked before anything is journaled
        data = b"".join(
            json.dumps(_encode(r), separators=(",", ":")).encode() + b"\n" for r in records
        )
        with self._mu:
            if self._closed:
                raise RuntimeError("the log writer is closed")
            if self._fd is None:
                self._open_segment()
            os.write(self._fd, data)
            if self.fsync:
                os.fsync(self._fd)
            self._rows_in_segment += len(records)
            self._pending.setdefault(self._seq, [time.time(), 0])[1] += len(records)
            self.stats.rows_journaled += len(records)
            self._update_pending()
            if self._rows_in_segment >= self.flush_rows:
                self._close_segment()
                self._wake.set()

    def _open_segment(self) -> None:
        self._seq += 1
        path = self.spool / f"seg-{self._seq:09d}{SEGMENT_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._rows_in_segment = 0
        self._segment_started = time.monotonic()

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._rows_in_segment = 0

    # ---- flushing -----------------------------------------------------------------------
    def flush(self) -> list[str]:
        """Close the open segment and upload every closed one now; returns the part keys.
        A failed upload keeps its segment for the next try (and raises)."""
        with self._mu:
            self._close_segment()
        return self._upload_closed(raise_errors=True)

    def _upload_closed(self, raise_errors: bool = False) -> list[str]:
        with self._upload_mu:
            return self._upload_closed_locked(raise_errors)

    def _upload_closed_locked(self, raise_errors: bool) -> list[str]:
        keys: list[str] = []
        # the closed segments, listed under the lock that opens segments: listed after it,
        # a segment opened in between would look closed, be uploaded with its first rows and
        # deleted while rows kept going into the deleted file (found by the load test)
        with self._mu:
            open_seq = self._seq if self._fd is not None else None
            closed = [s for s in _segments(self.spool) if _seq(s) != open_seq]
        for seg in closed:
            try:
                rows, part_keys, torn = upload_segment(self.store, self.writer_id, seg, self.prefix)
            except Exception as exc:  # the store is down: keep the segment, try again later
                self.stats.upload_failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
                self.on_event(f"inference log: upload of {seg.name} failed, kept: {exc}")
                if raise_errors:
                    raise
                break
            keys += part_keys
            with self._mu:
                self.stats.rows_uploaded += rows
                self.stats.parts_written += bool(part_keys)
                self.stats.torn_lines += torn
                self.stats.last_error = None
                self._pending.pop(_seq(seg), None)
                self._update_pending()
        return keys

    def _update_pending(self) -> None:
        self.stats.pending_rows = sum(n for _, n in self._pending.values())
        self.stats.oldest_pending = min((t for t, _ in self._pending.values()), default=None)

    def _recover(self) -> RecoveryReport:
        rep = recover(self.store, self.root, prefix=self.prefix, skip=self.writer_id)
        if rep.spools:
            self.on_event(
                f"inference log: recovered {rep.rows} rows in {len(rep.parts)} parts from "
                f"{len(rep.spools)} writer(s) that stopped without flushing"
                + (
                    f" ({rep.torn_lines} torn lines of unanswered requests dropped)"
                    if rep.torn_lines
                    else ""
                )
            )
        return rep

    def _run(self) -> None:
        last_recover = time.monotonic()
        tick = min(1.0, self.flush_seconds / 4)
        while not self._stop.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            with self._mu:
                if (
                    self._fd is not None
                    and self._rows_in_segment
                    and time.monotonic() - self._segment_started >= self.flush_seconds
                ):
                    self._close_segment()
            self._upload_closed()
            if time.monotonic() - last_recover >= self._recover_every_s:
                last_recover = time.monotonic()
                try:
                    self._recover()
                except Exception as exc:
                    self.on_event(f"inference log: recovery failed, will retry: {exc}")

    def close(self) -> list[str]:
        """Flush everything and release the spool (a clean shutdown). If the store cannot be
        reached the segments stay in the spool and the next writer uploads them."""
        with self._mu:
            if self._closed:
                return []
            self._closed = True
            self._close_segment()
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        try:
            keys = self._upload_closed(raise_errors=True)
        except Exception as exc:
            self.on_event(f"inference log: left {self.spool} for the next writer: {exc}")
            os.close(self._lock_fd)
            return []
        shutil.rmtree(self.spool, ignore_errors=True)
        os.close(self._lock_fd)
        return keys

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
