"""Dynamic micro-batching: frames for one model version wait at most ``max_wait_ms`` to
share a model call of up to ``max_batch`` frames — and only while another frame is on its
way (queued, or routed here and still being decoded): a lone frame is not held back.

The queue is bounded (``max_queue``): a frame that finds it full is refused at once
(:class:`Overloaded`, a 503 for the client) instead of waiting without end. The model runs
in one thread per version (a version's batches never compete with each other for the
intra-op threads). After the call the batch's log rows are journaled in one write; only
then are the requests answered, so an answered request always has its row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from cvloop.adapters.detector import LetterboxMeta, decode
from cvloop.adapters.inference_log import Detection, FrameRecord
from cvloop.serving.models import ServingModel


class Overloaded(Exception):
    """The version's queue is full: the client should retry later (503)."""


@dataclass
class FrameJob:
    """One frame on its way through a model."""

    tensor: np.ndarray  # (3, imgsz, imgsz) float32
    meta: LetterboxMeta
    ts: dt.datetime
    camera: str
    camera_group: str
    frame_key: str
    t_received: float  # perf_counter() when the request arrived
    future: asyncio.Future | None = None


@dataclass
class BatchStats:
    batches: int = 0
    frames: int = 0
    errors: int = 0


class MicroBatcher:
    """The batching loop of one model version (start with :meth:`start`)."""

    def __init__(
        self,
        model: ServingModel,
        *,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        conf: float,
        iou: float,
        journal: Callable[[list[FrameRecord]], None],
        observe: Callable[[str, int, list[FrameRecord]], None] | None = None,
    ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue: asyncio.Queue[FrameJob | None] = asyncio.Queue(maxsize=max_queue)
        self.conf = conf
        self.iou = iou
        self.journal = journal
        self.observe = observe or (lambda _v, _n, _r: None)
        self.stats = BatchStats()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-v{model.version}")
        self._task: asyncio.Task | None = None
        self.closing = False  # retired by a routing swap: take no new frames
        self.incoming = 0  # frames routed here and being decoded: worth waiting for

    def start(self) -> MicroBatcher:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    async def submit(self, job: FrameJob) -> FrameRecord:
        """Queue a frame and wait for its logged record; :class:`Overloaded` when full."""
        job.future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise Overloaded(
                f"model version {self.model.version} has {self.queue.maxsize} frames waiting"
            ) from None
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            if first is None:
                return
            batch = [first]
            deadline = loop.time() + self.max_wait
            stop = False
            while len(batch) < self.max_batch:
                if self.queue.empty() and self.incoming <= 0:
                    break  # nothing else is on its way: waiting would only add latency
                timeout = deadline - loop.time()
                try:
                    job = (self.queue.get_nowait() if timeout <= 0
                           else await asyncio.wait_for(self.queue.get(), timeout))  # fmt: skip
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            try:
                records = await loop.run_in_executor(self._pool, self._process, batch)
            except Exception as exc:  # the journal failed: these requests are not answered
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            else:
                for job, rec in zip(batch, records, strict=True):
                    if not job.future.done():
                        job.future.set_result(rec)
            if stop:
                return

    def _process(self, batch: list[FrameJob]) -> list[FrameRecord]:
        """Model call, decode, one journal write for the batch (in the model's thread)."""
        v = self.model.version
        det = self.model.detector
        error = None
        try:
            raw = det.forward(np.stack([j.tensor for j in batch]))
            results = decode(raw, [j.meta for j in batch], self.conf, self.iou)
        except Exception as exc:  # a runtime failure is a logged error for each frame
            error = f"{type(exc).__name__}: {exc}"[:200]
            results = [None] * len(batch)
        now = time.perf_counter()
        records = []
        for job, d in zip(batch, results, strict=True):
            dets = [] if d is None else [
                Detection(det.class_names[int(c)], float(s), *map(float, b))
                for c, s, b in zip(d.classes, d.scores, d.cxcywh(), strict=True)
            ]  # fmt: skip
            records.append(FrameRecord(job.ts, job.camera, job.frame_key, v,
                                       (now - job.t_received) * 1000.0, dets, job.camera_group,
                                       error))  # fmt: skip
        self.journal(records)  # durable before anyone is answered
        self.stats.batches += 1
        self.stats.frames += len(batch)
        self.stats.errors += len(batch) if error else 0
        self.observe(v, len(batch), records)
        return records

    async def close(self) -> None:
        """Serve what is queued, then stop."""
        if self._task is None:
            return
        self.closing = True
        if not self._task.done():
            await self.queue.put(None)
            await self._task
        self._pool.shutdown(wait=True)
