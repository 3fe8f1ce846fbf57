"""``cvloop bench labelstudio``: importing pre-annotated tasks into Label Studio.

Case ``labelstudio.import_10k.seconds``: cvloop's import of 10,000 tasks with predictions
(3 boxes each) — the project's content hashes listed first so nothing is imported twice,
then batches of ``annotate.import_batch_size`` with progress — vs one raw SDK
``projects.import_tasks`` call with the same 10,000 tasks into an empty project
(baseline; goal ratio <= 1.2). Needs the local Label Studio (`cvloop services up`); both
projects are deleted afterwards. ``--quick``: 2,000 tasks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from cvloop.app.bench import Case, timed
from cvloop.app.bench.common import CLASSES


def _specs(n: int):
    from cvloop.adapters.labelstudio import LOCAL_FILES_URL, TaskSpec
    from cvloop.core.frames import LabelBox

    out = []
    for i in range(n):
        sha = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
        boxes = [
            LabelBox(CLASSES[j % 3], 0.2 + 0.25 * j, 0.5, 0.1 + 0.01 * (i % 7), 0.2)
            for j in range(3)
        ]
        out.append(
            TaskSpec(
                sha256=sha,
                image=f"{LOCAL_FILES_URL}store/frames/cam-01/2026-01-01/{i}.jpg",
                width=256,
                height=256,
                boxes=boxes,
                scores=[0.9, 0.7, 0.55],
                meta={"key": f"frames/cam-01/2026-01-01/{i}.jpg", "camera": "cam-01"},
            )
        )
    return out


def run(quick: bool = False) -> Iterator[Case]:
    from cvloop.app.common import client_context

    ctx = client_context()
    n = 2000 if quick else 10_000
    queue = ctx.labelstudio
    queue.check()
    specs = _specs(n)
    ours = queue.ensure_project("cvloop bench (cvloop import)", CLASSES)
    raw = queue.ensure_project("cvloop bench (raw SDK import)", CLASSES)
    try:
        batch = ctx.params.annotate.import_batch_size
        t_ours, res = timed(lambda: queue.import_tasks(ours, specs, "bench/1", batch))
        tasks = [s.to_task("bench/1") for s in specs]
        t_raw, _ = timed(lambda: queue.client.projects.import_tasks(id=raw, request=tasks))
        if res.imported != n or len(queue.task_hashes(raw)) != n:
            raise RuntimeError("an import lost tasks")
        yield Case(
            f"labelstudio.import_{n // 1000}k.seconds",
            round(t_ours, 2),
            "s",
            f"one raw SDK import_tasks call with the same {n} tasks",
            round(t_raw, 2),
        )
    finally:
        for pid in (ours, raw):
            queue.client.projects.delete(id=pid)
