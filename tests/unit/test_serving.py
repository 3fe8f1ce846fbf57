"""The server's decisions without a server: routing snapshots and their swap, the routing
unit, back-pressure, and no answer without a journaled row."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import numpy as np
import pytest

from cvloop.adapters.detector import LetterboxMeta
from cvloop.adapters.storage import LocalStorage
from cvloop.serving.batcher import FrameJob, MicroBatcher, Overloaded
from cvloop.serving.models import ModelRefused, ServingModel
from cvloop.serving.routing import ModelHost
from registry.manifest import Allocation, RolloutManifest, write_manifest


class _Det:
    """Stands in for the ONNX session: a YOLO head output with one confident box."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.class_names = ["forklift"]
        self.gate = gate
        self.calls: list[int] = []

    def forward(self, batch: np.ndarray) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append(len(batch))
        out = np.zeros((len(batch), 5, 4), np.float32)
        out[:, :4, 0] = [32, 32, 16, 16]
        out[:, 4, 0] = 0.9
        return out


def _model(version: str, det=None) -> ServingModel:
    return ServingModel(version, det or _Det(), "ab" * 32, ["forklift"], 64, "onnxruntime", 0.0)


class _Loader:
    def __init__(self, refuse: set[str] = frozenset()) -> None:
        self.refuse = set(refuse)
        self.loads: list[str] = []

    def __call__(self, _registry, version: str, *, runtime: str, threads: int) -> ServingModel:
        self.loads.append(version)
        if version in self.refuse:
            raise ModelRefused(f"model version {version} refused: sha256 mismatch")
        return _model(version)


def _manifest(store, split: dict[str, float], stage: str = "canary") -> None:
    write_manifest(store, RolloutManifest([Allocation(v, s) for v, s in split.items()], stage))


def _host(tmp_path, loader, route_by="frame") -> tuple[ModelHost, LocalStorage]:
    store = LocalStorage(tmp_path / "store")
    return ModelHost(store, None, runtime="onnxruntime", threads=1, route_by=route_by,
                     loader=loader), store  # fmt: skip


def test_a_new_split_is_loaded_first_and_swapped_whole(tmp_path):
    loader = _Loader()
    host, store = _host(tmp_path, loader)
    _manifest(store, {"1": 100})
    assert host.poll() and set(host.routing.models) == {"1"}
    assert not host.poll()  # unchanged manifest: nothing loaded again
    _manifest(store, {"1": 90, "2": 10})
    old = host.routing
    assert host.poll()
    assert set(host.routing.models) == {"1", "2"} and host.routing is not old
    assert host.routing.models["1"] is old.models["1"]  # kept, not reloaded
    assert loader.loads == ["1", "2"]
    # a rollback to the champion: both stay warm, nothing loads
    _manifest(store, {"1": 100})
    assert host.poll() and set(host.state.warm) == {"1", "2"} and loader.loads == ["1", "2"]


def test_a_refused_version_leaves_the_old_split_serving(tmp_path):
    loader = _Loader(refuse={"3"})
    host, store = _host(tmp_path, loader)
    _manifest(store, {"1": 100})
    host.poll()
    before = host.routing
    _manifest(store, {"1": 50, "3": 50})
    assert not host.poll()
    assert host.routing is before and "sha256 mismatch" in host.state.refused["3"][0]
    assert host.state.not_ready is None  # still serving
    assert not host.poll() and loader.loads.count("3") == 1  # not hammered: retried later


def test_nothing_to_serve_is_not_ready_with_the_reason(tmp_path):
    class NoChampion:
        def alias_version(self, alias):
            return None

    store = LocalStorage(tmp_path / "store")
    host = ModelHost(store, NoChampion(), runtime="onnxruntime", threads=1, route_by="frame",
                     loader=_Loader())  # fmt: skip
    assert not host.poll() and host.routing is None
    assert "no champion registered" in host.state.not_ready


def test_camera_routing_is_sticky_and_grows_with_the_share(tmp_path):
    host, store = _host(tmp_path, _Loader(), route_by="camera")
    cams = [f"cam-{i:03d}" for i in range(400)]
    _manifest(store, {"1": 90, "2": 10})
    host.poll()
    r10 = host.routing
    at10 = {c for c in cams if r10.version_for(c, "x") == "2"}
    # every frame of a camera goes to one version
    assert all(r10.version_for(c, f"frames/{c}/{i}.jpg") == r10.version_for(c, "y")
               for c in cams[:50] for i in range(5))  # fmt: skip
    _manifest(store, {"1": 50, "2": 50})
    host.poll()
    at50 = {c for c in cams if host.routing.version_for(c, "x") == "2"}
    assert at10 <= at50, "a camera in the 10 % left the challenger at 50 %"
    assert 20 <= len(at10) <= 60 and 160 <= len(at50) <= 240


def _job(i: int) -> FrameJob:
    return FrameJob(np.zeros((3, 64, 64), np.float32), LetterboxMeta(1.0, 0, 0, 64, 64),
                    dt.datetime(2031, 1, 1, tzinfo=dt.UTC), "cam", "default", f"k/{i}", 0.0)  # fmt: skip


