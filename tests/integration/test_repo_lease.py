"""One writer of the data repository at a time (real git, DVC and processes): the retrain's
versioning, a schema change, the holdout refresh and a bootstrap / adoption each hold it
from their first read of the versions to their last tag; a writer that waits too long is
told who holds it; a killed holder frees it at once; two versions racing both land."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from cvloop.adapters.versioning import DataRepo, VersioningError
from tests.conftest import REPO

_HOLD = textwrap.dedent(
    """
    import sys
    from cvloop.adapters.versioning import DataRepo
    repo = DataRepo(sys.argv[1], sys.argv[2])
    with repo.writing("the retrain's versioning (flow run 7f3a)"):
        print("held", flush=True)
        sys.stdin.readline()  # released when the test says so (or killed)
        open(sys.argv[3], "w").write("released")
    """
)


def _repo(tmp_path: Path, **kw) -> DataRepo:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    repo = DataRepo(root, str(tmp_path / "remote"), **kw)
    repo.ensure()
    return repo


def _holder(repo: DataRepo, tmp_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(repo.root), repo.remote_url, str(tmp_path / "flag")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_told_who_holds_the_repository_and_a_killed_holder_frees_it(
    tmp_path,
):
    repo = _repo(tmp_path)
    holder = _holder(repo, tmp_path)
    try:
        with pytest.raises(VersioningError) as info, repo.writing("a schema change", 0.5):
            pass
        msg = str(info.value)
        assert "a schema change could not write the data repository" in msg
        assert "the retrain's versioning (flow run 7f3a)" in msg and f"pid {holder.pid}" in msg
        assert info.value.transient and "frees the repository at once" in info.value.fix
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # an OOM kill in the middle of a version
        holder.wait()
    with repo.writing("a schema change", 5):  # the kernel freed the lock with the process
        pass


def test_a_waiting_writer_goes_on_when_the_holder_finishes(tmp_path):
    repo = _repo(tmp_path)
    holder = _holder(repo, tmp_path)
    holder.stdin.write("go\n")
    holder.stdin.flush()
    with repo.writing("the holdout refresh", 60):
        assert (tmp_path / "flag").read_text() == "released"  # it had finished first
    assert holder.wait(timeout=60) == 0


def test_a_writer_that_calls_another_in_the_same_process_re_enters(tmp_path):
    repo = _repo(tmp_path, lease_wait_s=0.5)
    with repo.writing("outer"), repo.writing("inner"):
        pass
    holder = _holder(repo, tmp_path)  # released by both: another process gets it
    holder.stdin.write("go\n")
    holder.stdin.flush()
    assert holder.wait(timeout=60) == 0


@pytest.mark.parametrize(
    "stage",
    [
        "cvloop.stages.dataset:version_reviewed_data",
        "cvloop.stages.schema:migrate_and_version",
        "cvloop.stages.holdout:version_refreshed_holdout",
        "cvloop.stages.data:version_data",
    ],
)
def test_every_writer_of_versions_holds_the_repository(tmp_path, stage):
    """Each stage that writes versions waits for the holder and is refused with its name,
    before it reads or writes anything (its arguments are never looked at)."""
    import importlib

    module, name = stage.split(":")
    fn = getattr(importlib.import_module(module), name)
    repo = _repo(tmp_path, lease_wait_s=0.3)
    holder = _holder(repo, tmp_path)
    try:
        with pytest.raises(VersioningError, match="the retrain's versioning"):
            fn(SimpleNamespace(data_repo=repo), *([None] * 6))
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()


_NEXT_VERSION = textwrap.dedent(
    """
    import sys, time
    from cvloop.adapters.versioning import DataRepo, next_version
    repo = DataRepo(sys.argv[1], sys.argv[2])
    with repo.writing(f"writer {sys.argv[3]}"):
        name = f"dataset-v{next_version(repo, 'dataset')}"
        time.sleep(1.0)  # the other writer starts meanwhile (a window a real run has too)
        (repo.root / "datasets" / "images" / f"{sys.argv[3]}.jpg").write_bytes(b"x" * 300)
        repo.add("datasets")
        rec = repo.commit_version(name, ["datasets.dvc"], name)
    print(rec.name, rec.files)
    """
)


def test_two_writers_at_once_take_two_version_names(tmp_path):
    """Two writers started together (a retrain's versioning and a schema change on two
    workers) each name the next version and write it. Without the lease both read
    ``dataset-v2`` and both report it, while the tag holds only the first one's data (seen
    with the lock taken out); with it the second waits, and reads ``dataset-v3``."""
    repo = _repo(tmp_path)
    images = repo.root / "datasets" / "images"
    images.mkdir(parents=True)
    for i in range(5):
        (images / f"{i}.jpg").write_bytes(f"frame {i}".encode() * 40)
    repo.add("datasets")
    repo.commit_version("dataset-v1", ["datasets.dvc"], "dataset-v1")
    argv = [sys.executable, "-c", _NEXT_VERSION, str(repo.root), repo.remote_url]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "cwd": REPO}
    procs = [subprocess.Popen([*argv, who], **pipes) for who in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    made = sorted(tuple(o[0].split()) for o in outs)
    assert made == [("dataset-v2", "6"), ("dataset-v3", "7")]
    assert repo.tags("dataset-v*") == ["dataset-v1", "dataset-v2", "dataset-v3"]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo.root, text=True,
                            capture_output=True, check=True).stdout  # fmt: skip
    assert "datasets.dvc" not in status
