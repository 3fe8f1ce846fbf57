"""The HTTP API of ``cvloop serve`` and the life of one worker process.

=========================  =========================================================================
``POST /v1/detect``        one frame: the image bytes as the body (``image/*`` or
                           ``application/octet-stream``; ``?camera=&ts=&frame_key=``), or JSON
                           ``{"frame_key", "camera", "ts"}`` to read it from the frame store
``POST /v1/detect/batch``  JSON ``{"frames": [{"frame_key" | "image_b64", "camera", "ts"}, ...]}``
``POST /v1/ingest``        JSON ``{"records": [...]}``: rows in the inference-log shape from a
                           server cvloop does not run (Triton, an edge box), journaled the same way
``POST /v1/log/flush``     upload this worker's journal now (ops, tests)
``GET /healthz``           the process is up
``GET /readyz``            200 with the routing when a model serves, else 503 and the reason
``GET /v1/routing``        the routing, the warm versions and any refused version (always 200)
``GET /metrics``           Prometheus (all workers)
=========================  =========================================================================

A detection answer is the frame's inference-log row: ``model_version``, ``latency_ms``,
``detections`` (``label``, ``conf``, ``cx``, ``cy``, ``w``, ``h`` normalized to the frame).
``ts`` is the capture time: ISO 8601 with a zone, or epoch milliseconds (default: now).
A request is answered only after its row is journaled. Client errors (400 bad image or
field, 404 unknown frame key, 413 too large) are not log rows; a model failure is (500,
its ``error`` logged), and so counts in the canary's error rate.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from cvloop.adapters.detector import decode_jpeg
from cvloop.adapters.frame_keys import read_frame
from cvloop.adapters.inference_log import (
    LOG_PREFIX,
    SHADOW_PREFIX,
    Detection,
    FrameRecord,
    LogSchemaError,
)
from cvloop.adapters.log_writer import LogWriter
from cvloop.core.errors import CvloopError
from cvloop.serving.batcher import FrameJob, MicroBatcher, Overloaded
from cvloop.serving.metrics import exposition, get_metrics, mark_dead
from cvloop.serving.routing import ModelHost, Routing

log = logging.getLogger("uvicorn.error")  # uvicorn's own handler prints it

MAX_BATCH_FRAMES = 256
MAX_INGEST_RECORDS = 10_000


class ClientError(Exception):
    def __init__(self, status: int, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.fix = status, message, fix


class _Closed(Exception):
    """The batcher a request was routed to was retired by a swap: route it again."""


@dataclass(frozen=True)
class Snapshot:
    routing: Routing
    batchers: dict[str, MicroBatcher]  # live: their rows go to the inference log
    shadow: dict[str, MicroBatcher]  # shadow: a copy of each frame, rows to the shadow log

    def all(self) -> list[MicroBatcher]:
        return [*self.batchers.values(), *self.shadow.values()]


def parse_ts(value) -> dt.datetime:
    """A capture time: epoch milliseconds, or ISO 8601 with a zone; None means now."""
    if value is None or value == "":
        return dt.datetime.now(dt.UTC)
    if isinstance(value, int | float) or (isinstance(value, str) and value.lstrip("-").isdigit()):
        return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)
    try:
        ts = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ClientError(400, f"ts {value!r} is neither ISO 8601 nor epoch milliseconds",
                          "send e.g. 2026-12-02T08:15:00Z or 1796199300000") from None  # fmt: skip
    if ts.tzinfo is None:
        raise ClientError(400, f"ts {value!r} has no time zone",
                          "append Z (UTC) or an offset such as +01:00") from None  # fmt: skip
    return ts.astimezone(dt.UTC)


def _camera(value) -> str:
    cam = str(value or "").strip()
    if not cam or len(cam) > 128:
        raise ClientError(400, "camera is required (1-128 characters)",
                          "pass ?camera=<id> or a \"camera\" field")  # fmt: skip
    return cam


def record_json(rec: FrameRecord) -> dict:
    return {
        "frame_key": rec.frame_key,
        "camera": rec.camera,
        "camera_group": rec.camera_group,
        "ts": rec.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "model_version": rec.model_version,
        "latency_ms": round(rec.latency_ms, 3),
        "error": rec.error,
        "detections": [d.__dict__ for d in rec.detections],
    }


def record_from_json(i: int, raw: dict) -> FrameRecord:
    """An ingested row -> a record, naming the row and the field on a problem."""
    try:
        dets = [Detection(str(d["label"]), float(d["conf"]), float(d["cx"]), float(d["cy"]),
                          float(d["w"]), float(d["h"])) for d in raw.get("detections") or []]  # fmt: skip
        return FrameRecord(
            parse_ts(raw["ts"]), _camera(raw.get("camera")), str(raw["frame_key"]),
            str(raw["model_version"]), float(raw.get("latency_ms", 0.0)), dets,
            str(raw.get("camera_group") or "default"), raw.get("error"),
        )  # fmt: skip
    except KeyError as exc:
        raise ClientError(422, f"record {i} lacks the field {exc.args[0]!r}",
                          "send inference-log/v1 rows (docs/inference-log.md)") from None  # fmt: skip
    except ClientError as exc:
        raise ClientError(422, f"record {i}: {exc.message}", exc.fix) from None
    except (TypeError, ValueError) as exc:
        raise ClientError(422, f"record {i} is malformed: {exc}") from None


class Server:
    """One worker: its models, batchers, log writer and the manifest poll."""

    def __init__(self, ctx, *, spool_dir: Path | None = None, workers: int | None = None,
                 loader=None) -> None:  # fmt: skip
        self.ctx = ctx
        self.loader = loader
        self.p = ctx.params.serve
        n = workers or self.p.workers
        self.workers = n
        self.threads = self.p.threads or max(1, (os.cpu_count() or 1) // n)
        self.spool_dir = spool_dir or ctx.settings.serve_spool
        self.metrics = get_metrics()
        self.snapshot: Snapshot | None = None
        self.host: ModelHost | None = None
        self.writer: LogWriter | None = None
        self.shadow_writer: LogWriter | None = None
        self._closing: set[asyncio.Task] = set()  # batchers retired by a swap, draining
        self._shadowing: set[asyncio.Task] = set()  # shadow copies in flight

    # ---- life cycle -----------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, app: FastAPI):
        store = self.ctx.store
        lp = self.p.log
        # two journals, each with its own spool root (recovery adopts per root and prefix)
        self.writer, self.shadow_writer = [await asyncio.to_thread(
            LogWriter, store, self.spool_dir / name, flush_rows=lp.flush_rows,
            flush_seconds=lp.flush_seconds, fsync=lp.fsync, on_event=log.warning, prefix=prefix,
        ) for name, prefix in (("live", LOG_PREFIX), ("shadow", SHADOW_PREFIX))]  # fmt: skip
        self.host = ModelHost(store, self.ctx.registry, runtime=self.p.runtime,
                              **({"loader": self.loader} if self.loader else {}),
                              threads=self.threads, route_by=self.p.route_by,
                              on_event=log.info,
                              on_load=lambda v, r: self.metrics.loads.labels(v, r).inc())  # fmt: skip
        await self._reload()
        task = asyncio.create_task(self._reload_loop())
        log.info(f"cvloop serve: worker {os.getpid()} up, {self.threads} threads, log writer "
                 f"{self.writer.writer_id}")  # fmt: skip
        try:
            yield
        finally:
            task.cancel()
            snap, self.snapshot = self.snapshot, None
            await asyncio.gather(*self._shadowing, return_exceptions=True)
            for b in snap.all() if snap else []:
                await b.close()
            await asyncio.gather(*self._closing)
            await asyncio.to_thread(self.shadow_writer.close)
            keys = await asyncio.to_thread(self.writer.close)
            log.info(f"cvloop serve: worker {os.getpid()} stopped, log flushed ({len(keys)} parts)")
            mark_dead(os.getpid())

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.p.reload_seconds)
            try:
                await self._reload()
            except Exception as exc:  # never let the poll die: the next one may work
                log.warning(f"cvloop serve: manifest poll failed: {exc}")

    async def _reload(self) -> None:
        host = self.host
        changed = await asyncio.to_thread(host.poll)
        routing = host.routing
        if routing is not None and (changed or self.snapshot is None
                                    or routing is not self.snapshot.routing):  # fmt: skip
            old = self.snapshot.batchers if self.snapshot else {}
            old_shadow = self.snapshot.shadow if self.snapshot else {}
            batchers = {v: self._batcher(old, m, self.writer) for v, m in host.state.warm.items()}
            shadow = {v: self._batcher(old_shadow, routing.models[v], self.shadow_writer)
                      for v in routing.shadow}  # fmt: skip
            self.snapshot = Snapshot(routing, batchers, shadow)  # the swap: one assignment
            keep = {id(b) for b in [*batchers.values(), *shadow.values()]}
            for b in [*old.values(), *old_shadow.values()]:
                if id(b) not in keep:
                    b.closing = True
                    task = asyncio.create_task(b.close())
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
        self._gauges()

    def _batcher(self, old: dict[str, MicroBatcher], model, writer: LogWriter) -> MicroBatcher:
        b = old.get(model.version)
        if b is not None and b.model is model:
            return b
        return MicroBatcher(model, max_batch=self.p.max_batch, max_wait_ms=self.p.max_wait_ms,
                            max_queue=self.p.max_queue, conf=self.p.conf, iou=self.p.iou,
                            journal=writer.write,
                            observe=self._observe if writer is self.writer else None).start()  # fmt: skip

    def _shadow_copy(self, snap: Snapshot, served: str, pixels, job: FrameJob) -> None:
        """A copy of a served frame for each version in shadow, in the background: never
        awaited by the request; a shadow whose queue is full drops the copy (counted)."""
        for v in snap.routing.shadow:
            if v == served or v not in snap.shadow:
                continue

            async def one(b: MicroBatcher = snap.shadow[v], model=snap.routing.models[v]):
                try:
                    _, tensor, meta = await asyncio.to_thread(_prepare, model, b"", pixels)
                    await b.submit(replace(job, tensor=tensor, meta=meta,
                                           t_received=time.perf_counter()))  # fmt: skip
                except Overloaded:
                    self.metrics.shadow_dropped.labels(b.model.version).inc()
                except Exception as exc:  # a shadow never fails a request
                    log.warning(f"cvloop serve: shadow v{b.model.version}: {exc}")

            task = asyncio.create_task(one())
            self._shadowing.add(task)
            task.add_done_callback(self._shadowing.discard)

    def _gauges(self) -> None:
        m, st = self.metrics, self.writer.stats
        m.ready.set(1 if self.snapshot else 0)
        m.log_pending.set(st.pending_rows)
        m.log_lag.set(st.lag_seconds())
        if self.snapshot:
            for v, b in self.snapshot.batchers.items():
                m.queue.labels(v).set(b.depth)
            for v, b in self.snapshot.shadow.items():
                m.queue.labels(f"{v}-shadow").set(b.depth)

    def _observe(self, version: str, n: int, records: list[FrameRecord]) -> None:
        m = self.metrics
        m.batch.labels(version).observe(n)
        m.frames.labels(version).inc(n)
        errors = sum(r.error is not None for r in records)
        if errors:
            m.errors.labels(version).inc(errors)
        h = m.latency.labels(version)
        for r in records:
            h.observe(r.latency_ms / 1000.0)

    # ---- serving a frame ------------------------------------------------------------------
    async def serve_frame(self, *, image: bytes | None, frame_key: str | None, camera: str,
                          ts: dt.datetime, camera_group: str | None = None) -> FrameRecord:  # fmt: skip
        t0 = time.perf_counter()
        if image is None:
            if not frame_key:
                raise ClientError(400, "send the image bytes or a frame_key of the frame store")
            try:
                image = await asyncio.to_thread(read_frame, self.ctx.store, frame_key)
            except (CvloopError, FileNotFoundError, KeyError) as exc:
                raise ClientError(404, f"frame {frame_key!r} cannot be read from the frame store: "
                                  f"{getattr(exc, 'message', exc)}",
                                  "send a key that exists, or the image bytes") from None  # fmt: skip
        if len(image) > self.p.max_image_mb * 1e6:
            raise ClientError(413, f"image of {len(image) / 1e6:.1f} MB exceeds serve.max_image_mb "
                              f"({self.p.max_image_mb:g})", "send a smaller frame")  # fmt: skip
        key = frame_key or f"upload/{camera}/{hashlib.sha256(image).hexdigest()[:16]}"
        pixels = None
        for _ in range(3):
            snap = self.snapshot
            if snap is None:
                reason = self.host.state.not_ready if self.host else "starting"
                raise ClientError(503, f"not ready: {reason}")
            version = snap.routing.version_for(camera, key)
            model = snap.routing.models[version]
            batcher = snap.batchers[version]
            if batcher.closing:
                continue
            batcher.incoming += 1  # the batcher waits for this frame rather than leave alone
            try:
                pixels, tensor, meta = await asyncio.to_thread(_prepare, model, image, pixels)
            except CvloopError as exc:
                raise ClientError(400, f"frame {key!r}: {exc.message}",
                                  "send a JPEG or PNG image") from None  # fmt: skip
            finally:
                batcher.incoming -= 1
            job = FrameJob(tensor, meta, ts, camera, camera_group or snap.routing.group_of(camera),
                           key, t0)  # fmt: skip
            if batcher.closing:
                continue
            try:
                rec = await batcher.submit(job)
            except Overloaded as exc:
                self.metrics.overloaded.labels(version).inc()
                raise ClientError(503, str(exc), "retry after a short wait") from None
            if snap.shadow:
                self._shadow_copy(snap, version, pixels, job)
            return rec
        raise ClientError(503, "the routing changed three times during this request", "retry")


def _prepare(model, image: bytes, pixels: np.ndarray | None):
    """Decode (once, kept for a re-route) and letterbox for ``model``: one thread hop."""
    if pixels is None:
        pixels = decode_jpeg(image)
    batch, metas = model.detector.preprocess([pixels])
    return pixels, batch[0], metas[0]


def _error(exc: ClientError) -> JSONResponse:
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    body = {"error": exc.message} | ({"fix": exc.fix} if exc.fix else {})
    return JSONResponse(body, status_code=exc.status, headers=headers)


def create_app(ctx=None, *, spool_dir: Path | None = None, workers: int | None = None,
               loader=None) -> FastAPI:  # fmt: skip
    """The ASGI app (``uvicorn --factory cvloop.serving.app:create_app``); ``loader``
    replaces the registry's models (benchmarks)."""
    if ctx is None:
        from cvloop.context import Context

        ctx = Context.from_env()
        workers = workers or int(os.environ.get("CVLOOP_SERVE_WORKERS", "0") or 0) or None
    server = Server(ctx, spool_dir=spool_dir, workers=workers, loader=loader)
    app = FastAPI(title="cvloop serve", lifespan=server.lifespan, docs_url="/docs")
    app.state.server = server
    m = server.metrics

    def answer(endpoint: str, code: int, body: dict | JSONResponse) -> JSONResponse:
        m.requests.labels(endpoint, str(code)).inc()
        return body if isinstance(body, JSONResponse) else JSONResponse(body, status_code=code)

    @app.post("/v1/detect")
    async def detect(request: Request):
        try:
            ctype = request.headers.get("content-type", "")
            q = request.query_params
            limit = server.p.max_image_mb * 1e6
            if int(request.headers.get("content-length") or 0) > limit:
                raise ClientError(413, f"request body exceeds serve.max_image_mb "
                                  f"({server.p.max_image_mb:g} MB)", "send a smaller frame")  # fmt: skip
            if ctype.startswith("application/json"):
                body = await request.json()
                rec = await server.serve_frame(
                    image=None, frame_key=body.get("frame_key"), camera=_camera(body.get("camera")),
                    ts=parse_ts(body.get("ts")), camera_group=body.get("camera_group"),
                )  # fmt: skip
            else:
                data = await request.body()
                if not data:
                    raise ClientError(
                        400, "empty body", "send the image bytes, or JSON with frame_key"
                    )
                rec = await server.serve_frame(
                    image=data, frame_key=q.get("frame_key"), camera=_camera(q.get("camera")),
                    ts=parse_ts(q.get("ts")), camera_group=q.get("camera_group"),
                )  # fmt: skip
        except ClientError as exc:
            return answer("detect", exc.status, _error(exc))
        code = 500 if rec.error else 200
        return answer("detect", code, record_json(rec))

    @app.post("/v1/detect/batch")
    async def detect_batch(request: Request):
        try:
            frames = (await request.json()).get("frames")
            if not isinstance(frames, list) or not 0 < len(frames) <= MAX_BATCH_FRAMES:
                raise ClientError(400, f"frames must be a list of 1-{MAX_BATCH_FRAMES} frames")
        except (ValueError, AttributeError):
            return answer("batch", 400, _error(ClientError(400, "the body is not JSON")))
        except ClientError as exc:
            return answer("batch", exc.status, _error(exc))

        async def one(i: int, f: dict) -> dict:
            try:
                img = base64.b64decode(f["image_b64"]) if f.get("image_b64") else None
                rec = await server.serve_frame(image=img, frame_key=f.get("frame_key"),
                                               camera=_camera(f.get("camera")),
                                               ts=parse_ts(f.get("ts")),
                                               camera_group=f.get("camera_group"))  # fmt: skip
                return {"status": 500 if rec.error else 200, **record_json(rec)}
            except ClientError as exc:
                return {"status": exc.status, "index": i, "error": exc.message}
            except (ValueError, TypeError) as exc:
                return {"status": 400, "index": i, "error": f"frame {i}: {exc}"}

        results = await asyncio.gather(*(one(i, f) for i, f in enumerate(frames)))
        return answer("batch", 200, {"results": results})

    @app.post("/v1/ingest")
    async def ingest(request: Request):
        try:
            rows = (await request.json()).get("records")
            if not isinstance(rows, list) or not 0 < len(rows) <= MAX_INGEST_RECORDS:
                raise ClientError(400, f"records must be a list of 1-{MAX_INGEST_RECORDS} rows")
            records = [record_from_json(i, r) for i, r in enumerate(rows)]
            await asyncio.to_thread(server.writer.write, records)
        except ClientError as exc:
            return answer("ingest", exc.status, _error(exc))
        except LogSchemaError as exc:
            return answer("ingest", 422, _error(ClientError(422, exc.message, exc.fix)))
        except (ValueError, AttributeError):
            return answer("ingest", 400, _error(ClientError(400, "the body is not JSON")))
        return answer("ingest", 200, {"written": len(records)})

    @app.post("/v1/log/flush")
    async def flush():
        try:
            await asyncio.gather(*server._shadowing, return_exceptions=True)
            keys = await asyncio.to_thread(server.writer.flush)
            keys += await asyncio.to_thread(server.shadow_writer.flush)
        except Exception as exc:
            return answer("flush", 503, _error(ClientError(503, f"log upload failed: {exc}",
                                                           "the journal is kept; retry")))  # fmt: skip
        st = server.writer.stats
        return answer("flush", 200, {"parts": keys, "writer": server.writer.writer_id,
                                     "rows_journaled": st.rows_journaled,
                                     "rows_uploaded": st.rows_uploaded})  # fmt: skip

    def routing_body() -> dict:
        host, snap = server.host, server.snapshot
        st = host.state if host else None
        body = {"ready": snap is not None, "pid": os.getpid()}
        if snap:
            body |= snap.routing.describe()
            body["warm"] = sorted(snap.batchers)
            body["shadowing"] = sorted(snap.shadow)
        if st:
            body["reason"] = st.not_ready
            body["last_error"] = st.last_error
            body["refused"] = {v: why for v, (why, _) in st.refused.items()}
        if server.writer:
            s = server.writer.stats
            body["log"] = {"writer": server.writer.writer_id, "pending_rows": s.pending_rows,
                           "lag_seconds": round(s.lag_seconds(), 3),
                           "rows_uploaded": s.rows_uploaded, "last_error": s.last_error}  # fmt: skip
        return body

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "pid": os.getpid(), "workers": server.workers}

    @app.get("/readyz")
    async def readyz():
        body = routing_body()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/v1/routing")
    async def routing():
        return routing_body()

    @app.get("/metrics")
    async def metrics():
        server._gauges()
        data, ctype = exposition()
        return Response(data, media_type=ctype)

    return app
