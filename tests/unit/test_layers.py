"""The layer contracts of pyproject.toml (import-linter, run by `make lint`): the tree keeps
them, and each kind of wrong arrow breaks them — shown on a copy of the tree with one
deliberate bad import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LINT = str(Path(sys.executable).parent / "lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([LINT, "--no-cache", "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture()
def tree(tmp_path) -> Path:
    """A copy of the packages and the contracts."""
    for pkg in ("cvloop", "flows", "tasks", "registry"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _add_import(root: Path, module: str, line: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    text = path.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    path.write_text(head + sep + line + "\n" + rest)


def test_the_tree_keeps_every_contract():
    proc = _lint(REPO)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "5 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # a pure rule reaching up into the CLI
        ("cvloop.core.gates", "import cvloop.app.cli", "Layers, each importing only from below"),
        # an adapter starting a flow
        (
            "cvloop.adapters.storage",
            "import flows.retrain",
            "Layers, each importing only from below",
        ),
        # a stage using the synthetic fleet
        ("cvloop.stages.collect", "import cvloop.sim.fleet.scene", "Production never imports"),
        # one task module leaning on another
        ("tasks.collect", "import tasks.model", "Task modules are independent"),
        # MLflow outside registry/
        ("cvloop.stages.gate", "import mlflow", "Only registry/ talks to MLflow"),
        # a circle between two pure modules (gates already imports slices)
        ("cvloop.core.slices", "import cvloop.core.gates", "No import circles"),
    ],
)
def test_a_wrong_arrow_fails_the_lint(tree, module, line, broken):
    _add_import(tree, module, line)
    proc = _lint(tree)
    assert proc.returncode == 1, proc.stdout[-3000:]
    report = proc.stdout
    assert f"{broken}" in report and "BROKEN" in report
    failing = [x for x in report.splitlines() if " BROKEN" in x]
    assert any(broken in x for x in failing), failing
