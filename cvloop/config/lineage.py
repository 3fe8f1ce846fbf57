"""Lineage facts: which code, which params, which data produced a model."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from cvloop.config.settings import code_dir


def git_commit(repo: Path | None = None) -> str:
    """HEAD of the cvloop checkout, with ``+dirty`` when tracked files differ from it."""
    root = repo or code_dir()
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def params_sha256(path: Path | None = None) -> str:
    from cvloop.config.params import params_path

    p = path or params_path()
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()
