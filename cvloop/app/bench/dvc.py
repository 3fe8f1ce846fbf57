"""``cvloop bench dvc``: a new dataset version when 1 % of the frames are new.

Case ``dvc.new_version_plus_1pct.seconds``: ``dvc add`` + git commit + tag + push to the
DVC remote for version 2 of a 5,000-frame dataset (image + label per frame) that gained
1 % new frames, in a repo that holds version 1 — vs the same steps for the whole
5,050-frame dataset in a fresh repo (baseline: a full add; goal ratio <= 0.15). Both use
a local-folder remote. ``--quick``: 1,000 frames.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cvloop.app.bench import Case, timed


def _write(root: Path, start: int, n: int) -> None:
    for split in ("images/train", "labels/train"):
        (root / split).mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (root / "images/train" / f"{i:06d}.jpg").write_bytes(os.urandom(10_000))
        (root / "labels/train" / f"{i:06d}.txt").write_text(f"0 0.5 0.5 0.{i % 9 + 1} 0.2\n")


def _repo(path: Path, remote: Path):
    from cvloop.adapters.versioning import DataRepo

    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    repo = DataRepo(path, str(remote))
    repo.ensure()
    return repo


def _version(repo, name: str) -> None:
    repo.add("datasets")
    repo.commit_version(name, ["datasets.dvc"], name)


def run(quick: bool = False) -> Iterator[Case]:
    n = 1000 if quick else 5000
    extra = n // 100
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        inc = _repo(tmp / "incremental", tmp / "remote-inc")
        _write(inc.root / "datasets", 0, n)
        _version(inc, "dataset-v1")
        _write(inc.root / "datasets", n, extra)
        t_inc, _ = timed(lambda: _version(inc, "dataset-v2"))
        full = _repo(tmp / "full", tmp / "remote-full")
        _write(full.root / "datasets", 0, n + extra)
        t_full, _ = timed(lambda: _version(full, "dataset-v1"))
        yield Case(
            "dvc.new_version_plus_1pct.seconds",
            round(t_inc, 2),
            "s",
            f"full add+commit+tag+push of the same {n + extra}-frame dataset in a fresh repo",
            round(t_full, 2),
        )
