"""Rollout manifest: validation, atomic write with history, routing proportions."""

from __future__ import annotations

import pytest

from cvloop.adapters.storage import LocalStorage
from cvloop.core.errors import CvloopError
from registry.manifest import (
    Allocation,
    RolloutManifest,
    bucket,
    history,
    read_manifest,
    route,
    single,
    write_manifest,
)


@pytest.mark.parametrize("share", [10, 50])
def test_routing_proportions_hold(share):
    m = RolloutManifest([Allocation("1", 100 - share), Allocation("2", share)])
    keys = [
        f"frames/cam-{i % 7:02d}/2026-10-0{i % 9 + 1}/{1_700_000_000_000 + i * 500}.jpg"
        for i in range(20_000)
    ]
    got = sum(route(k, m) == "2" for k in keys) / len(keys) * 100
    assert got == pytest.approx(share, abs=1.0)


def test_routing_is_deterministic_and_sticky():
    m = RolloutManifest([Allocation("1", 90), Allocation("2", 10)])
    k = "frames/cam-01/2026-10-01/1.jpg"
    assert route(k, m) == route(k, m)
    # growing the challenger's share never moves its frames back to the champion
    m50 = RolloutManifest([Allocation("1", 50), Allocation("2", 50)])
    keys = [f"k{i}" for i in range(2000)]
    assert all(route(k, m50) == "2" for k in keys if route(k, m) == "2")
    assert 0 <= bucket(k) < 100


@pytest.mark.parametrize(
    ("allocs", "error"),
    [
        ([Allocation("1", 60), Allocation("2", 30)], "add up to 100"),
        ([Allocation("1", 50), Allocation("1", 50)], "twice"),
        ([], "no allocation"),
        ([Allocation("1", float("nan")), Allocation("2", 100)], "not a number"),
        ([Allocation("1", float("inf"))], "not a number"),
        ([Allocation("1", 110), Allocation("2", -10)], "negative share"),
    ],
)
def test_invalid_manifests_are_refused(allocs, error):
    with pytest.raises(CvloopError, match=error):
        RolloutManifest(allocs).validate()


def test_write_read_and_history(tmp_path):
    store = LocalStorage(tmp_path)
    assert read_manifest(store) is None
    write_manifest(store, single("1"), who="alice", reason="bootstrap")
    write_manifest(
        store,
        RolloutManifest([Allocation("1", 90), Allocation("2", 10)], stage="canary-10"),
        who="bob",
        reason="rollout v2",
    )
    m = read_manifest(store)
    assert m.share_of("2") == 10 and m.updated_by == "bob" and m.reason == "rollout v2"
    past = history(store)
    assert [h.updated_by for h in past] == ["alice", "bob"]
    with pytest.raises(CvloopError):
        write_manifest(store, RolloutManifest([Allocation("1", 50)]))
    assert read_manifest(store).share_of("2") == 10  # a refused write changes nothing


def test_malformed_manifest_names_the_fix(tmp_path):
    store = LocalStorage(tmp_path)
    store.put_text("rollout/manifest.json", '{"allocs": []}')
    with pytest.raises(CvloopError, match="malformed"):
        read_manifest(store)


def test_a_nan_share_written_by_hand_is_refused_by_every_reader(tmp_path):
    # JSON has no NaN, but Python's json writes and reads one: a hand edit or another tool
    store = LocalStorage(tmp_path)
    store.put_text("rollout/manifest.json",
                   '{"allocations": [{"version": "1", "share": NaN}, '
                   '{"version": "2", "share": 100}]}')  # fmt: skip
    with pytest.raises(CvloopError, match="not a number"):
        read_manifest(store)


def test_a_writer_that_decided_from_an_old_manifest_writes_nothing(tmp_path):
    from registry.manifest import ManifestConflict

    store = LocalStorage(tmp_path)
    write_manifest(store, single("1"), who="bootstrap", reason="v1", based_on=None)
    with pytest.raises(ManifestConflict):  # create-only, and there is one
        write_manifest(store, single("9"), who="bootstrap", based_on=None)
    seen = read_manifest(store)  # a tick reads the manifest ...
    canary = RolloutManifest([Allocation("1", 90), Allocation("2", 10)], stage="canary-10")
    write_manifest(store, canary, who="ops", reason="rollout v2", based_on=seen)
    tick_basis = read_manifest(store)
    # ... a rollback lands while the tick reads the log ...
    write_manifest(store, single("1"), who="ada", reason="manual rollback", based_on=tick_basis)
    # ... and the tick's advance, decided from the 10 % manifest, is refused
    advance = RolloutManifest([Allocation("1", 50), Allocation("2", 50)], stage="canary-50")
    with pytest.raises(ManifestConflict, match=r"now stable by ada .*manual rollback"):
        write_manifest(store, advance, who="tick", reason="to 50 %", based_on=tick_basis)
    now = read_manifest(store)
    assert now.share_of("1") == 100 and now.updated_by == "ada"
    assert [h.updated_by for h in history(store)] == ["bootstrap", "ops", "ada"]  # no stale entry
