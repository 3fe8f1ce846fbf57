"""Data stage: baseline frames, dataset and holdout versions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cvloop.adapters.versioning import DataRepo, VersionRecord
from cvloop.core.errors import CvloopError
from cvloop.sim.baseline import build_baseline
from cvloop.sim.fleet.generate import FleetConfig, cameras_named

DATASET_POINTER = "datasets.dvc"

HOLDOUT_POINTER = "holdout/data.dvc"

DATASET_DIR = "datasets"

HOLDOUT_DIR = "holdout/data"


@dataclass(frozen=True)
class BaselineData:
    dataset_yaml: str
    holdout_yaml: str
    train_frames: int
    val_frames: int
    holdout_frames: int


def data_repo() -> DataRepo:
    from cvloop.config.settings import load_settings

    s = load_settings()
    return DataRepo(s.data_repo, s.dvc_remote_url, s.s3_endpoint_url)


def build_baseline_data(
    seed: int,
    cameras: int,
    image_size: int,
    days_ago: int,
    days: int,
    train_frames: int,
    holdout_frames: int,
    classes: list[str],
    label_policy_version: int,
    val_share: float,
    near_dup_bits: int,
) -> BaselineData:
    """Render the clean baseline period into ``datasets/`` (v1) and ``holdout/data/`` (v1)."""
    from cvloop.adapters.storage import open_storage
    from cvloop.config.settings import load_settings

    repo = data_repo()
    start = dt.date.today() - dt.timedelta(days=days_ago)
    cfg = FleetConfig(
        seed=seed, cameras=cameras_named(cameras), image_size=image_size, classes=tuple(classes)
    )
    paths = build_baseline(
        cfg,
        start,
        days,
        train_frames,
        holdout_frames,
        repo.root / DATASET_DIR,
        repo.root / HOLDOUT_DIR,
        classes,
        label_policy_version,
        val_share,
        near_dup_bits,
        store=open_storage(load_settings().frame_store_uri, create_bucket=True),
    )
    from cvloop.adapters.datasets import mark_folder
    from cvloop.stages.schema import current_schema

    schema = current_schema()
    if list(schema.classes) != list(classes):
        raise CvloopError(
            f"the baseline's classes {classes} are not {schema.tag}'s {list(schema.classes)}",
            fix="bootstrap with the schema's classes (`cvloop schema show`)",
        )
    for folder in (paths.dataset_dir, paths.holdout_dir):
        mark_folder(folder, schema)
    return BaselineData(
        str(paths.dataset_dir / "data.yaml"),
        str(paths.holdout_dir / "data.yaml"),
        paths.train_frames,
        paths.val_frames,
        paths.holdout_frames,
    )


def labeled_hashes() -> set[str]:
    """Content hashes of every frame already in the dataset or the holdout (those frames
    are never sent for labeling again)."""
    from cvloop.adapters.datasets import read_manifest

    repo = data_repo()
    repo.checkout([DATASET_POINTER, HOLDOUT_POINTER])  # a fresh clone: pull the manifests
    root = repo.root
    return {e.sha256 for d in (DATASET_DIR, HOLDOUT_DIR) for e in read_manifest(root / d)}


def version_data(
    folder: str, pointer: str, name: str, message: str, schema_log: bool = False
) -> VersionRecord:
    """``dvc add`` the folder, commit its pointer, tag ``name``, push to the DVC remote.

    With ``schema_log`` (the first version), the schema log (``schema.yaml``) is written if
    the repository has none yet and committed with it, tagged ``schema-v<n>``."""
    from cvloop.core.schema import SCHEMA_FILE
    from cvloop.stages.schema import schema_log as load_log

    repo = data_repo()
    repo.ensure()
    repo.add(folder)
    if not schema_log:
        return repo.commit_version(name, [pointer], message)
    log = load_log()
    path = repo.root / SCHEMA_FILE
    if not path.exists():
        path.write_text(log.to_yaml())
    rec = repo.commit_version(name, [pointer], message, (SCHEMA_FILE,))
    repo.tag_at_head(log.current.tag, f"cvloop {log.current.tag}: {list(log.current.classes)}")
    return rec
