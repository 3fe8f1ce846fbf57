"""Dataset versions on disk: YOLO images + labels + ``data.yaml`` + a per-frame manifest.

Layout of a dataset folder (``datasets/`` for training, ``holdout/data/`` for the holdout)::

    data.yaml                 names + train/val folders (no absolute path: portable)
    images/<split>/<id>.jpg   id = the first 20 hex digits of the image's sha256 (.png, .bmp,
                              .webp for those: bytes kept as they came, named for what they are)
    labels/<split>/<id>.txt   YOLO: class cx cy w h (normalized)
    manifest.jsonl            one JSON object per frame (see :class:`FrameEntry`)
    retired.jsonl             the holdout only: frames that left it (the oldest drift frames,
                              rotated out; a refreshed holdout's), with ``retired_in``; they
                              stay in the versions that held them and never go to training
    VERSION                   e.g. "v2"

A frame's identity is the sha256 of its image bytes: the same frame is never stored twice,
and overlap between the holdout and training data is checked on it (and on a perceptual
hash, for near-duplicates).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from cvloop.core.errors import CvloopError
from cvloop.core.frames import FrameEntry, LabelBox, NewFrame, content_hash, dhash
from cvloop.core.schema import MARKER, ClassSchema, MigrationCounts, SchemaLog, migrate_label_text

MANIFEST = "manifest.jsonl"
IMAGE_SUFFIXES = (".jpg", ".png", ".bmp", ".webp")  # what a dataset folder stores


def image_suffix(data: bytes) -> str:
    """The file suffix of image ``data`` in a dataset folder, from its bytes: a team's PNG
    frames (or imported BMP / WebP) keep their bytes and a name that says what they are;
    anything else is a JPEG (``.jpg``)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"BM":
        return ".bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".jpg"


def image_file(root: Path, split: str, frame_id: str) -> Path:
    """The image of frame ``frame_id`` in ``root/images/<split>/`` (whichever suffix it was
    stored with; the .jpg path when there is none)."""
    folder = root / "images" / split
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{frame_id}{suffix}"
        if path.exists():
            return path
    return folder / f"{frame_id}.jpg"


def read_manifest(root: Path) -> list[FrameEntry]:
    path = root / MANIFEST
    if not path.exists():
        return []
    return [FrameEntry(**json.loads(line)) for line in path.read_text().splitlines() if line]


