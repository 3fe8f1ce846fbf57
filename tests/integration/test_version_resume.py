"""Versioning reviewed frames resumes after a crash: run again, it ends in the state a
clean run would have reached — no frame twice, no version skipped or duplicated.

The crash tests kill the real process (SIGKILL, ``CVLOOP_CRASH_AT``) at every boundary of
both versions (dvc add / commit / push / tag, dataset then holdout) and after a push that
fails, run the step again, and compare with an uninterrupted run: the same tags on the
same data hashes, every frame once, a clean data repo, the remote holding every version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

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


def _prepare(tmp_path: Path) -> tuple[dict[str, str], ValidatedReviews]:
    """A data repo, a store with 12 reviewed drift frames, and the environment to use them."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    variables = {
        "CVLOOP_HOME": tmp_path / "home",
        "CVLOOP_STORAGE_URI": tmp_path / "store",
        "CVLOOP_DATA_REPO": repo,
        "CVLOOP_DVC_REMOTE": tmp_path / "remote",
    }
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
                "ts_ms": 1000 + i * 60_000,  # distinct captures, a minute apart
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
    return {k: str(v) for k, v in variables.items()}, validated


@pytest.fixture()
def env(tmp_path, monkeypatch):
    variables, validated = _prepare(tmp_path)
    for k, v in variables.items():
        monkeypatch.setenv(k, v)
    return DataRepo(Path(variables["CVLOOP_DATA_REPO"]), variables["CVLOOP_DVC_REMOTE"]), validated


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
    again = _run(validated)  # and once more: nothing changes, the same versions reported
    assert again == out
    assert len(read_manifest(repo.root / "datasets")) == 8
    assert repo.tags("dataset-v*") == ["dataset-v1"] and repo.tags("holdout-v*") == ["holdout-v1"]


# ---- the crash at every boundary -------------------------------------------------------
BOUNDARIES = ["dataset:planned"] + [f"{kind}:{step}" for kind in ("dataset", "holdout")
                                    for step in ("added", "committed", "pushed", "tagged")]  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]


def _end_state(repo: DataRepo) -> dict:
    """What an observer of the data repo sees: tags and the data each names, the frames of
    each split, whether the working tree is clean and the remote holds everything."""
    status = subprocess.run([str(ROOT / ".venv" / "bin" / "dvc"), "status", "-c", "-q"],
                            cwd=repo.root, capture_output=True, text=True)  # fmt: skip
    tags = repo.tags("dataset-v*") + repo.tags("holdout-v*")
    return {
        "tags": {t: repo.git("rev-parse", f"{t}^{{tree}}").strip() for t in tags},
        "train": sorted((e.sha256, e.split) for e in read_manifest(repo.root / "datasets")),
        "holdout": sorted(e.sha256 for e in read_manifest(repo.root / "holdout" / "data")),
        "dirty": repo.git("status", "--porcelain").strip(),
        "remote_complete": status.returncode == 0,
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    variables, validated = _prepare(tmp)
    subprocess.run([sys.executable, "-m", __name__, json.dumps(asdict(validated))], cwd=ROOT,
                   env=os.environ | variables, check=True, capture_output=True)  # fmt: skip
    state = _end_state(
        DataRepo(Path(variables["CVLOOP_DATA_REPO"]), variables["CVLOOP_DVC_REMOTE"])
    )
    assert set(state["tags"]) == {"dataset-v1", "holdout-v1"} and len(state["holdout"]) == 4
    return state


def _version_in_child(variables: dict, validated: ValidatedReviews, crash_at: str = ""):
    return subprocess.run(
        [sys.executable, "-m", __name__, json.dumps(asdict(validated))], cwd=ROOT,
        env=os.environ | variables | {"CVLOOP_CRASH_AT": crash_at},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_a_kill_at_each_boundary_and_a_re_run_end_as_an_uninterrupted_run(
    tmp_path, uninterrupted, boundary
):
    variables, validated = _prepare(tmp_path)
    killed = _version_in_child(variables, validated, crash_at=boundary)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: no cleanup ran
    assert f"killed at {boundary}" in killed.stderr
    repo = DataRepo(Path(variables["CVLOOP_DATA_REPO"]), variables["CVLOOP_DVC_REMOTE"])
    kind, step = boundary.split(":")
    if step != "tagged":  # a tag is only ever made once its data is on the remote
        assert f"{kind}-v1" not in repo.tags(f"{kind}-v*")
    again = _version_in_child(variables, validated)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _end_state(repo) == uninterrupted


def test_a_failed_push_leaves_no_tag_and_the_re_run_finishes_the_version(tmp_path, uninterrupted):
    variables, validated = _prepare(tmp_path)
    remote = Path(variables["CVLOOP_DVC_REMOTE"])
    remote.mkdir()
    (remote / "files").write_text("not a folder")  # DVC's object folder cannot be made
    failed = _version_in_child(variables, validated)
    assert failed.returncode == 1
    assert f"dvc push to {remote} failed" in failed.stderr
    assert "check CVLOOP_DVC_REMOTE" in failed.stderr
    repo = DataRepo(Path(variables["CVLOOP_DATA_REPO"]), str(remote))
    assert repo.tags("dataset-v*") == [] and repo.tags("holdout-v*") == []
    (remote / "files").unlink()  # the remote is fixed
    again = _version_in_child(variables, validated)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _end_state(repo) == uninterrupted


if __name__ == "__main__":  # the versioning step in a process of its own, for the crash tests
    from cvloop.core.errors import CvloopError

    try:
        out = _run(ValidatedReviews(**json.loads(sys.argv[1])))
    except CvloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(asdict(out)))
