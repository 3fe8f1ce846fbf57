"""``cvloop bench serve``: the inference server end to end against raw batched ONNX Runtime.

The server is ``cvloop serve``'s app on uvicorn in its own process (one worker, the
machine's cores, ``serve`` section of params.yaml: micro-batching, fsync'd journal, Parquet
parts); the model is the shipped YOLO11 'pico' graph, untrained (the cost of a trained
one), at 256 px; the frames are JPEGs made here. Clients send the image bytes over HTTP
(keep-alive), ``CONCURRENCY`` requests in flight.

Cases:

* ``serve.frames_per_s``: frames answered per second by the server (HTTP + routing +
  batching + inference + logging), baseline: the same frames decoded, letterboxed and run
  through the same ONNX model in batches of ``serve.max_batch`` in one process, with NMS
  (goal ratio >= 0.85). The clients share the cores with the server: on a small machine
  that is part of what is measured.
* ``serve.p95_ms_steady``: client-side p95 latency at 2 requests in flight, baseline: p95 of
  the same frames run one at a time through raw ORT.
* ``serve.log_rows_per_answer``: rows in the log the server wrote per request answered
  (baseline 1: one row per answer, none lost, none doubled).

* ``runtime.<runtime>.frames_per_s`` / ``.p50_ms`` (one per runtime installed here besides
  ORT: OpenVINO FP32 on the CPU, TensorRT where CUDA exists is measured by the candidate
  flow's export step): the same decoded frames through the runtime's detector at
  ``serve.max_batch`` / one at a time, baseline ORT FP32 on the same cores, measured
  alternately in the same run. ``.head_agreement``: the share of the YOLO head's outputs
  that agree with ORT's within 1e-3 (baseline 1.0). The holdout mAP of each runtime is
  the candidate flow's (``challenger_<format>.holdout.map50_95`` beside
  ``bench.challenger.<format>.*`` in MLflow, gated by ``export_parity:<format>``): the
  model here is untrained, its mAP would say nothing.

``--quick`` sends 240 frames instead of 1,200.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cvloop.app.bench import Case
from cvloop.app.bench.common import CLASSES, fleet_frames, untrained_onnx

IMGSZ = 256
CONCURRENCY = 8

_SERVER = textwrap.dedent(
    """
    import sys, uvicorn
    from cvloop.context import Context
    from cvloop.serving.app import create_app
    from cvloop.serving.models import file_loader
    onnx, port = sys.argv[1], int(sys.argv[2])
    ctx = Context.from_env()
    app = create_app(ctx, loader=file_loader(onnx, sys.argv[3].split(","), int(sys.argv[4])))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    """
)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raw(onnx: Path, images: list[bytes], batch: int) -> tuple[float, list[float]]:
    """(frames/s in batches, per-frame ms one at a time) of raw ORT on the same frames."""
    from cvloop.adapters.detector import OnnxDetector, decode, decode_jpeg

    det = OnnxDetector(onnx, list(CLASSES), IMGSZ)
    det.predict([decode_jpeg(images[0])])  # warm up
    t = time.perf_counter()
    for i in range(0, len(images), batch):
        pix = [decode_jpeg(b) for b in images[i : i + batch]]
        x, metas = det.preprocess(pix)
        decode(det.forward(x), metas, 0.25, 0.7)
    fps = len(images) / (time.perf_counter() - t)
    single = []
    for b in images[: min(200, len(images))]:
        t = time.perf_counter()
        det.predict([decode_jpeg(b)])
        single.append((time.perf_counter() - t) * 1000)
    return fps, single


def _runtimes(onnx: Path, images: list[bytes], batch: int, quick: bool) -> Iterator[Case]:
    """Each runtime installed here besides ORT against ORT FP32, same frames, same cores."""
    from cvloop.adapters.detector import decode_jpeg, make_detector
    from cvloop.adapters.export import openvino_status

    ok, why = openvino_status()
    if not ok:
        print(f"# runtime.openvino_fp32 not measured: {why}", file=sys.stderr)
        return
    pix = [decode_jpeg(b) for b in images[: 64 if quick else 256]]
    dets = {rt: make_detector(rt, onnx, list(CLASSES), IMGSZ)
            for rt in ("onnxruntime", "openvino")}  # fmt: skip
    x, _ = dets["onnxruntime"].preprocess(pix[:batch])
    heads = {rt: d.forward(x) for rt, d in dets.items()}
    agree = float(np.mean(np.abs(heads["openvino"] - heads["onnxruntime"]) <= 1e-3))
    fps: dict[str, list[float]] = {rt: [] for rt in dets}
    single: dict[str, list[float]] = {rt: [] for rt in dets}
    for _ in range(3):  # alternate, so a neighbour's load falls on both
        for rt, d in dets.items():
            t = time.perf_counter()
            for i in range(0, len(pix), batch):
                d.predict(pix[i : i + batch])
            fps[rt].append(len(pix) / (time.perf_counter() - t))
            for im in pix[:32]:
                t = time.perf_counter()
                d.predict([im])
                single[rt].append((time.perf_counter() - t) * 1000)
    yield Case("runtime.openvino_fp32.frames_per_s", round(max(fps["openvino"]), 1), "frames/s",
               f"ONNX Runtime FP32, batches of {batch}, same frames and cores",
               round(max(fps["onnxruntime"]), 1))  # fmt: skip
    yield Case("runtime.openvino_fp32.p50_ms", round(float(np.median(single["openvino"])), 2),
               "ms", "ONNX Runtime FP32, one frame at a time, p50",
               round(float(np.median(single["onnxruntime"])), 2))  # fmt: skip
    yield Case("runtime.openvino_fp32.head_agreement", round(agree, 4), "share",
               "every output of the head within 1e-3 of ORT's", 1.0)  # fmt: skip


def _load(url: str, images: list[bytes], concurrency: int, tag: str) -> tuple[float, list, int]:
    """Send every frame; (frames/s, client latencies ms, answered)."""
    import httpx

    day = dt.datetime(2030, 3, 1, tzinfo=dt.UTC)
    chunks = [list(range(i, len(images), concurrency)) for i in range(concurrency)]

    def worker(idx: list[int]) -> tuple[list[float], int]:
        lat, ok = [], 0
        with httpx.Client(base_url=url, timeout=60) as c:
            for i in idx:
                t = time.perf_counter()
                r = c.post("/v1/detect", content=images[i],
                           headers={"content-type": "image/jpeg"},
                           params={"camera": f"cam-{i % 4}", "frame_key": f"bench/{tag}/{i}",
                                   "ts": int((day + dt.timedelta(seconds=i)).timestamp() * 1000)})  # fmt: skip
                lat.append((time.perf_counter() - t) * 1000)
                ok += r.status_code == 200
        return lat, ok

    t = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        parts = list(pool.map(worker, chunks))
    secs = time.perf_counter() - t
    lat = [x for p, _ in parts for x in p]
    return len(images) / secs, lat, sum(ok for _, ok in parts)


def run(quick: bool = False) -> Iterator[Case]:
    from cvloop.adapters.inference_log import read_log
    from cvloop.adapters.storage import LocalStorage
    from cvloop.config.params import load_params
    from registry.manifest import single, write_manifest

    n = 240 if quick else 1200
    p = load_params().serve
    with tempfile.TemporaryDirectory(prefix="cvloop-bench-serve-") as tmp_s:
        tmp = Path(tmp_s)
        onnx = untrained_onnx(tmp, IMGSZ)
        refs = fleet_frames(tmp / "fleet" / "store", n)
        fleet = LocalStorage(tmp / "fleet" / "store")
        images = [fleet.get_bytes(k) for k, _, _ in refs[:n]]
        store = tmp / "serve-store"
        write_manifest(LocalStorage(store), single("1", reason="bench"), who="bench")
        port = _free_port()
        env = {**os.environ, "CVLOOP_HOME": str(tmp / "home"), "CVLOOP_STORAGE_URI": str(store),
               "CVLOOP_SERVE_SPOOL": str(tmp / "spool")}  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(onnx), str(port), ",".join(CLASSES), str(IMGSZ)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc)
            _load(url, images[:32], 2, "warm")
            fps, _, answered = _load(url, images, CONCURRENCY, "fps")
            _, lat, answered2 = _load(url, images[: n // 2], 2, "steady")
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=60)
        raw_fps, raw_single = _raw(onnx, images, p.max_batch)
        yield Case("serve.frames_per_s", round(fps, 1), "frames/s",
                   f"raw ONNX Runtime, batches of {p.max_batch}, same frames and cores",
                   round(raw_fps, 1))  # fmt: skip
        yield Case("serve.p95_ms_steady", round(float(np.percentile(lat, 95)), 2), "ms",
                   "raw ONNX Runtime, one frame at a time, p95",
                   round(float(np.percentile(raw_single, 95)), 2))  # fmt: skip
        rows = read_log(LocalStorage(store), dt.date(2030, 3, 1), dt.date(2030, 3, 3))
        keys = [k for k in rows.column("frame_key").to_pylist() if not k.startswith("bench/warm")]
        total = answered + answered2
        yield Case("serve.log_rows_per_answer", round(len(keys) / max(1, total), 4), "rows/answer",
                   "one row per answered request", 1.0)  # fmt: skip
        print(f"# serve: {total} answered, {len(keys)} rows ({len(set(keys))} distinct); "
              f"p50/p95/p99 {np.percentile(lat, 50):.1f}/{np.percentile(lat, 95):.1f}/"
              f"{np.percentile(lat, 99):.1f} ms at 2 in flight", file=sys.stderr)  # fmt: skip
        if err and proc.returncode not in (0, -15):
            print(err.decode()[-2000:], file=sys.stderr)
        yield from _runtimes(onnx, images, p.max_batch, quick)


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bench server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("bench server not ready in time")