def write_data_yaml(
    root: Path, classes: list[str], splits: Iterable[str] = ("train", "val")
) -> Path:
    """``data.yaml`` without ``path:``, so Ultralytics resolves folders next to the file.

    An evaluation-only set (a single ``holdout`` split) points train/val/test at it, since
    Ultralytics requires those keys.
    """
    splits = list(splits)
    if splits == ["holdout"]:
        spec: dict[str, object] = {k: "images/holdout" for k in ("train", "val", "test")}
    else:
        spec = {s: f"images/{s}" for s in splits}
    spec["names"] = dict(enumerate(classes))
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def yolo_label_lines(boxes: list[LabelBox], classes: list[str]) -> str:
    lines = []
    for b in boxes:
        if b.label not in classes:
            raise CvloopError(
                f"label {b.label!r} is not in the class schema {classes}",
                fix="fix the label, or add the class to schema.classes in params.yaml",
            )
        if not all(math.isfinite(v) for v in (b.cx, b.cy, b.w, b.h)):  # validation's job;
            raise CvloopError(  # a label file must never hold one: Ultralytics drops it silently
                f"box {b} has a coordinate that is not a finite number",
                fix="validate the frames first (rule coordinates_finite quarantines it)",
            )
        lines.append(f"{classes.index(b.label)} {b.cx:.6f} {b.cy:.6f} {b.w:.6f} {b.h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def add_frames(
    root: Path,
    frames: Iterable[NewFrame],
    classes: list[str],
    version: str,
    label_policy_version: int,
) -> tuple[int, int]:
    """Add frames to the dataset folder at ``root`` (created if needed), merging with what is
    there: a frame already present (same content hash) is skipped. Returns (added, skipped).
    """
    from cvloop.adapters.detector import decode_jpeg

    root.mkdir(parents=True, exist_ok=True)
    entries = read_manifest(root)
    known = {e.sha256 for e in entries}
    added = skipped = 0
    new_entries = []
    for f in frames:
        sha = content_hash(f.image)
        if sha in known:
            skipped += 1
            continue
        fid = sha[:20]
        img_path = root / "images" / f.split / f"{fid}{image_suffix(f.image)}"
        lbl_path = root / "labels" / f.split / f"{fid}.txt"
        img_path.parent.mkdir(parents=True, exist_ok=True)
        lbl_path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(lbl_path, yolo_label_lines(f.boxes, classes).encode())
        _atomic_write(img_path, f.image)
        if f.dhash is not None:
            frame_dhash = f.dhash
        else:
            pixels = f.pixels if f.pixels is not None else decode_jpeg(f.image)
            frame_dhash = f"{dhash(pixels):016x}"
        new_entries.append(
            FrameEntry(
                id=fid,
                sha256=sha,
                split=f.split,
                source_key=f.source_key,
                camera=f.camera,
                ts_ms=f.ts_ms,
                dhash=frame_dhash,
                boxes=len(f.boxes),
                label_source=f.label_source,
                label_policy_version=label_policy_version,
                added_in=version,
                why_selected=list(f.why_selected),
                slice_tags=list(f.slice_tags),
                edits=dict(f.edits),
            )
        )
        known.add(sha)
        added += 1
    all_entries = entries + new_entries
    _atomic_write(
        root / MANIFEST, "".join(json.dumps(asdict(e)) + "\n" for e in all_entries).encode()
    )
    splits = sorted({e.split for e in all_entries}) or ["train", "val"]
    write_data_yaml(root, classes, splits)
    (root / "VERSION").write_text(version + "\n")
    return added, skipped


RETIRED = "retired.jsonl"


def read_retired(root: Path) -> list[FrameEntry]:
    """The frames that left the holdout at ``root`` (never to be trained on)."""
    path = root / RETIRED
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line:
            d = json.loads(line)
            d.pop("retired_in", None)
            out.append(FrameEntry(**d))
    return out


def add_retired(root: Path, entries: Iterable[FrameEntry], version: str) -> int:
    """Record ``entries`` as retired in ``version`` (each frame once); returns how many
    were new."""
    known = {e.sha256 for e in read_retired(root)}
    new = []
    for e in entries:
        if e.sha256 not in known:
            known.add(e.sha256)
            new.append(e)
    if new:
        text = (root / RETIRED).read_text() if (root / RETIRED).exists() else ""
        text += "".join(json.dumps({**asdict(e), "retired_in": version}) + "\n" for e in new)
        _atomic_write(root / RETIRED, text.encode())
    return len(new)


