"""The durable inference-log writer: journal first, parts after, nothing lost or doubled
across a kill, a torn line or a store that is down."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cvloop.adapters.inference_log import Detection, FrameRecord, LogSchemaError, read_log
from cvloop.adapters.storage import LocalStorage
from cvloop.inference_log import LogWriter, recover

T0 = dt.datetime(2026, 10, 5, 23, 59, 50, tzinfo=dt.UTC)


def _rec(i: int, version: str = "1") -> FrameRecord:
    return FrameRecord(
        T0 + dt.timedelta(seconds=2 * i), "cam-a", f"k/{i:05d}.jpg", version, 5.0 + i % 7,
        [Detection("forklift", 0.8, 0.5, 0.5, 0.2, 0.1)] * (i % 3),
    )  # fmt: skip


def _keys(store, day0: dt.date | None = None, days: int = 2) -> list[str]:
    day0 = day0 or T0.date()
    t = read_log(store, day0, day0 + dt.timedelta(days=days))
    return t.column("frame_key").to_pylist()


def test_rows_reach_parts_by_size_and_on_close(tmp_path):
    store = LocalStorage(tmp_path / "store")
    w = LogWriter(store, tmp_path / "spool", flush_rows=5, flush_seconds=3600, fsync=False)
    w.write([_rec(i) for i in range(3)])
    assert _keys(store) == []  # journaled, not uploaded yet
    w.write([_rec(i) for i in range(3, 6)])  # 6 >= 5 rows: the segment closes
    deadline = time.monotonic() + 10
    while len(_keys(store)) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(_keys(store)) == [f"k/{i:05d}.jpg" for i in range(6)]
    w.write([_rec(i) for i in range(6, 9)])
    assert w.stats.pending_rows == 3 and w.stats.lag_seconds() >= 0
    w.close()
    assert sorted(_keys(store)) == [f"k/{i:05d}.jpg" for i in range(9)]
    assert w.stats.rows_uploaded == 9 and w.stats.pending_rows == 0
    assert not (tmp_path / "spool" / w.writer_id).exists()
    # the rows crossed midnight: one part per date, same part name
    parts = sorted(p.name for p in (tmp_path / "store").rglob("*.parquet"))
    assert len(parts) == 3 and len(set(parts)) == 2


def test_flush_seconds_uploads_a_quiet_segment(tmp_path):
    store = LocalStorage(tmp_path / "store")
    with LogWriter(store, tmp_path / "spool", flush_rows=1000, flush_seconds=0.2) as w:
        w.write([_rec(1)])
        deadline = time.monotonic() + 10
        while not _keys(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _keys(store) == ["k/00001.jpg"]


def test_flushes_racing_the_background_upload_lose_and_double_nothing(tmp_path):
    """/v1/log/flush (a request thread) while the writer's own thread uploads segments that
    close by size: both see the same closed segments; each is uploaded once, no flush fails
    on a segment the other already uploaded (seen in the demo before uploads were serialized)."""
    import threading

    store = LocalStorage(tmp_path / "store")
    w = LogWriter(store, tmp_path / "spool", flush_rows=3, flush_seconds=0.05, fsync=False)
    errors: list[BaseException] = []
    done = threading.Event()

    def flusher() -> None:
        while not done.is_set():
            try:
                w.flush()
            except BaseException as exc:  # what a flush raises, collected
                errors.append(exc)

    threads = [threading.Thread(target=flusher) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(0, 600, 2):
        w.write([_rec(i), _rec(i + 1)])
    done.set()
    for t in threads:
        t.join()
    w.close()
    assert not errors, errors[:3]
    keys = _keys(store)
    assert len(keys) == 600 and len(set(keys)) == 600


def test_segments_closing_by_time_under_load_lose_no_row(tmp_path):
    """A segment closes by age while requests keep writing: the writer's thread uploads the
    closed ones while new ones open. A segment opened between the check of which one is
    open and the listing must not be taken for closed (uploaded with its first row, then
    deleted while its later rows go into the deleted file)."""
    store = LocalStorage(tmp_path / "store")
    w = LogWriter(store, tmp_path / "spool", flush_rows=10_000, flush_seconds=0.002,
                  fsync=False)  # fmt: skip
    n, deadline = 0, time.monotonic() + 2.0
    while time.monotonic() < deadline:
        w.write([_rec(n)])
        n += 1
    w.close()
    keys = _keys(store, days=40)
    assert w.stats.parts_written > 20  # many segments closed by time, uploaded meanwhile
    assert len(keys) == n and len(set(keys)) == n, (n, len(keys))


def test_a_bad_record_is_refused_before_anything_is_journaled(tmp_path):
    store = LocalStorage(tmp_path / "store")
    with LogWriter(store, tmp_path / "spool") as w:
        bad = _rec(1)
        bad.detections = [Detection("forklift", 1.7, 0.5, 0.5, 0.2, 0.1)]
        with pytest.raises(LogSchemaError, match=r"confidence 1\.7"):
            w.write([_rec(0), bad])
        assert w.stats.rows_journaled == 0


_CHILD = textwrap.dedent(
    """
    import datetime as dt, sys, time
    from cvloop.adapters.inference_log import FrameRecord
    from cvloop.adapters.storage import LocalStorage
    from cvloop.inference_log import LogWriter
    store = LocalStorage(sys.argv[1])
    w = LogWriter(store, sys.argv[2], flush_rows=7, flush_seconds=3600, writer_id="child")
    t0 = dt.datetime(2026, 10, 5, 12, tzinfo=dt.UTC)
    i = 0
    while True:
        w.write([FrameRecord(t0 + dt.timedelta(milliseconds=i), "cam", f"k/{i:06d}", "1", 1.0)])
        print(i, flush=True)  # acknowledged: the row is journaled
        i += 1
        time.sleep(0.002)
    """
)


def test_a_killed_writer_loses_no_acknowledged_row_and_doubles_none(tmp_path):
    store_dir, spool = tmp_path / "store", tmp_path / "spool"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(store_dir), str(spool)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    acked = []
    for line in proc.stdout:
        acked.append(int(line))
        if len(acked) >= 150:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    acked += [int(x) for x in proc.stdout.read().split()]
    # a torn tail: a write cut in the middle (its request was never answered)
    seg = sorted((spool / "child").glob("seg-*.jsonl"))[-1]
    with seg.open("ab") as f:
        f.write(b'{"ts": 17, "camera": "ca')
    store = LocalStorage(store_dir)
    rep = recover(store, spool)
    assert rep.spools == ["child"] and rep.torn_lines == 1
    again = recover(store, spool)  # nothing left to adopt
    assert again.rows == 0
    keys = read_log(store, dt.date(2026, 10, 5), dt.date(2026, 10, 6)).column("frame_key")
    got = [int(k.split("/")[1]) for k in keys.to_pylist()]
    assert len(got) == len(set(got)), "a row was written twice"
    assert set(acked) <= set(got), f"lost acknowledged rows: {sorted(set(acked) - set(got))[:5]}"


def test_a_crash_between_upload_and_delete_replaces_the_part(tmp_path):
    """The segment is uploaded again under the same part name: rows stay single."""
    store = LocalStorage(tmp_path / "store")
    spool = tmp_path / "spool"
    w = LogWriter(store, spool, flush_rows=10_000, flush_seconds=3600, writer_id="w1")
    w.write([_rec(i) for i in range(4)])
    seg = next((spool / "w1").glob("seg-*.jsonl"))
    saved = seg.read_bytes()
    w.close()
    (spool / "w1").mkdir(parents=True)
    (spool / "w1" / seg.name).write_bytes(saved)  # as if the delete never happened
    recover(store, spool)
    assert sorted(_keys(store)) == [f"k/{i:05d}.jpg" for i in range(4)]


def test_a_store_that_is_down_keeps_the_segment(tmp_path):
    class Down(LocalStorage):
        fail = True

        def put_bytes(self, key, data):
            if self.fail:
                raise OSError("store unreachable")
            return super().put_bytes(key, data)

    store = Down(tmp_path / "store")
    w = LogWriter(store, tmp_path / "spool", flush_rows=2, flush_seconds=3600, writer_id="w")
    w.write([_rec(0), _rec(1)])
    with pytest.raises(OSError):
        w.flush()
    assert w.stats.upload_failures >= 1 and w.stats.pending_rows == 2
    assert "unreachable" in (w.stats.last_error or "")
    store.fail = False
    w.close()
    assert sorted(_keys(store)) == ["k/00000.jpg", "k/00001.jpg"]


def test_writers_starting_together_never_adopt_a_live_spool(tmp_path):
    """Each new writer recovers abandoned spools while others are being born beside it (the
    workers of `cvloop serve` start together): none may find another's folder unlocked and
    remove it (CI saw a worker fail to start with its spool folder gone). Half the writers
    die without closing; every row is in the log once."""
    import threading

    store = LocalStorage(tmp_path / "store")
    root = tmp_path / "spool"
    n, rounds = 12, 6
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def life(t: int) -> None:
        try:
            for r in range(rounds):
                barrier.wait(timeout=30)
                w = LogWriter(store, root, flush_rows=10_000, flush_seconds=3600, fsync=False,
                              recover_every_s=3600)  # fmt: skip
                w.write([_rec(1000 * t + r)])
                if t % 2 == 0:
                    w.close()
                else:  # dies: its thread stops, its lock goes, its journal stays
                    w._stop.set()
                    w._wake.set()
                    w._thread.join()
                    os.close(w._lock_fd)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=life, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, f"a writer failed to start: {errors[0]!r}"
    recover(store, root)
    got = sorted(_keys(store))
    want = sorted(f"k/{1000 * t + r:05d}.jpg" for t in range(n) for r in range(rounds))
    assert got == want
    assert [p.name for p in root.iterdir()] == []  # nothing abandoned, nothing half-made


def test_a_spool_being_made_is_left_alone_until_it_is_old(tmp_path):
    """A folder still under its temporary name belongs to a writer being born: recovery
    never touches it; one left by a writer that died at birth (no segment) goes after
    10 minutes."""
    store = LocalStorage(tmp_path / "store")
    root = tmp_path / "spool"
    young, old = root / ".new-w1-aaaa", root / ".new-w2-bbbb"
    for d in (young, old):
        d.mkdir(parents=True)
        (d / "lock").touch()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    rep = recover(store, root)
    assert rep.spools == [] and young.is_dir() and not old.exists()
