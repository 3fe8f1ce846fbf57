"""A new camera group (region) joins the fleet: on day one it does not fire the drift
trigger (the fleet-wide slices leave it out; it is "baselining" on its own first week), and
once its own reference week is over it is compared with that week, so a real change in the
new group is flagged against its own baseline."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from cvloop.adapters.inference_log import Detection, FrameRecord, write_log
from cvloop.adapters.storage import LocalStorage
from cvloop.config.params import TriggerParams
from cvloop.core.signals import windows
from cvloop.core.triggers import severe_drift
from cvloop.stages.signals import compute_drift, compute_drift_by_group, group_first_days

CLASSES = ["crate", "barrel", "cone"]
OLD = ("cam-01", "cam-02", "cam-03")
NORTH = ("north-01", "north-02")  # another region: darker docks, smaller boxes
START = dt.date(2026, 10, 1)


def _day(store, day: dt.date, cams, group: str, dark: bool, rng, frames=60) -> None:
    t0 = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    for cam in cams:
        recs = []
        for i in range(frames):
            k = int(rng.poisson(1.0 if dark else 2.5))
            dets = [
                Detection(
                    CLASSES[int(rng.integers(0, 3))],
                    float(np.clip(rng.beta(3, 3) if dark else rng.beta(8, 2), 0, 1)),
                    0.5,
                    0.5,
                    float(rng.uniform(0.02, 0.08) if dark else rng.uniform(0.05, 0.2)),
                    float(rng.uniform(0.05, 0.2)),
                )
                for _ in range(k)
            ]
            recs.append(FrameRecord(t0 + dt.timedelta(minutes=20 * i), cam,
                                    f"frames/{cam}/{day}/{i}.jpg", "1", 5.0, dets, group))  # fmt: skip
        write_log(store, recs, part=f"serve-{cam}")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Old cameras from Oct 1 for five weeks, unchanged; the north group joins on Oct 15
    with its own (darker) look, and on Oct 29 its lights change again (its real drift)."""
    store = LocalStorage(tmp_path_factory.mktemp("groups"))
    rng = np.random.default_rng(1)
    for d in range(35):
        day = START + dt.timedelta(days=d)
        _day(store, day, OLD, "default", False, rng)
        if day >= dt.date(2026, 10, 15):
            changed = day >= dt.date(2026, 10, 29)
            _day(store, day, NORTH, "north", not changed, rng)
    return store


def test_first_days_of_each_group_are_found_and_kept_incrementally(fleet):
    first = group_first_days(fleet, dt.date(2026, 10, 20))
    assert first == {"default": START, "north": dt.date(2026, 10, 15)}
    assert group_first_days(fleet, dt.date(2026, 11, 5))["north"] == dt.date(2026, 10, 15)
    assert fleet.exists("monitor/camera-groups.json")


@pytest.mark.parametrize("exact_max", [10**9, 0], ids=["exact", "rollup"])
def test_a_new_group_does_not_fire_on_day_one(fleet, exact_max):
    ref, cur = windows(dt.date(2026, 10, 22), 7, 7, START)  # current: Oct 15..21
    # without group baselines the new region's darker frames look like fleet-wide drift
    naive = compute_drift(fleet, ref, cur, CLASSES, 200, exact_max)
    assert severe_drift(naive, TriggerParams()).fired
    rows = compute_drift_by_group(fleet, ref, cur, CLASSES, 200, exact_max, 7)
    assert not severe_drift(rows, TriggerParams()).fired
    north = [r for r in rows if r.kind == "group" and r.name == "north"]
    assert {r.path for r in north} == {"baselining until 2026-10-22"}
    assert not any(r.stats.enough_data for r in north)
    assert not any(r.name in NORTH for r in rows)  # its cameras are not fleet-wide slices


@pytest.mark.parametrize("exact_max", [10**9, 0], ids=["exact", "rollup"])
def test_after_its_own_week_the_group_is_compared_with_that_week(fleet, exact_max):
    # Oct 22..28: north looks as in its first week -> quiet
    ref, cur = windows(dt.date(2026, 10, 29), 7, 7, START)
    rows = compute_drift_by_group(fleet, ref, cur, CLASSES, 200, exact_max, 7)
    north = [r for r in rows if r.kind == "group" and r.name == "north"]
    assert north and all(r.path.endswith("own baseline") for r in north)
    assert all(r.stats.enough_data for r in north)
    assert not severe_drift(rows, TriggerParams()).fired
    # Oct 29..Nov 4: north's lights changed -> flagged against its own first week
    ref, cur = windows(dt.date(2026, 11, 5), 7, 7, START)
    rows = compute_drift_by_group(fleet, ref, cur, CLASSES, 200, exact_max, 7)
    fired = severe_drift(rows, TriggerParams())
    assert fired.fired
    flagged = {(r.kind, r.name) for r in rows if r.stats.enough_data and r.stats.ks_p < 1e-6}
    assert ("group", "north") in flagged and {("camera", c) for c in NORTH} <= flagged
    assert not any(k == "camera" and n in OLD for k, n in flagged)


def test_registering_a_camera_is_recorded_once_and_survives_fleet_generation(tmp_path):
    from cvloop.adapters.cameras import register, registrations, registry
    from cvloop.core.errors import CvloopError
    from cvloop.sim.fleet.generate import FleetConfig, cameras_named, generate_fleet

    store = LocalStorage(tmp_path / "store")
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    reg, changed = register(store, "north-01", "north", "eu-west", "ana", "new dock opened")
    assert changed and reg.group == "north"
    assert not register(store, "north-01", "north", "eu-west", "ana", "again")[1]  # no-op
    assert registry(store)["north-01"] == {"group": "north", "region": "eu-west"}
    with pytest.raises(CvloopError, match="group name 'North Dock' is not valid"):
        register(store, "north-02", "North Dock")
    # generating the fleet (which writes the same registry) keeps the registration
    cfg = FleetConfig(seed=3, cameras=cameras_named(1), image_size=64, bursts_per_day=1,
                      frames_per_burst=1)  # fmt: skip
    generate_fleet(cfg, dt.date(2026, 10, 1), 1, str(tmp_path / "store"), str(tmp_path / "truth"))
    assert registry(store)["north-01"]["group"] == "north"
    assert registry(store)["cam-01"]["group"] == "default"
    week = registrations(store, before, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert [(r.camera, r.group, r.who, r.why) for r in week] == [
        ("north-01", "north", "ana", "new dock opened")
    ]