def retire_frames(root: Path, sha256s: Iterable[str], version: str) -> int:
    """Move frames out of the holdout folder at ``root``: recorded in ``retired.jsonl``
    first, then out of the manifest, then their files removed (a re-run after a crash at
    any point finishes the job). Returns the frames retired now."""
    wanted = set(sha256s)
    entries = read_manifest(root)
    gone = [e for e in entries if e.sha256 in wanted]
    if not gone:
        return 0
    add_retired(root, gone, version)
    kept = [e for e in entries if e.sha256 not in wanted]
    _atomic_write(root / MANIFEST, "".join(json.dumps(asdict(e)) + "\n" for e in kept).encode())
    for e in gone:
        image_file(root, e.split, e.id).unlink(missing_ok=True)
        (root / "labels" / e.split / f"{e.id}.txt").unlink(missing_ok=True)
    return len(gone)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def yolo_split_frames(data_yaml: Path, split: str = "val") -> list[tuple[Path, Path]]:
    """(image, label file) pairs of a split of a YOLO ``data.yaml`` (folder layout)."""
    import yaml

    spec = yaml.safe_load(Path(data_yaml).read_text())
    images = Path(data_yaml).parent / str(spec[split])
    labels = Path(str(images).replace(f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"))
    return [
        (img, labels / f"{img.stem}.txt")
        for img in sorted(images.iterdir())
        if img.suffix.lower() in (".jpg", ".jpeg", ".png")
    ]


def read_yolo_labels(path: Path, classes: Sequence[str]) -> list[LabelBox]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            c, cx, cy, w, h = line.split()[:5]
            out.append(LabelBox(classes[int(c)], float(cx), float(cy), float(w), float(h)))
    return out


def folder_schema(root) -> int:
    """The schema version a dataset folder's labels follow (its ``SCHEMA`` marker; folders
    made before schemas were versioned follow version 1)."""
    from pathlib import Path

    marker = Path(root) / MARKER
    if not marker.exists():
        return 1
    text = marker.read_text().strip()
    try:
        return int(text.rsplit("-v", 1)[1])
    except (IndexError, ValueError):
        raise CvloopError(
            f"{marker} says {text!r}, not schema-v<n>",
            fix="restore the folder from its DVC version (`dvc checkout`)",
        ) from None


def mark_folder(root, schema: ClassSchema) -> None:
    from pathlib import Path

    (Path(root) / MARKER).write_text(schema.tag + "\n")


@dataclass
class FolderMigration:
    folder: str
    from_version: int
    to_version: int
    frames: int = 0
    labels_rewritten: int = 0
    counts: MigrationCounts = field(default_factory=MigrationCounts)
    already: bool = False

    def as_dict(self) -> dict:
        d = asdict(self)
        d["counts"] = asdict(self.counts)
        return d


def migrate_folder(root, log: SchemaLog, version_name: str) -> FolderMigration:
    """Bring a dataset folder's labels (``labels/<split>/*.txt``), ``data.yaml`` and manifest
    to the log's current schema; resumable after a crash, a no-op when already there.

    The new labels are written beside the old ones (``labels.schema-v<n>``) and swapped in
    by two renames, so a crash leaves either the old labels or the new ones, never a mix;
    the ``SCHEMA`` marker is written last.
    """
    import json
    import os
    import shutil
    from pathlib import Path

    root = Path(root)
    target = log.current
    have = folder_schema(root)
    result = FolderMigration(str(root), have, target.version)
    if have == target.version:
        result.already = True
        return result
    if have > target.version:
        raise CvloopError(
            f"{root} follows schema-v{have}, newer than the schema log's current "
            f"schema-v{target.version}",
            fix="the data repository's schema.yaml is behind its data: `git pull` it",
        )
    old = log.get(have)
    mapping = log.mapping(have)
    labels, staging = root / "labels", root / f"labels.{target.tag}"
    previous = root / f"labels.{old.tag}"
    entries = read_manifest(root)
    if previous.exists():  # a crash after the first rename: finish the swap
        if staging.exists():
            os.replace(staging, labels)
    else:
        if staging.exists():
            shutil.rmtree(staging)
        for e in entries:
            src = labels / e.split / f"{e.id}.txt"
            text = src.read_text() if src.exists() else ""
            new_text, counts = migrate_label_text(text, mapping, old, target, str(src))
            dst = staging / e.split / f"{e.id}.txt"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(new_text)
            result.counts.add(counts)
            result.labels_rewritten += int(new_text != text)
        staging.mkdir(parents=True, exist_ok=True)
        os.replace(labels, previous)
        os.replace(staging, labels)
    # manifest box counts, data.yaml, VERSION, then the marker
    for e in entries:
        f = labels / e.split / f"{e.id}.txt"
        e.boxes = sum(1 for line in f.read_text().splitlines() if line.strip()) if f.exists() else 0
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text("".join(json.dumps(asdict(e)) + "\n" for e in entries))
    os.replace(tmp, root / MANIFEST)
    write_data_yaml(root, list(target.classes), sorted({e.split for e in entries}) or ["train"])
    (root / "VERSION").write_text(version_name + "\n")
    mark_folder(root, target)
    shutil.rmtree(previous, ignore_errors=True)
    result.frames = len(entries)
    return result
