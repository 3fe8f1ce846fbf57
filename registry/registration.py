"""Registering a model version as one transaction (runbook step 7, "register in MLflow with
full lineage").

The version is created with every tag and marked ``pending``, its registration record is
written into cvloop's store (:mod:`registry.records`: what its files must hash to), the
aliases move, then it is marked ``complete``. Any error on the way deletes what this call
created (a version, its record, an alias), so no half-registered challenger is left; a crash
(no chance to clean up) leaves a pending version of this run, which the re-run completes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from registry.models import ModelRegistry, sha256_file
from registry.names import (
    HOLDOUT_MAP50,
    HOLDOUT_MAP50_95,
    HOLDOUT_PER_CLASS,
    LINEAGE_TAGS,
    REGISTERED_VERSION,
    REGISTRATION,
)
from registry.tracking import Tracker


def register(
    reg: ModelRegistry,
    tracker: Tracker,
    run_id: str,
    *,
    pt: str | Path,
    onnx: str | Path,
    classes: list[str],
    imgsz: int,
    lineage: Mapping[str, str],
    holdout: Mapping[str, object],
    extra_tags: Mapping[str, str],
    aliases: list[str],
    description: str,
) -> str:
    """Register the run's ``model/`` artifacts with lineage tags (``lineage`` keys as in
    :data:`registry.names.LINEAGE_TAGS`), the holdout metrics (``map50_95``, ``map50``,
    ``per_class_ap50_95``) and ``extra_tags``; set ``aliases`` once all tags are on.
    Idempotent for a run registered before. Returns the version."""
    tags = {LINEAGE_TAGS[k]: v for k, v in lineage.items() if k in LINEAGE_TAGS}
    tags.update(
        {
            LINEAGE_TAGS["training_run"]: run_id,
            LINEAGE_TAGS["sha256_pt"]: sha256_file(Path(pt)),
            LINEAGE_TAGS["sha256_onnx"]: sha256_file(Path(onnx)),
            LINEAGE_TAGS["classes"]: json.dumps(list(classes)),
            LINEAGE_TAGS["imgsz"]: str(imgsz),
            HOLDOUT_MAP50_95: f"{float(holdout['map50_95']):.4f}",
            HOLDOUT_MAP50: f"{float(holdout['map50']):.4f}",
            HOLDOUT_PER_CLASS: json.dumps(
                {k: round(float(v), 4) for k, v in dict(holdout["per_class_ap50_95"]).items()}
            ),
        }
    )
    tags.update(extra_tags)
    version = reg.version_of_run(run_id)
    created = version is None
    before = {alias: reg.alias_version(alias) for alias in aliases}
    try:
        if created:
            version = reg.register(run_id, {**tags, REGISTRATION: "pending"}, description)
        else:
            reg.set_tags(version, tags)
        reg.record(version, run_id, tags)  # before any alias can point at it
        for alias in aliases:
            reg.set_alias(alias, version)
        reg.set_tags(version, {REGISTRATION: "complete"})
    except BaseException:
        if created and version is not None:
            reg.delete_version(version)
            try:
                reg.forget(version)
            except Exception:
                pass  # a record of a version that no longer exists: never loaded (no version)
            for alias, previous in before.items():  # the alias goes back where it was
                if previous is not None and previous != version:
                    try:
                        reg.set_alias(alias, previous)
                    except Exception:
                        pass
        raise
    tracker.set_tags(run_id, {REGISTERED_VERSION: version})
    tracker.finish(run_id, "FINISHED")
    return version
