"""The quarterly refresh's sample: spread evenly over camera x month x part of day, capped by
what each stratum has, deterministic for a quarter."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from cvloop.core.holdout import daypart, refresh_target, stratified_sample


def _rows(camera: str, day: str, hours: list[int], per_hour: int) -> list[dict]:
    out = []
    for h in hours:
        for i in range(per_hour):
            ts = dt.datetime.fromisoformat(f"{day}T{h:02d}:00:00+00:00") + dt.timedelta(minutes=i)
            out.append({"key": f"{camera}/{ts.isoformat()}", "camera": camera,
                        "ts_ms": int(ts.timestamp() * 1000), "sha256": f"{camera}{ts}"})  # fmt: skip
    return out


def test_daypart_buckets():
    at = [dt.datetime(2026, 7, 1, h, tzinfo=dt.UTC) for h in (0, 5, 6, 12, 17, 18, 23)]
    assert [daypart(int(t.timestamp() * 1000)) for t in at] == [
        "night", "night", "morning", "afternoon", "afternoon", "evening", "evening"]  # fmt: skip


def test_each_stratum_gets_an_equal_share_and_a_small_one_gives_its_rest_away():
    rows = _rows("cam-01", "2026-07-01", [2, 8, 14, 20], 50) + _rows("cam-02", "2026-08-01", [8], 3)
    s = stratified_sample(rows, 43, seed="q3")
    assert len(s.rows) == 43
    per = Counter(r["why"][0].split(": ", 1)[1] for r in s.rows)
    assert per["cam-02, 2026-08, morning"] == 3  # all it had
    big = [n for k, n in per.items() if k.startswith("cam-01")]
    assert sorted(big) == [10, 10, 10, 10]  # the other 40 evenly
    assert s.available["cam-02 2026-08 morning"] == 3


def test_the_same_quarter_picks_the_same_frames_and_another_seed_others():
    rows = _rows("cam-01", "2026-07-01", [8, 14], 40)
    a = [r["key"] for r in stratified_sample(rows, 20, seed="q3").rows]
    b = [r["key"] for r in stratified_sample(list(reversed(rows)), 20, seed="q3").rows]
    c = [r["key"] for r in stratified_sample(rows, 20, seed="q4").rows]
    assert a == b and a != c and len(set(a)) == 20


def test_fewer_frames_than_the_target_takes_them_all():
    rows = _rows("cam-01", "2026-07-01", [8], 5)
    assert len(stratified_sample(rows, 300, seed="q").rows) == 5


def test_refresh_target_stays_within_the_holdout_bounds():
    assert refresh_target(300, 200, 500) == 300
    assert refresh_target(100, 200, 500) == 200
    assert refresh_target(900, 200, 500) == 500


def test_an_adoption_carves_its_holdout_by_any_strata_it_names():
    # imported frames have no camera or time: the adoption stratifies by split and class
    rows = [{"sha256": f"{i:04x}", "split": "train" if i % 4 else "val",
             "dominant": ["forklift", "pallet", "person"][i % 3]} for i in range(120)]  # fmt: skip
    pick = stratified_sample(rows, 12, "adopt abc", key=lambda r: (r["split"], r["dominant"]),
                             why="adoption holdout")  # fmt: skip
    assert len(pick.rows) == 12 and set(pick.strata.values()) == {2}  # 6 strata, 2 each
    assert pick.rows[0]["why"][0].startswith("adoption holdout: ")
    again = stratified_sample(rows, 12, "adopt abc", key=lambda r: (r["split"], r["dominant"]))
    assert [r["sha256"] for r in again.rows] == [r["sha256"] for r in pick.rows]
