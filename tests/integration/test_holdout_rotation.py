"""The holdout's drift part rotates (runbook step 9): five retrains in a row each add their
50 drift frames to the holdout and keep it within 200-500 frames; the oldest drift frames
are retired (kept in the versions that held them and in ``retired.jsonl``), never trained
on, even when the same frames are collected and reviewed again. Real git + DVC, with a
local-folder remote; the production defaults of params.yaml (holdout 200-500, +50 per
retrain, at most half the new drift frames)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np

from cvloop.adapters.datasets import read_manifest, read_retired
from cvloop.adapters.storage import LocalStorage
from cvloop.core.frames import content_hash
from cvloop.stages.dataset import ValidatedReviews, version_reviewed_data
from tests.conftest import REPO, context

CLASSES = ["crate", "barrel", "cone"]
DRIFT = "drift:camera cam-02"


def _jpeg(i: int) -> bytes:
    rng = np.random.default_rng(10_000 + i)  # distinct pictures: perceptual hashes far apart
    img = cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (64, 64))
    return cv2.imencode(".jpg", img)[1].tobytes()


MADE: dict[str, int] = {}  # sha256 -> picture number


def _reviewed(store: LocalStorage, run: str, ids, tags: list[str]) -> ValidatedReviews:
    """A review that ended: the frames ``ids`` reviewed and valid, tagged ``tags``."""
    rows = []
    for i in ids:
        key = f"frames/cam-02/2026-09-01/{1_756_684_800_000 + i * 60_000}.jpg"
        store.put_bytes(key, _jpeg(i))
        MADE[content_hash(_jpeg(i))] = i
        rows.append({"sha256": content_hash(_jpeg(i)), "key": key, "image_key": key,
                     "camera": "cam-02", "ts_ms": 1_756_684_800_000 + i * 60_000,
                     "why": list(tags) or ["uncertainty 0.50"], "slice_tags": list(tags),
                     "final": [{"label": "cone", "cx": 0.5, "cy": 0.5, "w": 0.2, "h": 0.2}],
                     "predicted": [], "edits": {"kept": 1}})  # fmt: skip
    key = f"runs/retrain/{run}/reviewed.jsonl"
    store.put_text(key, "".join(json.dumps(r) + "\n" for r in rows))
    return ValidatedReviews(key, [r["sha256"] for r in rows],
                            f"runs/retrain/{run}/annotation-quarantine.json", {})  # fmt: skip


def _version(validated: ValidatedReviews, name: str):
    from cvloop.config.params import VersionParams, load_params

    hp = load_params(REPO / "params.yaml").holdout  # the production defaults
    assert (hp.min_frames, hp.max_frames, hp.add_per_retrain) == (200, 500, 50)
    return version_reviewed_data(context(), validated, name, CLASSES, 1, hp, VersionParams())


def _first_holdout(holdout_dir: Path) -> None:
    """holdout-v1: a clean part of 400 frames and 20 drift frames (420 in all)."""
    from cvloop.adapters.datasets import add_frames, mark_folder
    from cvloop.adapters.versioning import HOLDOUT_DIR, HOLDOUT_POINTER
    from cvloop.core.frames import LabelBox, NewFrame
    from cvloop.stages.versioning import commit_folder, open_repo

    repo, schema = open_repo(context(), CLASSES, [HOLDOUT_POINTER])

    def frame(i: int, tags: list[str]) -> NewFrame:
        MADE[content_hash(_jpeg(i))] = i
        return NewFrame(image=_jpeg(i), boxes=[LabelBox("cone", 0.5, 0.5, 0.2, 0.2)],
                        source_key=f"frames/cam-01/2026-08-01/{i}.jpg", camera="cam-01",
                        ts_ms=1_754_000_000_000 + i, split="holdout", label_source="reviewed",
                        slice_tags=tags)  # fmt: skip

    frames = [frame(i, []) for i in range(400)] + [frame(i, [DRIFT]) for i in range(400, 420)]
    add_frames(holdout_dir, frames, CLASSES, "holdout-v1", 1)
    mark_folder(holdout_dir, schema)
    commit_folder(repo, HOLDOUT_DIR, HOLDOUT_POINTER, "holdout-v1", "holdout-v1: the start")


def test_five_retrains_each_add_50_drift_frames_and_the_holdout_stays_within_200_500(
    tmp_path, monkeypatch
):
    from cvloop.adapters.versioning import DataRepo

    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo_dir, check=True)
    for k, v in {"CVLOOP_HOME": tmp_path / "home", "CVLOOP_STORAGE_URI": tmp_path / "store",
                 "CVLOOP_DATA_REPO": repo_dir, "CVLOOP_DVC_REMOTE": tmp_path / "remote",
                 "CVLOOP_PARAMS": REPO / "params.yaml"}.items():  # fmt: skip
        monkeypatch.setenv(k, str(v))
    store = LocalStorage(tmp_path / "store")
    holdout_dir = repo_dir / "holdout" / "data"
    _first_holdout(holdout_dir)
    assert len(read_manifest(holdout_dir)) == 420

    sizes, added, retired_now = [], [], []
    for k in range(5):  # five retrains, 100 reviewed drift frames each
        ids = range(1000 + k * 100, 1100 + k * 100)
        out = _version(_reviewed(store, f"r{k + 1}", ids, [DRIFT]), f"dataset-v{k + 1}")
        hold = read_manifest(holdout_dir)
        sizes.append(len(hold))
        added.append(out.added["holdout"])
        retired_now.append(out.added["retired"])
        assert out.holdout["name"] == f"holdout-v{k + 2}"
        assert 200 <= len(hold) <= 500
        # the clean part is never rotated out: only drift frames leave
        assert sum(not any(t.startswith("drift:") for t in e.slice_tags) for e in hold) == 400
    assert added == [50, 50, 50, 50, 50]
    assert sizes == [470, 500, 500, 500, 500]
    assert retired_now == [0, 20, 50, 50, 50]
    retired = read_retired(holdout_dir)
    assert len({e.sha256 for e in retired}) == len(retired) == 170
    # the oldest drift frames went first: holdout-v1's 20, then holdout-v2's 50, ...
    assert [e.added_in for e in retired[:20]] == ["holdout-v1"] * 20
    assert {e.added_in for e in retired[20:70]} == {"holdout-v2"}
    # their files left the folder; no frame is ever in training and in a holdout
    names = {p.stem for p in (holdout_dir / "images" / "holdout").iterdir()}
    assert len(names) == 500 and not names & {e.id for e in retired}
    held = {e.sha256 for e in read_manifest(holdout_dir)} | {e.sha256 for e in retired}
    assert not held & {e.sha256 for e in read_manifest(repo_dir / "datasets")}
    # retired frames collected and reviewed again (within 30 days): recognised, neither
    # trained on nor added to the holdout again
    again = [MADE[e.sha256] for e in retired[:40]]
    out = _version(_reviewed(store, "r6", again, [DRIFT]), "dataset-v6")
    assert out.already_present == 40 and out.added["train"] + out.added["val"] == 0
    assert out.added["holdout"] == 0 and out.holdout is None
    assert not held & {e.sha256 for e in read_manifest(repo_dir / "datasets")}
    repo = DataRepo(repo_dir, str(tmp_path / "remote"))
    assert repo.tags("holdout-v*") == [f"holdout-v{i}" for i in range(1, 7)]
    assert repo.git("status", "--porcelain").strip() == ""
