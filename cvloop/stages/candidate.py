"""Model half of the retrain (runbook steps 6–8): fine-tune a candidate from the champion,
score champion and candidate on the same frames, export and benchmark, gate, register.

Plain functions: a test calls them without Prefect; ``tasks/`` wraps them.
Each passes run ids, paths and small records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cvloop.core import slices

if TYPE_CHECKING:
    from cvloop.context import Context


@dataclass(frozen=True)
class TrainingData:
    """The data a candidate is trained and judged on: a dataset version and the holdout."""

    dataset: dict  # name, dvc_md5, git_rev
    holdout: dict  # name, dvc_md5
    dataset_yaml: str
    holdout_dir: str


def training_data(ctx: Context, versions=None, dataset_version: str | None = None) -> TrainingData:
    """From the retrain's new versions (a :class:`NewVersions`), or, for a candidate run on
    its own, from the data repository's checkout, which must hold ``dataset_version``
    (default: the newest)."""
    from cvloop.adapters.versioning import (
        DATASET_DIR,
        DATASET_POINTER,
        HOLDOUT_DIR,
        HOLDOUT_POINTER,
        VersioningError,
    )

    repo = ctx.data_repo
    repo.checkout([DATASET_POINTER, HOLDOUT_POINTER])
    holdout = dict(versions.holdout) if versions is not None and versions.holdout else {}
    if not holdout:
        tags = repo.tags("holdout-v*")
        holdout = {"name": tags[-1] if tags else "unknown"}
        if (repo.root / HOLDOUT_POINTER).exists():
            holdout["dvc_md5"] = repo.pointer_info(HOLDOUT_POINTER)["md5"]
    holdout = {k: holdout[k] for k in ("name", "dvc_md5") if k in holdout}
    if versions is not None:
        d = versions.dataset
        dataset = {"name": d["name"], "dvc_md5": d["dvc_md5"], "git_rev": d["git_rev"]}
        return TrainingData(dataset, holdout, versions.dataset_yaml, versions.holdout_dir)
    tags = repo.tags("dataset-v*")
    name = dataset_version or (tags[-1] if tags else None)
    if name is None or name not in tags:
        raise VersioningError(
            f"dataset version {name!r} not found in {repo.root} (versions: {', '.join(tags)})",
            fix="name one of the versions, or run `cvloop bootstrap` / the retrain flow first",
        )
    md5 = repo.pointer_info(DATASET_POINTER)["md5"]
    import yaml

    tagged = yaml.safe_load(repo.git("show", f"{name}:{DATASET_POINTER}"))["outs"][0]["md5"]
    if tagged != md5:
        raise VersioningError(
            f"the data repository's checkout is not {name} (datasets.dvc {md5[:12]}, "
            f"{name} has {tagged[:12]})",
            fix=f"cd {repo.root} && git checkout {name} -- {DATASET_POINTER} && dvc checkout "
            f"{DATASET_POINTER}, or train on the newest version",
        )
    rev = repo.git("rev-list", "-n", "1", name)
    return TrainingData(
        {"name": name, "dvc_md5": md5, "git_rev": rev},
        holdout,
        str(repo.root / DATASET_DIR / "data.yaml"),
        str(repo.root / HOLDOUT_DIR),
    )


def holdout_drift_tags(holdout_dir: str, holdout_version: str) -> list[str]:
    """The drift slices of the frames a holdout version added (what its retrain was about)."""
    from cvloop.adapters.datasets import read_manifest

    tags = {
        t
        for e in read_manifest(Path(holdout_dir))
        if e.added_in == holdout_version
        for t in e.slice_tags
        if slices.is_drift(t)
    }
    return sorted(tags)


def dataset_schema(ctx: Context, dataset_yaml: str) -> dict:
    """The schema version a dataset folder's labels follow, and its label policy."""
    from cvloop.adapters.datasets import folder_schema
    from cvloop.stages.schema import schema_log

    n = folder_schema(Path(dataset_yaml).parent)
    policy = schema_log(ctx).get(n).label_policy_version
    return {"schema_version": f"schema-v{n}", "label_policy_version": str(policy)}


def slice_tags(cameras: list[str] | None, classes: list[str] | None) -> list[str]:
    """The holdout tags of the drift slices named by the triggering event."""
    return slices.tags_for(cameras or [], classes or [])
