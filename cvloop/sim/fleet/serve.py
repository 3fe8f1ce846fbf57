"""``cvloop fleet serve``: the simulated serving fleet.

Runs the registered models (ONNX Runtime) over the frames of a time window, routes each
frame by the rollout manifest (no manifest: the champion takes 100 %), measures each
frame's latency, and writes the inference log — one part per camera and day, replaced if
the same window is served again, so re-serving never duplicates a frame.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cvloop.adapters.detector import OnnxDetector, decode_jpeg
from cvloop.adapters.frame_keys import CAMERAS_KEY, FRAMES_PREFIX
from cvloop.adapters.inference_log import SHADOW_PREFIX, Detection, FrameRecord, write_log
from cvloop.adapters.storage import Storage
from cvloop.core.errors import CvloopError


@dataclass
class ServeReport:
    frames: int = 0
    errors: int = 0
    seconds: float = 0.0
    by_version: dict[str, int] = field(default_factory=dict)
    parts: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def _frame_ts(key: str) -> dt.datetime:
    ms = int(key.rsplit("/", 1)[1].split(".")[0])
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def camera_groups(store: Storage) -> dict[str, str]:
    if not store.exists(CAMERAS_KEY):
        return {}
    return dict(json.loads(store.get_text(CAMERAS_KEY)).get("cameras", {}))


def list_cameras(store: Storage) -> list[str]:
    """Cameras present in the frame store (the registry, else the folder names)."""
    groups = camera_groups(store)
    if groups:
        return sorted(groups)
    return sorted({k.split("/")[1] for k in store.keys(f"{FRAMES_PREFIX}/")})


def serve_window(
    store: Storage,
    start: dt.date,
    days: int,
    detectors: Callable[[str], OnnxDetector],
    route: Callable[[str], str],
    *,
    cameras: list[str] | None = None,
    conf: float = 0.25,
    slow_ms: dict[str, float] | None = None,
    error_rate: dict[str, float] | None = None,
    progress: Callable[[str], None] | None = None,
    shadow: list[str] | None = None,
) -> ServeReport:
    """Serve every frame of ``days`` days from ``start`` and write the inference log.

    Args:
        detectors: model version -> detector (cached by the caller).
        route: frame key -> model version (the rollout manifest's routing).
        slow_ms: extra latency per version (simulates a slower challenger in tests/demo).
        error_rate: fraction of frames a version fails on (simulated serving errors).
        shadow: versions that also see every frame; their rows go to the shadow log.
    """
    rep = ServeReport()
    groups = camera_groups(store)
    cams = cameras or list_cameras(store)
    t0 = time.perf_counter()
    for i in range(days):
        day = start + dt.timedelta(days=i)
        for cam in cams:
            keys = [
                k
                for k in store.keys(f"{FRAMES_PREFIX}/{cam}/{day.isoformat()}/")
                if k.endswith(".jpg")
            ]
            if not keys:
                continue
            group = groups.get(cam, "default")
            records = [
                _serve_frame(
                    store,
                    key,
                    cam,
                    group,
                    route(key),
                    detectors,
                    conf,
                    (slow_ms or {}),
                    (error_rate or {}),
                )
                for key in keys
            ]
            for r in records:
                rep.by_version[r.model_version] = rep.by_version.get(r.model_version, 0) + 1
                rep.errors += r.error is not None
            rep.frames += len(records)
            rep.parts += len(write_log(store, records, part=f"serve-{cam}"))
            for sv in shadow or []:
                copies = [_serve_frame(store, r.frame_key, cam, group, sv, detectors, conf, {},
                                       {}) for r in records if r.model_version != sv]  # fmt: skip
                write_log(store, copies, part=f"serve-{cam}", prefix=SHADOW_PREFIX)
            if progress:
                progress(
                    f"  served {day.isoformat()} {cam}: {len(records)} frames "
                    f"({rep.frames / (time.perf_counter() - t0):.1f} frames/s)"
                )
    rep.seconds = time.perf_counter() - t0
    return rep


def _serve_frame(
    store: Storage,
    key: str,
    cam: str,
    group: str,
    version: str,
    detectors: Callable[[str], OnnxDetector],
    conf: float,
    slow_ms: dict[str, float],
    error_rate: dict[str, float],
) -> FrameRecord:
    """One frame through one model version; a failure is a logged error, not a crash."""
    import hashlib

    ts = _frame_ts(key)
    err_p = error_rate.get(version, 0.0)
    h = int.from_bytes(hashlib.sha256(f"err|{key}".encode()).digest()[:4], "big")
    if err_p and (h % 10_000) / 10_000 < err_p:
        return FrameRecord(ts, cam, key, version, 0.0, [], group, "simulated error")
    try:
        model = detectors(version)
        det, ms = model.predict_timed(decode_jpeg(store.get_bytes(key)), conf=conf)
    except CvloopError as exc:
        return FrameRecord(ts, cam, key, version, 0.0, [], group, str(exc)[:200])
    dets = [
        Detection(model.class_names[int(c)], float(s), *map(float, b))
        for c, s, b in zip(det.classes, det.scores, det.cxcywh(), strict=True)
    ]
    return FrameRecord(ts, cam, key, version, ms + slow_ms.get(version, 0.0), dets, group)


def serve_current_manifest(
    store: Storage,
    registry,
    start: dt.date,
    days: int,
    *,
    cameras: list[str] | None = None,
    conf: float = 0.25,
    slow_ms: dict[str, float] | None = None,
    error_rate: dict[str, float] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[ServeReport, str]:
    """Serve a window as the fleet would now: routed by the rollout manifest, or by the
    ``champion`` alias at 100 % when none was written (``registry``: the model registry
    the versions come from). Returns the report and the split."""
    from registry.manifest import read_manifest, route, single
    from registry.names import CHAMPION

    manifest = read_manifest(store)
    if manifest is None:
        manifest = single(str(registry.version_by_alias(CHAMPION).version))
        split = f"no rollout manifest: champion v{manifest.allocations[0].version} serves 100 %"
    else:
        split = (
            "rollout manifest: "
            + ", ".join(f"v{a.version} {a.share:g}%" for a in manifest.allocations)
            + "".join(f", v{v} in shadow" for v in manifest.shadow)
        )
    rep = serve_window(
        store,
        start,
        days,
        DetectorCache(registry),
        lambda k: route(k, manifest),
        cameras=cameras,
        conf=conf,
        slow_ms=slow_ms,
        error_rate=error_rate,
        progress=progress,
        shadow=manifest.shadow,
    )
    return rep, split


class DetectorCache:
    """Version -> ONNX detector, fetched from the registry once per version.

    The simulated fleet hosts every serving version in one process (a real fleet gives each
    its own hosts), so the sessions do not spin-wait: otherwise the version served most
    keeps the cores busy and the canary measures the neighbour, not the model.
    """

    def __init__(self, registry, threads: int | None = None) -> None:
        self.registry = registry
        self.threads = threads
        self._cache: dict[str, OnnxDetector] = {}

    def __call__(self, version: str) -> OnnxDetector:
        if version not in self._cache:
            model = self.registry.fetch(version)
            self._cache[version] = OnnxDetector(
                model.onnx, model.classes, model.imgsz, threads=self.threads, spinning=False
            )
        return self._cache[version]


def wait_for_routing(url: str, manifest, timeout_s: float = 60.0) -> dict:
    """Wait until the server at ``url`` routes by ``manifest`` (its split and time stamp, seen
    three times in a row: every worker polls on its own); returns its routing."""
    import httpx

    deadline = time.monotonic() + timeout_s
    want = [(a.version, a.share) for a in manifest.allocations]
    seen, body = 0, {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/v1/routing", timeout=30).json()
        got = [(a["version"], a["share"]) for a in body.get("allocations", [])]
        same = got == want and body.get("updated_at", "") == manifest.updated_at
        seen = seen + 1 if same else 0
        if seen >= 3:
            return body
        time.sleep(0.2)
    raise CvloopError(
        f"cvloop serve at {url} did not take the rollout manifest of {manifest.updated_at} "
        f"in {timeout_s:g} s (it serves {body.get('allocations')}; {body.get('last_error')})",
        fix="read its log (`cvloop services status serve`) and /v1/routing",
    )


def audit_routing(store: Storage, start: dt.date, days: int, manifest, route_by: str) -> dict:
    """Did the server serve each frame of the window with the version ``manifest`` routes it
    to? Read from the log the server wrote: rows, per version, and the rows that disagree."""
    from cvloop.adapters.inference_log import read_log
    from registry.manifest import route

    table = read_log(store, start, start + dt.timedelta(days=days),
                     columns=["frame_key", "camera", "model_version"])  # fmt: skip
    by_version: dict[str, int] = {}
    wrong = []
    for key, cam, version in zip(*(table.column(c).to_pylist() for c in table.column_names),
                                 strict=True):  # fmt: skip
        by_version[version] = by_version.get(version, 0) + 1
        if route(cam if route_by == "camera" else key, manifest) != version:
            wrong.append(key)
    return {"rows": table.num_rows, "by_version": by_version, "misrouted": len(wrong),
            "examples": wrong[:3]}  # fmt: skip


def serve_window_http(
    store: Storage,
    start: dt.date,
    days: int,
    url: str,
    *,
    cameras: list[str] | None = None,
    concurrency: int = 4,
    progress: Callable[[str], None] | None = None,
) -> ServeReport:
    """The fleet as a client of ``cvloop serve``: every frame of the window is sent by key
    (the server reads it from the same frame store), camera by camera, ``concurrency``
    requests in flight (so the server batches them). The server routes each frame by the
    rollout manifest and writes the inference log; at the end its journal is flushed so the
    canary reads every row.

    A frame the server answers with 503 (queue full) is sent again after a pause; any other
    refusal is counted as an error and named in the progress output.
    """
    import concurrent.futures as cf

    import httpx

    rep = ServeReport()
    cams = cameras or list_cameras(store)
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as client:
        try:
            ready = client.get("/readyz")
        except httpx.HTTPError as exc:
            raise CvloopError(f"cvloop serve does not answer at {url}: {exc}",
                              fix="start it: `cvloop services up serve`") from None  # fmt: skip
        if ready.status_code != 200:
            raise CvloopError(f"cvloop serve at {url} is not ready: {ready.json().get('reason')}",
                              fix="register a champion, or read `cvloop services status serve`")  # fmt: skip

        def send(key: str, cam: str) -> dict:
            body = {"frame_key": key, "camera": cam, "ts": int(_frame_ts(key).timestamp() * 1000)}
            for attempt in range(20):
                r = client.post("/v1/detect", json=body)
                if r.status_code != 503:
                    return {"status": r.status_code, **r.json()}
                time.sleep(0.05 * (attempt + 1))
            return {"status": 503, "error": "server overloaded: 20 tries"}

        with cf.ThreadPoolExecutor(concurrency) as pool:
            for i in range(days):
                day = start + dt.timedelta(days=i)
                for cam in cams:
                    keys = [k for k in store.keys(f"{FRAMES_PREFIX}/{cam}/{day.isoformat()}/")
                            if k.endswith(".jpg")]  # fmt: skip
                    if not keys:
                        continue
                    for out in pool.map(lambda k, c=cam: send(k, c), keys):
                        if out.get("model_version"):
                            v = out["model_version"]
                            rep.by_version[v] = rep.by_version.get(v, 0) + 1
                        rep.frames += 1
                        if out["status"] != 200:
                            rep.errors += 1
                            if progress and rep.errors <= 5:
                                progress(
                                    f"  refused {out.get('frame_key', '?')}: {out.get('error')}"
                                )
                    if progress:
                        progress(
                            f"  served {day.isoformat()} {cam}: {len(keys)} frames via {url} "
                            f"({rep.frames / (time.perf_counter() - t0):.1f} frames/s)"
                        )
        from cvloop.adapters.serve_client import flush_all

        rep.parts = len(flush_all(url))  # every worker's journal, not only one's
    rep.seconds = time.perf_counter() - t0
    return rep
