"""Dataset versions with real git + DVC and a local-folder remote: incremental pushes leave a
remote from which a fresh clone pulls every version; a remote missing an earlier version
gets a full push; a re-run of a version is a no-op; a reused tag with other data fails."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cvloop.adapters.versioning import DataRepo, VersioningError

DVC = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "dvc")


def _files(root: Path, start: int, n: int) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (root / "images" / f"{i}.jpg").write_bytes(f"frame {i}".encode() * 50)


def _repo(tmp_path: Path) -> DataRepo:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    repo = DataRepo(root, str(tmp_path / "remote"))
    repo.ensure()
    return repo


def _version(repo: DataRepo, name: str):
    repo.add("datasets")
    return repo.commit_version(name, ["datasets.dvc"], name)


def _pull_clone(repo: DataRepo, tmp_path: Path, tag: str) -> Path:
    clone = tmp_path / f"clone-{tag}"
    subprocess.run(["git", "clone", "-q", str(repo.root), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", tag], cwd=clone, check=True)
    DataRepo(clone, repo.remote_url).ensure()
    subprocess.run([DVC, "pull", "-q"], cwd=clone, check=True, capture_output=True)
    return clone / "datasets" / "images"


def _spy_full_pushes(monkeypatch) -> list:
    calls: list = []
    full = DataRepo._push_all

    def spy(self, pointers):
        calls.append(list(pointers))
        return full(self, pointers)

    monkeypatch.setattr(DataRepo, "_push_all", spy)
    return calls


def test_incremental_pushes_keep_every_version_pullable(tmp_path, monkeypatch):
    full_pushes = _spy_full_pushes(monkeypatch)
    repo = _repo(tmp_path)
    _files(repo.root / "datasets", 0, 20)
    v1 = _version(repo, "dataset-v1")
    _files(repo.root / "datasets", 20, 3)
    v2 = _version(repo, "dataset-v2")
    assert full_pushes == [["datasets.dvc"]]  # v1 only: v2 pushed just its new objects
    assert v2.files == 23 and v1.files == 20 and v1.dvc_md5 != v2.dvc_md5
    status = subprocess.run([DVC, "status", "-c"], cwd=repo.root, capture_output=True, text=True)
    assert status.returncode == 0 and "new:" not in status.stdout and "missing" not in status.stdout
    pulled = _pull_clone(repo, tmp_path, "dataset-v2")
    assert sorted(p.name for p in pulled.iterdir()) == sorted(f"{i}.jpg" for i in range(23))
    assert (pulled / "21.jpg").read_bytes() == b"frame 21" * 50
    assert len(list(_pull_clone(repo, tmp_path, "dataset-v1").iterdir())) == 20


def test_a_remote_missing_the_previous_version_gets_a_full_push(tmp_path, monkeypatch):
    full_pushes = _spy_full_pushes(monkeypatch)
    repo = _repo(tmp_path)
    _files(repo.root / "datasets", 0, 10)
    _version(repo, "dataset-v1")
    shutil.rmtree(tmp_path / "remote")  # the remote lost everything (or v1 never got there)
    (tmp_path / "remote").mkdir()
    _files(repo.root / "datasets", 10, 2)
    _version(repo, "dataset-v2")
    assert len(full_pushes) == 2
    pulled = _pull_clone(repo, tmp_path, "dataset-v2")
    assert len(list(pulled.iterdir())) == 12


def test_re_running_a_version_is_a_no_op_and_tags_are_never_reused(tmp_path):
    repo = _repo(tmp_path)
    _files(repo.root / "datasets", 0, 5)
    first = _version(repo, "dataset-v1")
    again = _version(repo, "dataset-v1")
    assert again.git_rev == first.git_rev
    log = subprocess.run(["git", "log", "--oneline"], cwd=repo.root, capture_output=True, text=True)
    assert len(log.stdout.splitlines()) == 2  # dvc init + v1
    _files(repo.root / "datasets", 5, 1)
    repo.add("datasets")
    with pytest.raises(VersioningError, match=r"already exists .* with different data"):
        repo.commit_version("dataset-v1", ["datasets.dvc"], "again")
