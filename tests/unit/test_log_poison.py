"""A bad inference-log part never stops a reader (issue 21, "inputs that must not stop the
loop"): each kind of bad part is quarantined with its reason, the rest of the log is read,
nothing is lost (the bytes are kept), and the canary holds instead of promoting."""

from __future__ import annotations

import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cvloop.adapters.inference_log import (
    SCHEMA,
    FrameRecord,
    log_dates,
    quarantined,
    read_log,
    write_log,
)
from cvloop.adapters.parquet import read_parquet
from cvloop.adapters.storage import LocalStorage
from cvloop.core.rollout import Canary, CanaryCheck, decide, with_lost_parts
from cvloop.stages.canary import log_watermark

DAY = dt.date(2026, 3, 2)


def _frames(day: dt.date, n: int, cam: str = "cam-1") -> list[FrameRecord]:
    t0 = dt.datetime.combine(day, dt.time(8), tzinfo=dt.UTC)
    return [FrameRecord(t0 + dt.timedelta(minutes=i), cam, f"frames/{cam}/{day}/{i}.jpg", "1", 5.0)
            for i in range(n)]  # fmt: skip


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@pytest.fixture
def poisoned(tmp_path):
    """A log of two good days plus one part of each bad kind."""
    store = LocalStorage(tmp_path / "store")
    write_log(store, _frames(DAY, 10))
    write_log(store, _frames(DAY + dt.timedelta(days=1), 7))
    good = store.get_bytes(store.keys(f"inference-log/date={DAY}/")[0])
    d = f"inference-log/date={DAY}"
    table = read_parquet(good)
    other_day = table.set_column(
        0, "ts", pa.array([dt.datetime(2031, 5, 5, tzinfo=dt.UTC)] * 10, SCHEMA.field("ts").type)
    )
    bad = {
        f"{d}/part-zero.parquet": b"",
        f"{d}/part-truncated.parquet": good[: len(good) // 2],
        f"{d}/part-text.parquet": b"camera,ts\ncam-1,yesterday\n",
        f"{d}/part-columns.parquet": _parquet(table.drop_columns(["detections", "camera"])),
        f"{d}/part-types.parquet": _parquet(
            table.set_column(5, "latency_ms", pa.array(["fast"] * 10))
        ),
        f"{d}/part-elsewhen.parquet": _parquet(other_day),
        "inference-log/date=bogus/part-odd.parquet": good,
        "inference-log/date=2026-13-45/part-nodate.parquet": good,
    }
    for k, v in bad.items():
        store.put_bytes(k, v)
    return store, bad


def test_every_bad_part_is_quarantined_and_the_rest_is_read(poisoned, capsys):
    store, bad = poisoned
    got = read_log(store, DAY, DAY + dt.timedelta(days=2))
    assert got.num_rows == 17  # both good days, whole
    assert log_dates(store) == [DAY, DAY + dt.timedelta(days=1)]
    in_window = {r["key"] for r in quarantined(store)}
    # the odd folders are found by the listing (log_dates), the unreadable parts by the read
    assert in_window == set(bad), set(bad) ^ in_window
    for key, data in bad.items():
        assert not store.exists(key)  # out of the log ...
        moved = key.replace("inference-log/", "inference-log-quarantine/", 1)
        assert store.get_bytes(moved) == data  # ... with its bytes unchanged
        rec = json.loads(store.get_text(moved + ".reason.json"))
        assert rec["key"] == key and rec["fix"].startswith("repair or rewrite")
    reasons = {r["key"].rsplit("/", 1)[1]: r["reason"] for r in quarantined(store)}
    assert "zero bytes" in reasons["part-zero.parquet"]
    assert "unreadable as inference-log/v1" in reasons["part-truncated.parquet"]
    assert "unreadable" in reasons["part-text.parquet"]
    assert "unreadable" in reasons["part-columns.parquet"]
    assert "unreadable" in reasons["part-types.parquet"]
    assert "10 of 10 rows have a ts outside date=2026-03-02" in reasons["part-elsewhen.parquet"]
    assert "'date=bogus'" in reasons["part-odd.parquet"]
    assert "'date=2026-13-45'" in reasons["part-nodate.parquet"]
    # each was named on stderr as it was moved
    err = capsys.readouterr().err
    assert err.count("inference log: quarantined") == len(bad)
    # a second read finds a clean log: nothing moved again, same rows
    assert read_log(store, DAY, DAY + dt.timedelta(days=2)).num_rows == 17
    assert "quarantined" not in capsys.readouterr().err
    # a record of a partition outside the window is not in the window's list
    assert {r["date"] for r in quarantined(store, since=DAY + dt.timedelta(days=1))} == {None}


def test_a_store_that_fails_is_an_error_not_a_silent_gap(tmp_path):
    store = LocalStorage(tmp_path / "store")
    write_log(store, _frames(DAY, 3))

    class Down(LocalStorage):
        def get_bytes(self, key):
            raise OSError(f"connection refused reading {key}")

    down = Down(tmp_path / "store")
    with pytest.raises(OSError, match="connection refused"):
        read_log(down, DAY, DAY + dt.timedelta(days=1))
    assert quarantined(store) == [] and read_log(store, DAY, DAY + dt.timedelta(days=1)).num_rows


def test_a_fleet_logging_again_after_a_month_of_silence_keeps_the_clock(tmp_path):
    """40 days without a frame (a site closed for the season), then frames again: the new
    partition is the log's clock, vouched for by today's date. The rollout tests broke on
    the day the gap between their days and the monitor's fixed history passed 31."""
    store = LocalStorage(tmp_path / "store")
    write_log(store, _frames(DAY, 5))
    back = DAY + dt.timedelta(days=40)
    write_log(store, _frames(back, 4))
    newest = _frames(back, 4)[-1].ts
    assert log_watermark(store, today=back) == newest
    assert log_watermark(store, today=back - dt.timedelta(days=20)) == newest  # simulated ahead
    # nothing vouches for it: 40 days after the last frames and after today
    assert log_watermark(store, today=DAY) == _frames(DAY, 5)[-1].ts


def test_the_watermark_passes_over_a_far_future_partition_and_rows_of_another_day(tmp_path):
    store = LocalStorage(tmp_path / "store")
    write_log(store, _frames(DAY, 5))
    newest = _frames(DAY, 5)[-1].ts
    assert log_watermark(store) == newest
    # a writer's clock years ahead, in its own partition: not the log's clock
    write_log(store, _frames(dt.date(2999, 1, 1), 3))
    assert log_watermark(store) == newest
    assert log_watermark(store, today=DAY) == newest
    # ... and rows of 2031 in today's partition: quarantined by the read, not the clock
    t = read_parquet(store.get_bytes(store.keys(f"inference-log/date={DAY}/")[0]))
    ts = pa.array([dt.datetime(2031, 1, 1, tzinfo=dt.UTC)] * t.num_rows, SCHEMA.field("ts").type)
    store.put_bytes(
        f"inference-log/date={DAY}/part-late.parquet", _parquet(t.set_column(0, "ts", ts))
    )
    assert log_watermark(store) == newest
    assert [r["key"].rsplit("/", 1)[1] for r in quarantined(store)] == ["part-late.parquet"]
    # a window of centuries is read from one listing, not one per day
    assert read_log(store, DAY, dt.date(3000, 1, 1)).num_rows == 8


def _canary(status: str, checks=()) -> Canary:
    return Canary(
        status, 500, 4500, list(checks), evidence="guards" if status == "breach" else "pairing"
    )


def test_a_window_that_lost_parts_holds_and_a_breach_still_rolls_back():
    lost = ["inference-log/date=2026-03-02/part-zero.parquet (zero bytes)"]
    now = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
    args = dict(approval_before_share=100.0, approved=False, rejected=False,
                approval_asked_at=None, deadline_hours=48, now=now)  # fmt: skip
    ok = with_lost_parts(_canary("ok"), lost)
    assert ok.status == "insufficient" and "1 part(s) of this window quarantined" in ok.reasons[0]
    d = decide(0, [10.0, 50.0, 100.0], [8.0, 8.0, 8.0], 30.0, ok, **args)
    assert d.action == "hold" and "quarantined" in d.reason  # 30 h served: would advance
    breach = with_lost_parts(
        _canary("breach", [CanaryCheck("error_rate", False, "20% vs 0%")]), lost
    )
    d = decide(0, [10.0, 50.0, 100.0], [8.0, 8.0, 8.0], 1.0, breach, **args)
    assert d.action == "rollback" and "error_rate" in d.reason
    assert with_lost_parts(_canary("ok"), []).status == "ok"


def test_a_window_is_judged_without_its_own_lost_parts_only(poisoned):
    from cvloop.adapters.inference_log import lost_parts

    store, bad = poisoned
    read_log(store, DAY, DAY + dt.timedelta(days=2))  # the six unreadable ones ...
    log_dates(store)  # ... and the two in odd folders
    today = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    dated = {k for k in bad if "date=2026-03-02/" in k}
    # the partitions of the window, and the undated parts found since the window began
    assert {r["key"] for r in lost_parts(store, DAY, DAY, found_from=today[:10])} == set(bad)
    # a later window: none of its partitions lost a part; the undated ones were found before
    later = DAY + dt.timedelta(days=5)
    assert lost_parts(store, later, later, found_from="2999-01-01") == []
    # a window that starts after the finding judges only its own dated parts
    assert {r["key"] for r in lost_parts(store, DAY, DAY, found_from="2999-01-01")} == dated
