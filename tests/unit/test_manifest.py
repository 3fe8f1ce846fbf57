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