def test_frames_share_batches_and_a_full_queue_is_refused():
    journal: list = []

    async def go():
        gate = threading.Event()
        det = _Det(gate)
        b = MicroBatcher(_model("1", det), max_batch=4, max_wait_ms=50, max_queue=6, conf=0.25,
                         iou=0.7, journal=journal.extend).start()  # fmt: skip
        first = asyncio.ensure_future(b.submit(_job(0)))
        await asyncio.sleep(0.1)  # the first batch is in the model (blocked on the gate)
        waiting = [asyncio.ensure_future(b.submit(_job(i))) for i in range(1, 7)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="6 frames waiting"):
            await b.submit(_job(99))
        gate.set()
        recs = await asyncio.gather(first, *waiting)
        await b.close()
        return det, recs

    det, recs = asyncio.run(go())
    assert det.calls == [1, 4, 2]  # batched up to max_batch
    assert [r.frame_key for r in recs] == [f"k/{i}" for i in range(7)]
    assert recs[0].detections[0].label == "forklift" and recs[0].detections[0].cx == 0.5
    assert [r.frame_key for r in journal] == [f"k/{i}" for i in range(7)]


def test_no_answer_without_a_journaled_row():
    def broken(_records):
        raise OSError("disk full")

    async def go():
        b = MicroBatcher(_model("1"), max_batch=4, max_wait_ms=1, max_queue=8, conf=0.25,
                         iou=0.7, journal=broken).start()  # fmt: skip
        try:
            with pytest.raises(OSError, match="disk full"):
                await b.submit(_job(0))
        finally:
            await b.close()

    asyncio.run(go())


def test_a_shadow_version_is_loaded_with_the_split_and_serves_no_share(tmp_path):
    loader = _Loader()
    host, store = _host(tmp_path, loader)
    write_manifest(store, RolloutManifest([Allocation("1", 100)], "shadow", shadow=["2"]))
    assert host.poll()
    r = host.routing
    assert set(r.models) == {"1", "2"} and r.shadow == ["2"]
    assert {r.version_for("cam", f"k/{i}") for i in range(200)} == {"1"}
    assert r.describe()["shadow"] == ["2"]


def test_the_manifest_keeps_its_shadow_and_refuses_a_version_in_both():
    from cvloop.core.errors import CvloopError

    m = RolloutManifest([Allocation("1", 100)], "shadow", shadow=["2"])
    assert RolloutManifest.from_json(m.to_json()).shadow == ["2"]
    assert (
        RolloutManifest.from_json('{"allocations": [{"version": "1", "share": 100}]}').shadow == []
    )
    with pytest.raises(CvloopError, match="both serves and shadows"):
        RolloutManifest([Allocation("1", 100)], "x", shadow=["1"]).validate()


def test_the_plan_puts_the_shadow_stage_first_and_decide_names_it():
    from cvloop.config.params import load_params, with_overrides
    from cvloop.core.rollout import Canary, decide

    p = with_overrides(load_params(), {"rollout": {"shadow_hours": 6}}).rollout
    shares, hours = p.plan()
    assert shares == [0.0, 10.0, 50.0, 100.0] and hours == [6.0, 8.0, 8.0, 8.0]
    assert load_params().rollout.plan()[0] == [10.0, 50.0, 100.0]
    ok = Canary("ok", 600, 600, [], evidence="pairing")
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    kw = dict(approval_before_share=100, approved=False, rejected=False, approval_asked_at=None,
              deadline_hours=24, now=now)  # fmt: skip
    d = decide(0, shares, hours, 7.0, ok, **kw)
    assert d.action == "advance" and d.next_share == 10.0 and "in shadow" in d.reason
    assert "in shadow" in decide(0, shares, hours, 2.0, ok, **kw).reason  # holds 6 h
    breach = Canary("breach", 600, 600, [], evidence="guards")
    assert decide(0, shares, hours, 7.0, breach, **kw).reason.startswith("canary breach in shadow")


def test_the_load_test_refuses_to_disturb_a_rollout_in_progress(tmp_path):
    """`cvloop loadtest` writes the manifest: it refuses one that splits traffic, and one
    whose challenger is the version serving, before it sends anything."""
    from types import SimpleNamespace

    import pytest

    from cvloop.app.loadtest import run_loadtest
    from cvloop.core.errors import CvloopError

    store = LocalStorage(tmp_path / "store")
    _manifest(store, {"1": 90.0, "2": 10.0})
    ctx = SimpleNamespace(store=store)
    with pytest.raises(CvloopError, match="would disturb a rollout") as e:
        run_loadtest(ctx, "http://127.0.0.1:9", challenger="2")
    assert "staging stack" in e.value.fix
    _manifest(store, {"1": 100.0}, stage="stable")
    with pytest.raises(CvloopError, match="the challenger 1 is the version serving"):
        run_loadtest(ctx, "http://127.0.0.1:9", challenger="1")
    with pytest.raises(CvloopError, match=r"does not answer at http://127\.0\.0\.1:9"):
        run_loadtest(ctx, "http://127.0.0.1:9", challenger="2")
