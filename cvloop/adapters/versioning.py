"""Dataset versions with DVC + git: ``dvc add`` -> commit the pointer -> push -> tag.

The data repository is a git repository with DVC (by default this checkout, whose top
level holds ``datasets.dvc``; ``CVLOOP_DATA_REPO`` points elsewhere, as the tests do).
Its DVC remote comes from ``CVLOOP_DVC_REMOTE`` and is written to ``.dvc/config.local``
(never committed: it is this machine's setting).

Commits touch only the pointer files cvloop writes (``git commit -- <paths>``), so a
user's other staged work is never swept into a dataset commit. A tag is made only after
its data is on the remote, so a tag always names a version that can be pulled, and a kill
or a failed push at any step leaves a state the same call finishes (crash points
``<prefix>:added`` / ``committed`` / ``pushed`` / ``tagged``, e.g. ``dataset:pushed``:
``cvloop/core/faults.py``).

**One writer at a time.** The retrain's versioning, a schema change, the quarterly holdout
refresh and the adoption all write the same working tree, index and tags; each holds
:meth:`DataRepo.writing` (an exclusive ``flock`` on ``.git/cvloop-writer.lock``) from its
first read of the versions to its last tag, so two of them never pick the same version
name or race on git's index. The kernel frees the lock when its process dies, so a killed
writer never blocks the next one; a writer that waits too long is told who holds it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import io
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from cvloop.core.errors import CvloopError
from cvloop.core.faults import crash_point

REMOTE_NAME = "cvloop"
WRITER_LOCK = "cvloop-writer.lock"  # in .git: never tracked, one per clone

# the writers of this process: a nested `writing` (a stage that calls another) re-enters,
# another thread waits like another process would
_IN_PROCESS: dict[str, threading.RLock] = {}
_HELD: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth)
_IN_PROCESS_MU = threading.Lock()


class VersioningError(CvloopError):
    """git or DVC refused an operation."""


@dataclass(frozen=True)
class VersionRecord:
    """A committed, tagged, pushed data version."""

    name: str  # e.g. dataset-v2
    git_rev: str
    dvc_md5: str
    pointer: str  # e.g. datasets.dvc
    files: int
    size: int


class DataRepo:
    """A git + DVC repository that versions cvloop's data."""

    def __init__(
        self,
        root: Path,
        remote_url: str,
        s3_endpoint: str | None = None,
        *,
        lease_wait_s: float = 600.0,
    ) -> None:
        self.root = Path(root).resolve()
        self.remote_url = remote_url
        self.s3_endpoint = s3_endpoint
        self.lease_wait_s = lease_wait_s  # how long a writer waits for another (writing())
        self._identity: bool | None = None

    # ---- git ----------------------------------------------------------------------------
    def git(self, *args: str, check: bool = True) -> str:
        ident = []
        if self._identity is None:
            self._identity = self._has_identity()
        if not self._identity:
            ident = ["-c", "user.name=cvloop", "-c", "user.email=cvloop@localhost"]
        proc = subprocess.run(["git", *ident, *args], cwd=self.root, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise VersioningError(
                f"git {' '.join(args)} failed in {self.root}: "
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc.stdout.strip()

    def _has_identity(self) -> bool:
        proc = subprocess.run(
            ["git", "config", "user.email"], cwd=self.root, capture_output=True, text=True
        )
        return bool(proc.stdout.strip())

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def tags(self, pattern: str) -> list[str]:
        out = self.git("tag", "--list", pattern)
        return sorted((t for t in out.splitlines() if t), key=_version_key)

    def tag_message(self, tag: str) -> str | None:
        """The message of an annotated tag (None: no such tag)."""
        if not self.git("rev-parse", "-q", "--verify", f"refs/tags/{tag}", check=False):
            return None
        return self.git("tag", "-l", "--format=%(contents)", tag).strip()

    def tag_at_head(self, name: str, message: str) -> str:
        """Tag HEAD ``name`` (annotated); idempotent when the tag is already there."""
        rev = self.head()
        existing = self.git(
            "rev-parse", "-q", "--verify", f"refs/tags/{name}^{{commit}}", check=False
        )
        if existing:
            return existing
        self.git("tag", "-a", name, "-m", message, rev)
        return rev

    # ---- one writer at a time ------------------------------------------------------------
    @contextlib.contextmanager
    def writing(
        self, what: str, wait_s: float | None = None, poll_s: float = 0.25
    ) -> Iterator[None]:
        """Hold the data repository for ``what`` (a flow and its run, shown to the writers
        that wait): the working tree, the index, the version names and the tags are this
        writer's until the block ends. Waits up to ``wait_s`` (default ``lease_wait_s``) for
        the holder, then raises :class:`VersioningError` naming it (transient: a task
        retries)."""
        wait_s = self.lease_wait_s if wait_s is None else wait_s
        git_dir = self.root / ".git"
        if not git_dir.is_dir():
            raise VersioningError(
                f"data repository {self.root} is not a git repository",
                fix=f"git init {self.root}, or set CVLOOP_DATA_REPO",
            )
        path = str(git_dir / WRITER_LOCK)
        with _IN_PROCESS_MU:
            local = _IN_PROCESS.setdefault(path, threading.RLock())
        deadline = time.monotonic() + wait_s
        if not local.acquire(timeout=max(0.0, wait_s)):
            raise self._busy(path, what, wait_s)
        try:
            fd, depth = _HELD.get(path, (None, 0))
            if fd is None:
                fd = self._lock(path, what, deadline, wait_s, poll_s)
            _HELD[path] = (fd, depth + 1)
            try:
                yield
            finally:
                fd, depth = _HELD[path]
                if depth == 1:
                    del _HELD[path]
                    os.close(fd)  # frees the flock
                else:
                    _HELD[path] = (fd, depth - 1)
        finally:
            local.release()

    def _lock(self, path: str, what: str, deadline: float, wait_s: float, poll_s: float) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise self._busy(path, what, wait_s) from None
                time.sleep(poll_s)
        holder = {"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                  "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        return fd

    def _busy(self, path: str, what: str, wait_s: float) -> VersioningError:
        try:
            h = json.loads(Path(path).read_text() or "{}")
            holder = (f"{h.get('what', '?')} (pid {h.get('pid', '?')} on {h.get('host', '?')}, "
                      f"since {h.get('since', '?')})")  # fmt: skip
        except (OSError, ValueError):
            holder = "another writer"
        return VersioningError(
            f"{what} could not write the data repository {self.root}: {holder} has been "
            f"writing it for longer than this writer waits ({wait_s:g} s)",
            fix="let that writer finish (its flow run in the Prefect UI), then run this "
            "again; a writer that died frees the repository at once",
            transient=True,
        )

    # ---- dvc ----------------------------------------------------------------------------
    def ensure(self) -> None:
        """Check the repo is a git repo, ``dvc init`` it if needed, configure the remote."""
        if not (self.root / ".git").exists():
            raise VersioningError(
                f"data repository {self.root} is not a git repository",
                fix=f"git init {self.root}, or set CVLOOP_DATA_REPO",
            )
        from dvc.repo import Repo

        if not (self.root / ".dvc").exists():
            with _quiet():
                Repo.init(str(self.root))
            self.git("add", ".dvc/config", ".dvc/.gitignore", ".dvcignore")
            self.git(
                "commit",
                "-m",
                "dvc init (cvloop)",
                "--",
                ".dvc/config",
                ".dvc/.gitignore",
                ".dvcignore",
            )
        if self.remote_url.startswith(("/", ".")) or "://" not in self.remote_url:
            Path(self.remote_url).mkdir(parents=True, exist_ok=True)
        with Repo(str(self.root)) as repo, repo.config.edit("local") as conf:
            remote = {"url": self.remote_url}
            if self.remote_url.startswith("s3://") and self.s3_endpoint:
                remote["endpointurl"] = self.s3_endpoint
            conf.setdefault("remote", {})[REMOTE_NAME] = remote
            conf.setdefault("core", {})["remote"] = REMOTE_NAME
            conf["core"]["analytics"] = False
            conf["core"]["autostage"] = False

    def add(self, rel: str) -> str:
        """``dvc add`` a folder; returns the DVC md5 of the folder."""
        from dvc.repo import Repo

        try:
            with Repo(str(self.root)) as repo, _quiet():
                repo.add(str(self.root / rel), relink=False)
        except Exception as exc:
            raise VersioningError(f"dvc add {rel} failed in {self.root}: {exc}") from None
        return self.pointer_info(f"{rel}.dvc")["md5"]

    def pointer_info(self, pointer: str) -> dict:
        path = self.root / pointer
        if not path.exists():
            raise VersioningError(
                f"{pointer} does not exist in {self.root}",
                fix="run `cvloop bootstrap` to create the first version",
            )
        outs = yaml.safe_load(path.read_text())["outs"][0]
        return {
            "md5": outs["md5"],
            "files": int(outs.get("nfiles", 0)),
            "size": int(outs.get("size", 0)),
            "path": outs["path"],
        }

    def checkout(self, pointers: list[str]) -> None:
        """Bring the data of committed pointers into the workspace where it is missing (a
        fresh clone of the data repo): ``dvc pull`` from the cache or the remote."""
        from dvc.repo import Repo

        missing = [
            p
            for p in pointers
            if (self.root / p).exists()
            and not (self.root / Path(p).parent / self.pointer_info(p)["path"]).exists()
        ]
        if not missing:
            return
        try:
            with Repo(str(self.root)) as repo:
                repo.pull(targets=[str(self.root / p) for p in missing], remote=REMOTE_NAME)
        except Exception as exc:
            raise VersioningError(
                f"dvc pull of {', '.join(missing)} from {self.remote_url} failed: {exc}",
                fix="check CVLOOP_DVC_REMOTE and its credentials",
            ) from None

    def push(self, pointers: list[str], since: str | None = None) -> None:
        """Push the pointers' data to the DVC remote.

        With ``since`` (an earlier version's tag) each folder is pushed incrementally: only
        the objects its previous version did not have, then the new ``.dir`` object, through
        DVC's own transfer. That is only done when the previous ``.dir`` object is on the
        remote (DVC uploads a ``.dir`` after its contents, so its presence proves a complete
        push); otherwise, and on any error, this is a full ``dvc push``.
        """
        if since:
            try:
                if all(self._push_new_objects(p, since) for p in pointers):
                    return
            except Exception:  # any doubt: the full push below checks everything
                pass
        self._push_all(pointers)

    def _push_new_objects(self, pointer: str, since: str) -> bool:
        from dvc.repo import Repo
        from dvc_data.hashfile.hash_info import HashInfo
        from dvc_data.hashfile.transfer import transfer
        from dvc_data.hashfile.tree import Tree

        old_text = self.git("show", f"{since}:{pointer}", check=False)
        if not old_text:
            return False
        old_md5 = yaml.safe_load(old_text)["outs"][0]["md5"]
        new_md5 = self.pointer_info(pointer)["md5"]
        if not (old_md5.endswith(".dir") and new_md5.endswith(".dir")):
            return False
        with Repo(str(self.root)) as repo:
            src = repo.cache.local
            dest = repo.cloud.get_remote_odb(REMOTE_NAME)
            if not dest.exists(old_md5):
                return False
            if dest.exists(new_md5):
                return True
            old = {h.value for _, _, h in Tree.load(src, HashInfo("md5", old_md5))}
            new = {h.value for _, _, h in Tree.load(src, HashInfo("md5", new_md5))}
            result = transfer(src, dest, {HashInfo("md5", o) for o in new - old})
            if result.failed:
                return False
            dest.add(src.oid_to_path(new_md5), src.fs, new_md5)
        return True

    def _push_all(self, pointers: list[str]) -> None:
        from dvc.repo import Repo

        try:
            with Repo(str(self.root)) as repo:
                repo.push(targets=[str(self.root / p) for p in pointers], remote=REMOTE_NAME)
        except Exception as exc:
            raise VersioningError(
                f"dvc push to {self.remote_url} failed: {exc}",
                fix="check CVLOOP_DVC_REMOTE and its credentials",
            ) from None

    # ---- versions -----------------------------------------------------------------------
    def commit_version(
        self, name: str, pointers: list[str], message: str, files: tuple[str, ...] = ()
    ) -> VersionRecord:
        """Commit the pointer files (and ``files``: small git-tracked files that belong to
        the version, e.g. ``schema.yaml``), push the data, then tag ``name``; idempotent.

        If ``name`` is already tagged on a commit holding these exact pointers, nothing new
        is committed (a re-run after a crash ends in the same state).
        """
        existing = self.git(
            "rev-parse", "-q", "--verify", f"refs/tags/{name}^{{commit}}", check=False
        )
        if existing:
            for p in [*pointers, *files]:
                at_tag = self.git("show", f"{existing}:{p}", check=False)
                if at_tag != (self.root / p).read_text().strip():
                    raise VersioningError(
                        f"tag {name} already exists on {existing[:10]} with different data",
                        fix="version numbers are never reused: the next version gets a new name",
                    )
            self.push(pointers)
            info = self.pointer_info(pointers[0])
            return VersionRecord(
                name, existing, info["md5"], pointers[0], info["files"], info["size"]
            )
        prefix = name.rsplit("-v", 1)[0]
        crash_point(f"{prefix}:added")
        gitignores = [str(Path(p).parent / ".gitignore") for p in pointers]
        gitignores = [g for g in gitignores if (self.root / g).exists()]
        tracked = [*pointers, *files, *gitignores]
        self.git("add", *tracked)
        staged = self.git("diff", "--cached", "--name-only", "--", *tracked)
        if staged:
            self.git("commit", "-m", message, "--", *tracked)
        rev = self.head()
        crash_point(f"{prefix}:committed")
        earlier = [t for t in self.tags(f"{prefix}-v*") if t != name]
        # the data reaches the remote before the tag names it: a tag is the promise that
        # the version can be pulled, and a push that fails (or a kill during it) leaves no
        # tag, so the re-run makes the same commit's tag instead of meeting "tag exists"
        self.push(pointers, since=earlier[-1] if earlier else None)
        crash_point(f"{prefix}:pushed")
        self.git("tag", "-a", name, "-m", message, rev)
        crash_point(f"{prefix}:tagged")
        info = self.pointer_info(pointers[0])
        return VersionRecord(name, rev, info["md5"], pointers[0], info["files"], info["size"])


@contextlib.contextmanager
def _quiet():
    """DVC prints git hints ("To track the changes with git, run: ...") that do not apply:
    cvloop commits the pointer itself."""
    import logging

    logger = logging.getLogger("dvc.repo")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            yield
    finally:
        logger.setLevel(level)


def _version_key(tag: str) -> tuple:
    import re

    m = re.search(r"(\d+)$", tag)
    return (tag.rsplit("-v", 1)[0], int(m.group(1)) if m else -1)


def next_version(repo: DataRepo, prefix: str) -> int:
    """1 + the highest ``<prefix>-v<n>`` tag (1 when there is none)."""
    tags = repo.tags(f"{prefix}-v*")
    nums = [int(t.rsplit("-v", 1)[1]) for t in tags if t.rsplit("-v", 1)[1].isdigit()]
    return max(nums, default=0) + 1


# the data repository's layout: the training pool and the holdout, each a DVC-tracked folder
DATASET_POINTER = "datasets.dvc"
HOLDOUT_POINTER = "holdout/data.dvc"
DATASET_DIR = "datasets"
HOLDOUT_DIR = "holdout/data"
