"""`cvloop serve` against the real local MLflow: a uvicorn server started through the CLI,
frames sent over HTTP, the log read back from the store it wrote.

Each server gets a private frame store (its own rollout manifest and inference log), so no
other test's rollout reaches it; the model versions come from the session's registry.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import CVLOOP, REPO, context, free_port
from tests.registered import register_copy_of_champion

DAY = dt.date(2031, 1, 6)  # a day no other test serves


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    store: Path
    env: dict
    log: Path

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(self.url + path, timeout=60, **kw)

    def stop(self) -> str:
        """SIGTERM (a clean shutdown: every worker flushes its log); the server's output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()


def start_server(booted, tmp: Path, *, workers: int = 1, **serve: object) -> Served:
    """`cvloop serve` on a free port with a private store and fast polls / flushes."""
    from cvloop.config.params import load_params, with_overrides

    store = tmp / "store"
    store.mkdir(parents=True, exist_ok=True)
    params = with_overrides(load_params(booted.env["CVLOOP_PARAMS"]), {"serve": {
        "reload_seconds": 0.3, "log": {"flush_seconds": 1.0}, "workers": workers, "conf": 0.001,
        **serve}})  # fmt: skip
    (tmp / "params.yaml").write_text(yaml.safe_dump(params.model_dump(by_alias=True, mode="json")))
    port = free_port()
    env = dict(booted.env, CVLOOP_STORAGE_URI=str(store), CVLOOP_PARAMS=str(tmp / "params.yaml"),
               CVLOOP_REGISTRY_RECORDS_URI=str(booted.store),  # the registry's, not the private one
               CVLOOP_SERVE_PORT=str(port), CVLOOP_SERVE_SPOOL=str(tmp / "spool"))  # fmt: skip
    log = tmp / "serve.log"
    proc = subprocess.Popen([CVLOOP, "serve"], env=env, cwd=REPO, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    s = Served(proc, f"http://127.0.0.1:{port}", store, env, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"cvloop serve exited {proc.returncode}:\n{log.read_text()}")
        try:
            if s.get("/readyz").status_code == 200:
                return s
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    s.stop()
    raise AssertionError(f"cvloop serve not ready in 120 s:\n{log.read_text()}")


def _jpegs(booted, n: int) -> list[bytes]:
    """``n`` frames of the bootstrapped store (not one another test planted broken)."""
    from cvloop.adapters.detector import decode_jpeg

    out = []
    for f in sorted(booted.store.glob("frames/*/*/*.jpg")):
        try:
            decode_jpeg(f.read_bytes())
        except Exception:
            continue
        out.append(f.read_bytes())
        if len(out) == n:
            return out
    raise AssertionError(f"the bootstrapped store holds {len(out)} good frames, need {n}")


def _detect(s: Served, image: bytes, key: str, i: int, camera: str = "cam-s") -> httpx.Response:
    ts = dt.datetime.combine(DAY, dt.time(8), dt.UTC) + dt.timedelta(seconds=i)
    return s.post("/v1/detect", content=image, headers={"content-type": "image/jpeg"},
                  params={"camera": camera, "ts": ts.isoformat(), "frame_key": key})  # fmt: skip


def _log(s: Served):
    from cvloop.adapters.inference_log import read_log
    from cvloop.adapters.storage import LocalStorage

    return read_log(LocalStorage(s.store), DAY, DAY + dt.timedelta(days=1)).to_pylist()


def _wait_routing(s: Served, versions: list[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    body = {}
    while time.monotonic() < deadline:
        body = s.get("/v1/routing").json()
        if [a["version"] for a in body.get("allocations", [])] == versions:
            return body
        time.sleep(0.2)
    raise AssertionError(f"the server did not take the split {versions}: {body}")


def _write_manifest(s: Served, split: dict[str, float], shadow: list[str] | None = None) -> None:
    from cvloop.adapters.storage import LocalStorage
    from registry.manifest import Allocation, RolloutManifest, write_manifest

    m = RolloutManifest([Allocation(v, p) for v, p in split.items()], stage="test",
                        shadow=shadow or [])  # fmt: skip
    write_manifest(LocalStorage(s.store), m, who="test_serve", reason="test")


@pytest.fixture(scope="module")
def versions(booted, tmp_path_factory):
    """The champion, and an identical version registered anew (no alias moved)."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in booted.env.items():
            if k.startswith("CVLOOP_"):
                mp.setenv(k, v)
        mp.setenv("MLFLOW_TRACKING_URI", booted.stack.mlflow_uri)
        champ = context().registry.alias_version("champion")
        copy = register_copy_of_champion(tmp_path_factory.mktemp("serve-reg"), "serve-copy", ())
    return champ, copy


def test_routes_by_the_manifest_hot_reloads_and_logs_every_answer(
    booted, versions, tmp_path, stack_client_env
):
    from cvloop.adapters.detector import OnnxDetector, decode_jpeg

    champ, copy = versions
    s = start_server(booted, tmp_path)
    try:
        body = s.get("/readyz").json()
        assert body["source"].startswith("champion alias") and body["models"][champ]["sha256"]
        images = _jpegs(booted, 8)
        first = [_detect(s, images[i % 8], f"t/a/{i:04d}.jpg", i) for i in range(20)]
        assert all(r.status_code == 200 for r in first), first[0].text
        assert {r.json()["model_version"] for r in first} == {champ}
        # the answers are the model's own: the champion run here on the same frames (the
        # tiny champion is unsure of everything: serve.conf 0.001 keeps its boxes)
        local = context().registry.fetch(champ)
        det = OnnxDetector(local.onnx, local.classes, local.imgsz)
        for i in range(8):
            mine = det.predict([decode_jpeg(images[i])], conf=0.001, iou=0.7)[0]
            got = first[i].json()["detections"]
            assert len(got) == len(mine) > 0
            assert [d["label"] for d in got] == [local.classes[c] for c in mine.classes]
            for d, box in zip(got, mine.cxcywh(), strict=True):
                assert abs(d["cx"] - box[0]) < 1e-4 and abs(d["h"] - box[3]) < 1e-4

        # a 70/30 split, taken without a restart; every frame served by its routed version
        from registry.manifest import route

        _write_manifest(s, {champ: 70.0, copy: 30.0})
        routing = _wait_routing(s, [champ, copy])
        assert set(routing["warm"]) == {champ, copy}
        manifest = _manifest(s)
        answers = [_detect(s, images[i % 8], f"t/b/{i:04d}.jpg", 100 + i) for i in range(120)]
        assert all(r.status_code == 200 for r in answers)
        served = {r.json()["frame_key"]: r.json()["model_version"] for r in answers}
        assert served == {k: route(k, manifest) for k in served}
        assert 10 <= sum(v == copy for v in served.values()) <= 60  # ~30 % of 120

        # a rollback to the champion alone: a swap (it is warm), no reload
        _write_manifest(s, {champ: 100.0})
        _wait_routing(s, [champ])
        after = [_detect(s, images[0], f"t/c/{i:04d}.jpg", 300 + i) for i in range(5)]
        assert {r.json()["model_version"] for r in after} == {champ}
        metrics = s.get("/metrics").text
        assert f'cvloop_serve_frames_total{{model_version="{copy}"}}' in metrics
        assert "cvloop_serve_batch_size_bucket" in metrics
    finally:
        out = s.stop()
    rows = _log(s)
    keys = [r["frame_key"] for r in rows]
    assert len(keys) == len(set(keys)) == 145, out[-2000:]
    by_key = {r["frame_key"]: r["model_version"] for r in rows}
    assert all(by_key[k] == v for k, v in served.items())
    assert all(r["camera"] == "cam-s" and r["error"] is None for r in rows)


def _manifest(s: Served):
    from cvloop.adapters.storage import LocalStorage
    from registry.manifest import read_manifest

    return read_manifest(LocalStorage(s.store))


def test_a_tampered_version_is_refused_and_the_old_split_keeps_serving(
    booted, versions, tmp_path, stack_client_env
):
    champ, _ = versions
    bad = register_copy_of_champion(tmp_path, "serve-tampered", ())
    context().registry.set_tags(
        bad, {"cvloop.sha256.onnx": "0" * 64}
    )  # the record no longer matches
    s = start_server(booted, tmp_path / "srv")
    try:
        _write_manifest(s, {champ: 50.0, bad: 50.0})
        deadline = time.monotonic() + 60
        while bad not in (body := s.get("/v1/routing").json()).get("refused", {}):
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
        why = body["refused"][bad]
        assert f"model version {bad} refused" in why and "checksum mismatch" in why, why
        assert [a["version"] for a in body["allocations"]] == [champ]  # the old split
        images = _jpegs(booted, 2)
        got = [_detect(s, images[i % 2], f"t/t/{i}.jpg", 500 + i) for i in range(10)]
        assert {r.json()["model_version"] for r in got} == {champ}
        assert 'result="refused"' in s.get("/metrics").text
    finally:
        out = s.stop()
    assert f"refused: model version {bad} refused" in out


def test_bad_requests_are_named_and_ingested_rows_reach_the_log(booted, versions, tmp_path):
    s = start_server(booted, tmp_path)
    try:
        img = _jpegs(booted, 1)[0]
        r = _detect(s, b"\xff\xd8 not a jpeg", "t/x/corrupt.jpg", 1)
        assert r.status_code == 400 and "t/x/corrupt.jpg" in r.json()["error"]
        r = s.post("/v1/detect", content=img, headers={"content-type": "image/jpeg"})
        assert r.status_code == 400 and "camera is required" in r.json()["error"]
        r = s.post("/v1/detect", content=img, headers={"content-type": "image/jpeg"},
                   params={"camera": "c", "ts": "2031-01-06T08:00:00"})  # fmt: skip
        assert r.status_code == 400 and "no time zone" in r.json()["error"]
        r = s.post("/v1/detect", json={"frame_key": "frames/none/x.jpg", "camera": "c"})
        assert r.status_code == 404 and "frames/none/x.jpg" in r.json()["error"]
        big = s.post("/v1/detect", content=b"\0" * 21_000_000, params={"camera": "c"},
                     headers={"content-type": "image/jpeg"})  # fmt: skip
        assert big.status_code == 413
        # a frame of the frame store, by key
        (s.store / "frames/cam-k/2031-01-06").mkdir(parents=True)
        (s.store / "frames/cam-k/2031-01-06/1.jpg").write_bytes(img)
        r = s.post("/v1/detect", json={"frame_key": "frames/cam-k/2031-01-06/1.jpg",
                                       "camera": "cam-k", "ts": "2031-01-06T09:00:00Z"})  # fmt: skip
        assert r.status_code == 200, r.text
        batch = s.post("/v1/detect/batch", json={"frames": [
            {"frame_key": "frames/cam-k/2031-01-06/1.jpg", "camera": "cam-k",
             "ts": "2031-01-06T09:00:01Z"},
            {"frame_key": "frames/cam-k/nope.jpg", "camera": "cam-k"},
        ]}).json()["results"]  # fmt: skip
        assert [b["status"] for b in batch] == [200, 404]

        # rows from a server cvloop does not run (e.g. Triton's client)
        row = {"ts": "2031-01-06T10:00:00Z", "camera": "cam-t", "frame_key": "t/ingest/1.jpg",
               "model_version": "7", "latency_ms": 3.5,
               "detections": [{"label": "crate", "conf": 0.9, "cx": 0.5, "cy": 0.5, "w": 0.1,
                               "h": 0.2}]}  # fmt: skip
        bad = dict(row, detections=[dict(row["detections"][0], cx=3.0)])
        r = s.post("/v1/ingest", json={"records": [row, bad]})
        assert r.status_code == 422 and "not normalized" in r.json()["error"], r.text
        r = s.post("/v1/ingest", json={"records": [row, {"camera": "x"}]})
        assert r.status_code == 422 and "record 1 lacks the field 'ts'" in r.json()["error"]
        assert s.post("/v1/ingest", json={"records": [row]}).json() == {"written": 1}
        assert s.post("/v1/log/flush").status_code == 200
        rows = {r["frame_key"]: r for r in _log(s)}
        assert set(rows) == {"t/ingest/1.jpg", "frames/cam-k/2031-01-06/1.jpg"}
        assert rows["t/ingest/1.jpg"]["model_version"] == "7"
    finally:
        s.stop()


def test_a_locust_load_test_with_a_rollout_a_rollback_and_a_killed_worker(
    booted, versions, tmp_path
):
    """`cvloop loadtest`: Locust sends a steady load, a burst and a steady load to two
    workers; mid-run the manifest moves to the challenger at 10 % and 50 % and rolls back,
    and one worker is SIGKILLed during the burst. uvicorn starts a new worker, which adopts
    the dead one's journal: every answered frame's row is in the log, once; after the
    rollback the challenger answers nothing; the manifest ends as it began."""
    from cvloop.adapters.storage import LocalStorage
    from registry.manifest import read_manifest

    champ, copy = versions
    s = start_server(booted, tmp_path, workers=2)
    try:
        _write_manifest(s, {champ: 100.0})
        _wait_routing(s, [champ])
        frames = tmp_path / "frames"
        frames.mkdir()
        for i, b in enumerate(_jpegs(booted, 8)):
            (frames / f"{i}.jpg").write_bytes(b)
        r = subprocess.run(
            [CVLOOP, "loadtest", "--challenger", copy, "--url", s.url, "--users", "4",
             "--burst-users", "12", "--steady-seconds", "6", "--burst-seconds", "6",
             "--kill-worker", "--frames", str(frames), "--json"],
            env=s.env, cwd=REPO, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while "recovered" not in s.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        out = s.stop()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    print("loadtest report:", json.dumps(rep))  # the figures, with -s
    assert [w["what"] for w in rep["switches"]] == ["canary 10 %", "canary 50 %", "rollback"]
    assert all(w["taken_s"] is not None for w in rep["switches"]), rep["switches"]
    assert rep["killed_worker"] and f"Child process [{rep['killed_worker']}] died" in out
    assert "recovered" in out, out[-3000:]
    assert rep["answered"] >= 200 and rep["requests_per_s"] > 0
    assert 0 < rep["p50_ms"] <= rep["p95_ms"] <= rep["p99_ms"]
    assert set(rep["by_version"]) == {champ, copy}, rep["by_version"]
    assert rep["challenger_after_rollback"] == 0
    # the log the server wrote against the answers Locust got
    assert rep["answered_without_row"] == 0 and rep["duplicate_rows"] == 0, rep
    assert rep["log_rows"] == rep["answered"] + rep["rows_not_answered"]
    assert rep["rows_not_answered"] <= rep["failures"]  # in flight on the killed worker
    m = read_manifest(LocalStorage(s.store))
    assert [(a.version, a.share) for a in m.allocations] == [(champ, 100.0)]
    assert not list((tmp_path / "spool").glob("*/*/seg-*")), "journal left behind"


def test_a_version_in_shadow_sees_every_frame_and_answers_none(booted, versions, tmp_path):
    from cvloop.adapters.inference_log import SHADOW_PREFIX, read_log
    from cvloop.adapters.storage import LocalStorage

    champ, copy = versions
    s = start_server(booted, tmp_path)
    try:
        _write_manifest(s, {champ: 100.0}, shadow=[copy])
        deadline = time.monotonic() + 60
        while (body := s.get("/v1/routing").json()).get("shadowing") != [copy]:
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
        images = _jpegs(booted, 4)
        got = [_detect(s, images[i % 4], f"t/s/{i:03d}.jpg", 700 + i) for i in range(40)]
        assert {r.json()["model_version"] for r in got} == {champ}
        assert s.post("/v1/log/flush").status_code == 200
    finally:
        s.stop()
    day = (DAY, DAY + dt.timedelta(days=1))
    live = read_log(LocalStorage(s.store), *day).to_pylist()
    shadow = read_log(LocalStorage(s.store), *day, prefix=SHADOW_PREFIX).to_pylist()
    assert {r["model_version"] for r in live} == {champ} and len(live) == 40
    assert {r["model_version"] for r in shadow} == {copy}
    assert sorted(r["frame_key"] for r in shadow) == sorted(r["frame_key"] for r in live)
    # an identical model: the shadow's detections are the champion's, frame by frame (to
    # float noise: the two may batch the frames differently)
    by_key = {r["frame_key"]: r["detections"] for r in live}
    for r in shadow:
        mine, theirs = r["detections"], by_key[r["frame_key"]]
        assert abs(len(mine) - len(theirs)) <= 2 and mine and theirs
        a, b = mine[0], theirs[0]  # the most confident box
        assert a["label"] == b["label"] and abs(a["conf"] - b["conf"]) < 1e-3
        assert abs(a["cx"] - b["cx"]) < 1e-3 and abs(a["h"] - b["h"]) < 1e-3


def test_the_simulated_fleet_as_a_client_of_the_server(booted, versions, tmp_path):
    """`cvloop fleet serve --server URL`: the fleet sends its frames by key; the server
    routes, answers and logs each one (rows == frames, by the manifest's split)."""
    champ, copy = versions
    s = start_server(booted, tmp_path)
    try:
        env = dict(s.env, CVLOOP_TRUTH_URI=str(tmp_path / "truth"))
        day = "2031-02-03"
        booted.stack.cli("fleet", "generate", "--start", day, "--days", "1",
                         "--bursts-per-day", "6", "--workers", "1", env=env, timeout=600)  # fmt: skip
        _write_manifest(s, {champ: 50.0, copy: 50.0})
        _wait_routing(s, [champ, copy])
        out = booted.stack.cli("fleet", "serve", "--server", s.url, "--start", day, "--days", "1",
                               env=env, timeout=600).stdout  # fmt: skip
        report = json.loads(out[out.rindex("\n{") + 1 :])
    finally:
        s.stop()
    from cvloop.adapters.inference_log import read_log
    from cvloop.adapters.storage import LocalStorage

    frames = sorted(k.name for k in (s.store / "frames").rglob("*.jpg"))
    rows = read_log(LocalStorage(s.store), dt.date(2031, 2, 3), dt.date(2031, 2, 4)).to_pylist()
    assert report["frames"] == len(frames) == len(rows) > 0 and report["errors"] == 0
    assert sorted(r["frame_key"].rsplit("/", 1)[1] for r in rows) == frames
    assert set(report["by_version"]) == {champ, copy}
    assert sum(report["by_version"].values()) == len(rows)


def test_export_triton_writes_a_repository_for_the_registered_version(
    booted, versions, tmp_path, stack_client_env
):
    """`cvloop export triton VERSION`: the ONNX as registered (its sha256 in the config), the
    shapes of its own graph, Triton's layout. (Triton itself is not installed here: the
    ONNX it would load is run with ONNX Runtime at the shapes the config declares.)"""
    import numpy as np
    import onnxruntime as ort

    champ, _ = versions
    out = booted.stack.cli("export", "triton", champ, "--out", str(tmp_path / "repo")).stdout
    model = tmp_path / "repo" / "cvloop-detector"
    cfg = (model / "config.pbtxt").read_text()
    assert "wrote" in out and cfg in out
    sess = ort.InferenceSession(str(model / champ / "model.onnx"))
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    imgsz = context().registry.fetch(champ).imgsz
    assert f"dims: [ 3, {imgsz}, {imgsz} ]" in cfg  # the model's size, not a dynamic axis
    dims = [d if isinstance(d, int) else -1 for d in outp.shape[1:]]
    assert f"dims: [ {', '.join(map(str, dims))} ]" in cfg
    assert "max_batch_size: 8" in cfg and f"versions: [ {champ} ]" in cfg
    y = sess.run(None, {inp.name: np.zeros((2, 3, imgsz, imgsz), np.float32)})[0]
    assert y.shape[0] == 2
    labels = (model / "labels.txt").read_text().split()
    assert len(labels) == y.shape[1] - 4
    assert "cvloop.inference_log" in (model / "CVLOOP.md").read_text()
