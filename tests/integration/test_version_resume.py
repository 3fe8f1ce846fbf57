"""Versioning reviewed frames resumes after a crash: run again, it ends in the state a
clean run would have reached — no frame twice, no version skipped or duplicated."""

from __future__ import annotations

import json
import subprocess

import cv2
import numpy as np
import pytest

from cvloop.adapters.datasets import read_manifest
from cvloop.adapters.storage import LocalStorage
from cvloop.adapters.versioning import DataRepo
from cvloop.stages.dataset import ValidatedReviews, version_reviewed_data
from tests.conftest import context

CLASSES = ["crate", "barrel", "cone"]


def _jpeg(i: int) -> bytes:
    rng = np.random.default_rng(i)  # distinct pictures: perceptual hashes far apart
    img = cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (64, 64))
    return cv2.imencode(".jpg", img)[1].tobytes()


@pytest.fixture()
def env(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    for k, v in {
        "CVLOOP_HOME": tmp_path / "home",
        "CVLOOP_STORAGE_URI": tmp_path / "store",
        "CVLOOP_DATA_REPO": repo,
        "CVLOOP_DVC_REMOTE": tmp_path / "remote",
    }.items():
        monkeypatch.setenv(k, str(v))
    store = LocalStorage(tmp_path / "store")
    rows = []
    for i in range(12):
        key = f"frames/cam-02/2026-09-01/{1000 + i}.jpg"
        store.put_bytes(key, _jpeg(i))
        from cvloop.core.frames import content_hash

        rows.append(
            {
                "sha256": content_hash(_jpeg(i)),
                "key": key,
                "image_key": key,
                "camera": "cam-02",
                "ts_ms": 1000 + i,
                "why": ["uncertainty 0.50", "drift:camera cam-02"],
                "slice_tags": ["drift:camera cam-02"],
                "final": [{"label": "cone", "cx": 0.5, "cy": 0.5, "w": 0.2, "h": 0.2}],
                "predicted": [],
                "edits": {"kept": 0, "moved": 0, "relabelled": 0, "deleted": 0, "added": 1},
            }
        )
    store.put_text("runs/retrain/r1/reviewed.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    validated = ValidatedReviews(
        "runs/retrain/r1/reviewed.jsonl",
        [r["sha256"] for r in rows],
        "runs/retrain/r1/annotation-quarantine.json",
        {},
    )
    return DataRepo(repo, str(tmp_path / "remote")), validated


def _run(validated):
    from cvloop.config.params import HoldoutParams, VersionParams

    return version_reviewed_data(
        context(), validated, "dataset-v1", CLASSES, 1,
        HoldoutParams(add_per_retrain=4, max_frames=500, max_drift_share=0.5,
                      near_duplicate_hamming=4),
        VersionParams(val_share=0.2),
    )  # fmt: skip


def test_a_crash_before_the_holdout_tag_is_finished_by_the_next_run(env, monkeypatch):
    repo, validated = env
    real = DataRepo.commit_version

    def crash_on_holdout(self, name, pointers, message, files=()):
        if name.startswith("holdout"):
            raise RuntimeError("worker died")
        return real(self, name, pointers, message, files)

    monkeypatch.setattr(DataRepo, "commit_version", crash_on_holdout)
    with pytest.raises(RuntimeError, match="worker died"):
        _run(validated)
    assert repo.tags("holdout-v*") == []
    monkeypatch.setattr(DataRepo, "commit_version", real)
    out = _run(validated)  # the same call again, as a re-run of the flow does
    assert repo.tags("dataset-v*") == ["dataset-v1"] and repo.tags("holdout-v*") == ["holdout-v1"]
    assert out.holdout["name"] == "holdout-v1" and out.added["holdout"] == 4
    train = read_manifest(repo.root / "datasets")
    hold = read_manifest(repo.root / "holdout" / "data")
    assert len(train) == 8 and len(hold) == 4
    assert len({e.sha256 for e in train + hold}) == 12  # every frame once, nowhere twice
    again = _run(validated)  # and once more: nothing changes
    assert again.added == {"train": 0, "val": 0, "holdout": 0}
    assert again.already_present == 12
    assert repo.tags("dataset-v*") == ["dataset-v1"] and repo.tags("holdout-v*") == ["holdout-v1"]
