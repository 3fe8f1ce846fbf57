"""Data stage: the data repository's layout, the frames already labeled, and one version of
a folder (``dvc add`` -> commit -> push -> tag)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cvloop.adapters.versioning import (
    DATASET_DIR,
    DATASET_POINTER,
    HOLDOUT_DIR,
    HOLDOUT_POINTER,
    VersionRecord,
)
from cvloop.stages.repo_lease import writes_data_repo

if TYPE_CHECKING:
    from cvloop.context import Context


def labeled_hashes(ctx: Context) -> set[str]:
    """Content hashes of every frame already in the dataset or the holdout (those frames
    are never sent for labeling again)."""
    from cvloop.adapters.datasets import read_manifest

    repo = ctx.data_repo
    repo.checkout([DATASET_POINTER, HOLDOUT_POINTER])  # a fresh clone: pull the manifests
    root = repo.root
    return {e.sha256 for d in (DATASET_DIR, HOLDOUT_DIR) for e in read_manifest(root / d)}


@writes_data_repo("a data version (bootstrap / adoption)")
def version_data(
    ctx: Context, folder: str, pointer: str, name: str, message: str, schema_log: bool = False
) -> VersionRecord:
    """``dvc add`` the folder, commit its pointer, push to the DVC remote, tag ``name``.

    With ``schema_log`` (the first version), the schema log (``schema.yaml``) is written if
    the repository has none yet and committed with it, tagged ``schema-v<n>``."""
    from cvloop.core.schema import SCHEMA_FILE
    from cvloop.stages.schema import schema_log as load_log

    repo = ctx.data_repo
    repo.ensure()
    repo.add(folder)
    if not schema_log:
        return repo.commit_version(name, [pointer], message)
    log = load_log(ctx)
    path = repo.root / SCHEMA_FILE
    if not path.exists():
        path.write_text(log.to_yaml())
    rec = repo.commit_version(name, [pointer], message, (SCHEMA_FILE,))
    repo.tag_at_head(log.current.tag, f"cvloop {log.current.tag}: {list(log.current.classes)}")
    return rec
