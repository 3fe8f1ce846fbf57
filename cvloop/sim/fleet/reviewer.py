"""A simulated reviewer for the synthetic fleet (demo and tests only).

It does through the Label Studio API what a person does in the UI: opens the next
unreviewed task and submits the correct boxes — here the fleet's ground truth, which
production never has. ``plant_bad`` tasks get a bad box instead (out of the image, a
sliver, an unknown class, a duplicate), so the validation step has something to catch.

A person is not exact either: with ``jitter_px`` each box edge moves by a few pixels
(Gaussian) and with ``miss_rate`` a small box is overlooked now and then. In the demo the
annotations are signed by a Label Studio user named *Simulated reviewer* (``REVIEWER``), so
no one mistakes them for a person's work. The tasks Label Studio gives to two reviewers
(``review.agreement_share``) get a second, independent annotation from *Second simulated
reviewer* (``SECOND_REVIEWER``), with its own jitter and misses, as a second person would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cvloop.adapters.frame_keys import VIDEO_KEY_SEP
from cvloop.adapters.labelstudio import LabelStudioQueue
from cvloop.core.frames import LabelBox

BAD_BOXES = (
    ("box_inside_image", LabelBox("crate", 0.95, 0.5, 0.3, 0.2)),
    ("min_box_area", LabelBox("cone", 0.5, 0.5, 0.008, 0.008)),  # >= 1 px, < min area
    ("class_in_schema", LabelBox("forklift", 0.4, 0.4, 0.2, 0.2)),
    ("max_box_area", LabelBox("barrel", 0.5, 0.5, 0.99, 0.99)),
)


# the Label Studio user that signs the demo's simulated reviews
REVIEWER = (
    "simulated-reviewer@cvloop.local",
    "Simulated reviewer",
    "(cvloop demo: fleet ground truth, not a person)",
)
# the second reviewer of the double-labeled tasks (inter-annotator agreement)
SECOND_REVIEWER = (
    "second-simulated-reviewer@cvloop.local",
    "Second simulated reviewer",
    "(cvloop demo: fleet ground truth, not a person)",
)


@dataclass
class ReviewReport:
    submitted: int = 0
    planted: dict[int, str] = field(default_factory=dict)  # task id -> rule it breaks
    no_truth: int = 0
    jittered: int = 0  # boxes whose edges were moved
    missed: int = 0  # small boxes overlooked
    reviewer_id: int | None = None
    second: int = 0  # double-labeled tasks given a second annotation


def imperfect(
    boxes: list[LabelBox], rng, jitter_px: float, miss_rate: float, width: int, height: int
) -> tuple[list[LabelBox], int, int]:
    """What a careful but human reviewer submits for ``boxes``: edges off by a few pixels,
    now and then a small box (under 1 % of the frame) overlooked."""
    out, jittered, missed = [], 0, 0
    for b in boxes:
        if miss_rate and b.w * b.h < 0.01 and rng.random() < miss_rate:
            missed += 1
            continue
        if jitter_px:
            x0, x1 = (b.cx - b.w / 2) * width, (b.cx + b.w / 2) * width
            y0, y1 = (b.cy - b.h / 2) * height, (b.cy + b.h / 2) * height
            x0, x1, y0, y1 = (v + rng.normal(0.0, jitter_px) for v in (x0, x1, y0, y1))
            x0, x1 = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
            y0, y1 = sorted((min(max(y0, 0.0), height), min(max(y1, 0.0), height)))
            if x1 - x0 >= 1.0 and y1 - y0 >= 1.0:
                b = LabelBox(
                    b.label, (x0 + x1) / 2 / width, (y0 + y1) / 2 / height,
                    (x1 - x0) / width, (y1 - y0) / height,
                )  # fmt: skip
                jittered += 1
        out.append(b)
    return out, jittered, missed


class TruthIndex:
    """Ground truth of fleet frames, read lazily per camera-day (or per video)."""

    def __init__(self, truth_store) -> None:
        self.store = truth_store
        self._cache: dict[str, dict] = {}

    def _load(self, name: str, key_of) -> dict:
        if name not in self._cache:
            rows = {}
            if self.store.exists(name):
                for line in self.store.get_text(name).splitlines():
                    if line:
                        row = json.loads(line)
                        rows[key_of(row)] = row
            self._cache[name] = rows
        return self._cache[name]

    def boxes(self, frame_key: str, camera: str) -> list[LabelBox] | None:
        if VIDEO_KEY_SEP in frame_key:
            video, offset = frame_key.split(VIDEO_KEY_SEP)
            _, cam, day, name = video.split("/")
            rows = self._load(
                f"videos/{cam}/{day}/{name.removesuffix('.mp4')}.jsonl", lambda r: r["ts_ms"]
            )
            if not rows:
                return None
            start = int(name.removesuffix(".mp4"))
            ts = min(rows, key=lambda t: abs(t - (start + int(offset))))
            row = rows[ts]
        else:
            day = frame_key.split("/")[2]
            row = self._load(f"{camera}/{day}.jsonl", lambda r: r["frame_key"]).get(frame_key)
            if row is None:
                return None
        return [LabelBox(b[0], b[1], b[2], b[3], b[4]) for b in row["boxes"]]


def simulate_review(
    queue: LabelStudioQueue,
    project_id: int,
    truth_store,
    *,
    frames: int | None = None,
    plant_bad: int = 0,
    width: int = 256,
    height: int = 256,
    jitter_px: float = 0.0,
    miss_rate: float = 0.0,
    signed: bool = False,
    seed: int = 0,
) -> ReviewReport:
    """Submit ground truth for up to ``frames`` unreviewed tasks (all by default), the first
    ``plant_bad`` of them with a planted bad box; ``signed``: as the ``REVIEWER`` user, and
    the double-labeled ones a second time as the ``SECOND_REVIEWER`` user."""
    import numpy as np

    rng = np.random.default_rng(seed)
    second_rng = np.random.default_rng(seed + 1)
    index = TruthIndex(truth_store)
    report = ReviewReport()
    second_id, doubles = None, set()
    if signed:
        report.reviewer_id = queue.ensure_user(*REVIEWER)
        doubles = queue.double_labeled(project_id)
        if doubles:
            second_id = queue.ensure_user(*SECOND_REVIEWER)
    todo = [(tid, data) for tid, data, n in sorted(queue.tasks(project_id)) if n == 0]
    # a reviewer can only draw the labels the project offers (a class the schema does not
    # have yet is left unlabelled, as a person would)
    offered = set(queue.labels(project_id))
    for tid, data in todo[:frames] if frames is not None else todo:
        boxes = index.boxes(str(data.get("key")), str(data.get("camera")))
        if boxes is None:
            report.no_truth += 1
            continue
        boxes = [b for b in boxes if b.label in offered]
        boxes, j, m = imperfect(boxes, rng, jitter_px, miss_rate, width, height)
        report.jittered += j
        report.missed += m
        if len(report.planted) < plant_bad:
            rule, bad = BAD_BOXES[len(report.planted) % len(BAD_BOXES)]
            boxes = [*boxes, bad]
            report.planted[tid] = rule
        queue.submit(
            tid, boxes, width, height, completed_by=report.reviewer_id,
            lead_time=float(rng.uniform(4.0, 20.0)) if signed else None,
        )  # fmt: skip
        report.submitted += 1
        if tid in doubles:  # a second person, from the truth: their own jitter and misses
            truth = [b for b in index.boxes(str(data.get("key")), str(data.get("camera"))) or []
                     if b.label in offered]  # fmt: skip
            other, _, _ = imperfect(truth, second_rng, jitter_px, miss_rate, width, height)
            queue.submit(tid, other, width, height, completed_by=second_id,
                         lead_time=float(second_rng.uniform(4.0, 20.0)))  # fmt: skip
            report.second += 1
    return report
