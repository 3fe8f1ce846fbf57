"""`cvloop init`: a project folder for a team, never overwriting, and found from inside."""

from __future__ import annotations

import subprocess

import pytest

from cvloop.app.init import init_project
from cvloop.config.params import load_params
from cvloop.config.settings import code_dir, project_dir
from cvloop.core.errors import CvloopError


def _actions(rows) -> dict[str, str]:
    return {r.path: r.action for r in rows}


def test_init_writes_a_project_with_the_teams_classes_and_keeps_what_exists(tmp_path):
    target = tmp_path / "Dock Cams"
    rows = init_project(target, classes="forklift, pallet,person", imgsz=640)
    acts = _actions(rows)
    for rel in ("params.yaml", ".env", "prefect.yaml", ".gitignore", ".cvloop-project",
                "regions.example.yaml", "runbooks/adopt.md", ".git"):  # fmt: skip
        assert acts[rel] == "write", rel
    p = load_params(target / "params.yaml")
    assert p.classes == ["forklift", "pallet", "person"] and p.train.imgsz == 640
    assert p.registry.model_name == "dock-cams-detector"
    assert "# runbook step 1" in (target / "params.yaml").read_text()  # comments kept
    assert subprocess.run(["git", "rev-parse", "--git-dir"], cwd=target).returncode == 0
    # again: nothing is overwritten without --force, and it says so
    (target / ".env").write_text("CVLOOP_STORAGE_URI=s3://dock/frames\n")
    again = _actions(init_project(target, classes="a,b", imgsz=320))
    assert again["params.yaml"] == "keep" and again[".env"] == "keep"
    assert (target / ".env").read_text() == "CVLOOP_STORAGE_URI=s3://dock/frames\n"
    assert load_params(target / "params.yaml").classes == ["forklift", "pallet", "person"]
    forced = _actions(init_project(target, classes="a,b", imgsz=320, force=True))
    assert forced["params.yaml"] == "overwrite"
    assert load_params(target / "params.yaml").classes == ["a", "b"]


def test_check_names_what_is_missing_or_invalid(tmp_path):
    rows = _actions(init_project(tmp_path, check=True))
    assert rows["params.yaml"] == "missing" and rows[".git"] == "missing"
    init_project(tmp_path, classes="a", imgsz=320)
    (tmp_path / "params.yaml").write_text("train: {imgsz: 300}\n")
    (bad,) = [r for r in init_project(tmp_path, check=True) if r.path == "params.yaml"]
    assert bad.action == "invalid" and "params.yaml" in bad.detail


def test_init_needs_the_classes(tmp_path):
    with pytest.raises(CvloopError, match="needs the class list") as e:
        init_project(tmp_path / "never-made")
    assert "--checkpoint" in e.value.fix and not (tmp_path / "never-made").exists()


def test_cvloop_run_inside_a_project_works_for_it(tmp_path, monkeypatch):
    init_project(tmp_path, classes="a", imgsz=320)
    monkeypatch.delenv("CVLOOP_PROJECT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert project_dir() == tmp_path.resolve() and code_dir() != project_dir()
    monkeypatch.chdir(tmp_path.parent)  # elsewhere: the checkout (the demo's project)
    assert project_dir() == code_dir()
