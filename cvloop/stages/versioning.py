"""One procedure for versioning reviewed frames, whatever they become: the retrain's new
dataset (and holdout) version, or the quarterly refresh's new holdout.

Both read the reviewed frames once (:class:`ReviewedFrames`: rows and perceptual hashes,
one frame decoded at a time; the image bytes are fetched again when a frame is written, so
memory holds one frame, not the run's), refuse to write labels of a schema the data
repository no longer follows (:func:`open_repo`), refuse any leakage before anything is written (:func:`refuse_leakage`),
build each frame's record the same way (:meth:`ReviewedFrames.new_frame`), and commit a
folder as a version (:func:`commit_folder`: ``dvc add`` -> commit -> push -> tag).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cvloop.core.errors import CvloopError
from cvloop.core.frames import FrameEntry, LabelBox, NewFrame, check_overlap, dhash

if TYPE_CHECKING:
    from cvloop.adapters.storage import Storage
    from cvloop.adapters.versioning import DataRepo, VersionRecord
    from cvloop.context import Context
    from cvloop.core.schema import ClassSchema


def read_reviewed(store: Storage, key: str) -> list[dict]:
    """The rows of a run's ``reviewed.jsonl`` (one per submitted annotation)."""
    return [json.loads(line) for line in store.get_text(key).splitlines() if line]


@dataclass
class ReviewedFrames:
    """The valid reviewed frames of a run: their rows and perceptual hashes.

    Neither pixels nor image bytes are kept: a run's frames decoded at once are gigabytes at
    camera resolution (600 frames of 1920x1080 are 3.7 GB of pixels), so each frame is
    decoded for its hash and dropped, and its bytes are read again when it is written
    (:meth:`new_frame`, one at a time, into :func:`~cvloop.adapters.datasets.add_frames`).
    """

    store: Storage
    rows: dict[str, dict]  # sha256 -> reviewed row, in the validated order
    hashes: dict[str, str] = field(default_factory=dict)  # sha256 -> dHash (hex)

    @classmethod
    def read(
        cls, store: Storage, reviewed_key: str, valid: Sequence[str], limit: int | None = None
    ) -> ReviewedFrames:
        """The ``valid`` frames (content hashes) of ``reviewed_key``, at most ``limit``."""
        from cvloop.adapters.detector import decode_jpeg

        by_sha = {r["sha256"]: r for r in read_reviewed(store, reviewed_key)}
        chosen = [s for s in valid if s in by_sha][:limit]
        rows = {s: by_sha[s] for s in chosen}
        hashes = {s: f"{dhash(decode_jpeg(store.get_bytes(r['image_key']))):016x}"
                  for s, r in rows.items()}  # fmt: skip
        return cls(store, rows, hashes)

    def dhash(self, sha: str) -> str:
        return self.hashes[sha]

    def entries(self, shas: Iterable[str]) -> list[FrameEntry]:
        """Just enough of a manifest entry per frame for the leakage check."""
        return [
            FrameEntry(
                id=s[:20],
                sha256=s,
                split="",
                source_key="",
                camera=str(self.rows[s].get("camera") or ""),
                ts_ms=int(self.rows[s].get("ts_ms") or 0),
                dhash=self.dhash(s),
                boxes=0,
                label_source="",
                label_policy_version=0,
                added_in="",
            )
            for s in shas
        ]

    def new_frame(self, sha: str, split: str) -> NewFrame:
        """The frame as a dataset version records it: reviewed boxes and provenance (its
        bytes read from the store now; they must still be the reviewed frame's)."""
        from cvloop.core.frames import content_hash

        r = self.rows[sha]
        image = self.store.get_bytes(r["image_key"])
        if content_hash(image) != sha:
            raise CvloopError(
                f"frame {r['image_key']} changed in the store while it was versioned (its "
                f"sha256 is no longer the reviewed frame's {sha[:12]})",
                fix="frames in the store are never rewritten: find what wrote it, restore "
                "the frame, then run the step again (no version was committed; the re-run "
                "replays the same plan)",
            )
        return NewFrame(
            image=image,
            boxes=[LabelBox(**b) for b in r["final"]],
            source_key=r["key"],
            camera=r["camera"],
            ts_ms=int(r["ts_ms"]),
            split=split,
            label_source="reviewed",
            why_selected=r["why"],
            slice_tags=r.get("slice_tags") or [],
            edits=r.get("edits") or {},
            dhash=self.hashes[sha],
        )


def open_repo(
    ctx: Context, classes: Sequence[str], pointers: Sequence[str]
) -> tuple[DataRepo, ClassSchema]:
    """The data repository with ``pointers`` checked out, and its current schema; refused
    when the frames were labeled with another class list (the schema changed meanwhile)."""
    from cvloop.stages.schema import current_schema

    repo = ctx.data_repo
    repo.ensure()
    repo.checkout(list(pointers))
    schema = current_schema(ctx)
    if list(classes) != list(schema.classes):
        raise CvloopError(
            f"the classes {list(classes)} are not the current schema's ({schema.tag}: "
            f"{list(schema.classes)})",
            fix="the schema changed after this run read it (while the frames were labeled): "
            "run the step again",
        )
    return repo, schema


def refuse_leakage(
    holdout: Sequence[FrameEntry],
    training: Sequence[FrameEntry],
    bits: int,
    fix: str,
    what: str = "holdout frames",
    event_gap_ms: int = 0,
    new: set[str] | None = None,
) -> dict[str, int]:
    """Raise, naming the frames, when ``holdout`` shares a frame (or a near-duplicate within
    ``bits``, or a capture event) with ``training``; nothing has been written yet. Returns
    the leakage report's counts (all 0)."""
    overlap = check_overlap(list(holdout), list(training), bits, event_gap_ms, new)
    if not overlap.clean:
        first = overlap.exact or [n[0] for n in overlap.near] or [e[0] for e in overlap.events]
        raise CvloopError(
            f"holdout leakage: {len(overlap.exact)} {what} are in the training data, "
            f"{len(overlap.near)} nearly duplicate a training frame and "
            f"{len(overlap.events)} share a capture event with one (first: {first[:5]})",
            fix=fix,
        )
    return overlap.counts()


def commit_folder(
    repo: DataRepo,
    folder: str,
    pointer: str,
    version: str,
    message: str,
    files: Sequence[str] = (),
) -> VersionRecord:
    """``dvc add`` the folder, commit its pointer (and ``files``), push, tag ``version``."""
    repo.add(folder)
    return repo.commit_version(version, [pointer], message, tuple(files))
