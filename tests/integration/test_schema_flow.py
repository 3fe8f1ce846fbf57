"""Class schema changes against the real stack, as an operator runs them: `cvloop schema
add-class / rename-class / retire-class` migrate the labels of the dataset and the holdout
into new DVC versions committed with schema.yaml (tag schema-v<n>), update the open Label
Studio review project, keep the seed frames of a new class; the same command again changes
nothing; a rename onto an existing class is refused with the fix, before anything moves."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from cvloop.adapters.datasets import read_manifest
from tests.conftest import context


def _json_tail(text: str) -> dict:
    i = text.rfind("\n{\n")
    return json.loads(text[i + 1 :] if i >= 0 else text[text.index("{") :])


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def _labels(folder: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(folder.glob("labels/*/*.txt"))}


def _boxes_by_id(labels: dict[str, str]) -> dict[int, int]:
    out: dict[int, int] = {}
    for text in labels.values():
        for line in text.splitlines():
            out[int(line.split()[0])] = out.get(int(line.split()[0]), 0) + 1
    return out


@pytest.fixture(scope="module")
def op(booted, tmp_path_factory):
    """A private clone of the bootstrapped data repo (the shared one stays at schema-v1),
    the same services, DVC remote and frame store."""
    work = tmp_path_factory.mktemp("schema")
    repo = work / "data-repo"
    subprocess.run(["git", "clone", "-q", str(booted.repo), str(repo)], check=True)
    env = {**booted.env, "CVLOOP_DATA_REPO": str(repo), "PREFECT_LOGGING_LEVEL": "WARNING"}
    from cvloop.adapters.versioning import DataRepo

    data = DataRepo(repo, str(booted.dvc_remote))  # a fresh clone: pull the data
    data.ensure()
    data.checkout(["datasets.dvc", "holdout/data.dvc"])

    def cli(*args: str, check: bool = True):
        return booted.stack.cli("schema", *args, env=env, check=check, timeout=600)

    return booted, repo, env, cli, work


def test_add_rename_retire_each_make_versions_and_a_rerun_changes_nothing(op):
    from cvloop.adapters.labelstudio import project_title

    booted, repo, env, cli, work = op
    assert "schema-v1: 0=crate, 1=barrel, 2=cone" in cli("show").stdout
    # an open review (a retrain waiting for reviewers) with a box the reviewer drew as barrel
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: v for k, v in env.items() if k.startswith("CVLOOP_")})
    try:
        queue = context().labelstudio
        title = project_title("dataset-v97", "cvloop-detector")
        pid = queue.ensure_project(title, ["crate", "barrel", "cone"])
        queue.client.tasks.create(project=pid, data={"image": "/x.jpg", "sha256": "f" * 64})
        tid = queue.tasks(pid)[0][0]
        from cvloop.core.frames import LabelBox

        queue.submit(tid, [LabelBox("barrel", 0.5, 0.5, 0.2, 0.2)], 160, 160)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    before_labels = _labels(repo / "datasets")
    before_hold = _labels(repo / "holdout" / "data")
    datasets_before = _git(repo, "tag", "--list", "dataset-v*").split()

    # 1. add a class, with a seed frame (a PNG on disk) and the camera that shows it
    seed = work / "pallet-example.png"
    cv2.imwrite(str(seed), np.full((160, 160, 3), 90, np.uint8))
    out = _json_tail(cli("add-class", "pallet", "--seed", str(seed), "--camera", "cam-01",
                         "--why", "new loading bays", "--by", "ada").stdout)  # fmt: skip
    assert out["schema_version"] == 2 and out["applied"]
    assert out["classes"] == ["crate", "barrel", "cone", "pallet"]
    assert out["migrated"]["datasets"]["labels_rewritten"] == 0  # ids unchanged by an add
    assert _labels(repo / "datasets") == before_labels
    ds_v = out["dataset_version"]
    assert ds_v == f"dataset-v{len(datasets_before) + 1}"
    names = yaml.safe_load((repo / "datasets" / "data.yaml").read_text())["names"]
    assert list(names.values()) == ["crate", "barrel", "cone", "pallet"]
    for folder in ("datasets", "holdout/data"):
        assert (repo / folder / "SCHEMA").read_text() == "schema-v2\n"
    # the versions are tagged, committed with schema.yaml, and their data is on the remote
    assert "schema-v2" in _git(repo, "tag", "--list", "schema-v*").split()
    logged = yaml.safe_load(_git(repo, "show", f"{ds_v}:schema.yaml"))
    assert logged["current"] == 2 and logged["versions"][1]["change"]["who"] == "ada"
    seed_key = logged["versions"][1]["change"]["seed_keys"][0]
    assert (booted.store / seed_key).exists() and seed_key.startswith("seeds/pallet/")
    md5 = yaml.safe_load(_git(repo, "show", f"{ds_v}:datasets.dvc"))["outs"][0]["md5"]
    assert (booted.dvc_remote / "files" / "md5" / md5[:2] / md5[2:]).exists()
    # the open project now offers the new class
    assert out["label_studio_projects"][0]["labels"] == ["crate", "barrel", "cone", "pallet"]

    # 2. the same command again: nothing new (no version, no tag, same files)
    tags = _git(repo, "tag", "--list")
    again = _json_tail(cli("add-class", "pallet", "--seed", str(seed)).stdout)
    assert not again["applied"] and again["dataset_version"] == ds_v
    assert _git(repo, "tag", "--list") == tags

    # 3. renaming onto an existing class is refused with the fix; nothing moved
    head = _git(repo, "rev-parse", "HEAD")
    refused = cli("rename-class", "barrel", "crate", check=False)
    assert refused.returncode == 2
    assert "'crate' is already a class of schema-v2" in refused.stderr
    assert "--merge-into crate" in refused.stderr
    assert _git(repo, "rev-parse", "HEAD") == head and _git(repo, "status", "--porcelain") == ""

    # 4. rename: same ids, new name; the open project keeps 'barrel' (a box uses it) after
    # the schema's labels, and the export translates it
    out = _json_tail(cli("rename-class", "barrel", "drum").stdout)
    assert out["schema_version"] == 3 and _labels(repo / "datasets") == before_labels
    assert out["label_studio_projects"][0]["labels"] == [
        "crate",
        "drum",
        "cone",
        "pallet",
        "barrel",
    ]

    # 5. retire with merge: cone boxes become crate, pallet's id shifts down; counts add up
    ids = _boxes_by_id(before_labels)
    out = _json_tail(cli("retire-class", "cone", "--merge-into", "crate").stdout)
    assert out["classes"] == ["crate", "drum", "pallet"] and out["schema_version"] == 4
    m = out["migrated"]["datasets"]
    assert m["merged"] == {"cone": ids.get(2, 0)}
    assert m["kept"] == {"crate": ids.get(0, 0) + ids.get(2, 0), "drum": ids.get(1, 0)}
    after = _boxes_by_id(_labels(repo / "datasets"))
    assert after == {0: ids.get(0, 0) + ids.get(2, 0), 1: ids.get(1, 0)}
    hold_ids = _boxes_by_id(before_hold)
    assert _boxes_by_id(_labels(repo / "holdout" / "data")) == {
        0: hold_ids.get(0, 0) + hold_ids.get(2, 0), 1: hold_ids.get(1, 0)
    }  # fmt: skip
    assert sum(e.boxes for e in read_manifest(repo / "datasets")) == sum(after.values())
    shown = cli("show").stdout
    assert "schema-v4: 0=crate, 1=drum, 2=pallet" in shown
    assert "retire class 'cone' (boxes merged into 'crate')" in shown
    # every version names its schema: the tags hold the marker of theirs
    for tag, want in ((ds_v, "schema-v2"), (out["dataset_version"], "schema-v4")):
        assert yaml.safe_load(_git(repo, "show", f"{tag}:schema.yaml"))["current"] == int(
            want.rsplit("v", 1)[1]
        )


def test_status_and_the_weekly_review_say_what_changed_in_the_data(op):
    """After the changes above: `cvloop status` shows the schema version and the newest
    dataset/holdout versions; `cvloop weekly` lists each schema change with who and why."""
    booted, repo, env, _cli, _ = op
    # the changes of the test above (module order); without them this test fails, loudly
    assert "schema-v4" in _git(repo, "tag", "--list", "schema-v*").split()
    status = booted.stack.cli("status", env=env).stdout
    newest = _git(repo, "tag", "--list", "dataset-v*", "--sort=v:refname").split()[-1]
    assert "DATA        schema-v4 (crate, drum, pallet; label policy v3" in status
    assert f"newest {newest}" in status
    assert "schema-v1 (crate, barrel, cone)" in status  # the champion predicts schema-v1
    weekly = booted.stack.cli("weekly", env=env).stdout
    section = weekly.split("## Did the data change, and why?")[1].split("##")[0]
    assert "| schema-v2 | cvloop schema-v2: add class 'pallet' (new loading bays) | ada |" in (
        section
    )
    assert "retire class 'cone' (boxes merged into 'crate')" in section
    assert newest in section
