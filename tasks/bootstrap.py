"""The demo's bootstrap (``cvloop bootstrap``): the synthetic baseline data, and the baseline
champion's report.

This is the one task module that reaches the simulator (``cvloop/sim/``): the synthetic
fleet stands in for the labelled data a team would bring. The import contract in
``pyproject.toml`` names this exception; a team's own model and data come in through
adoption instead.
"""

from __future__ import annotations

from prefect import task

from cvloop.adapters.versioning import DATASET_DIR, HOLDOUT_DIR
from cvloop.config.params import Params
from cvloop.sim.baseline import BaselineData, build_baseline_data
from cvloop.stages.bootstrap import (
    baseline_lineage,
    baseline_tags,
    bootstrap_report,
    start_baseline_run,
)
from tasks import stage_task


@task(name="build_baseline_data")
def build_baseline_data_task(p: Params, train_frames: int, holdout_frames: int) -> BaselineData:
    """Dataset v1 and holdout v1 rendered from the fleet's clean weeks into the data repo,
    under the schema's current version (its classes must be the baseline's)."""
    from cvloop.context import current
    from cvloop.stages.schema import current_schema

    ctx = current()
    root = ctx.data_repo.root
    return build_baseline_data(
        root / DATASET_DIR, root / HOLDOUT_DIR, ctx.frame_store(create_bucket=True),
        current_schema(ctx), p.fleet.seed, p.fleet.cameras, p.fleet.image_size,
        p.bootstrap.days_ago, p.bootstrap.days, train_frames, holdout_frames,
        list(p.classes), p.schema_.label_policy_version, p.version.val_share,
        p.holdout.near_duplicate_hamming,
    )  # fmt: skip


@task(name="publish_bootstrap_report")
def publish_bootstrap_report(version, dataset, holdout, trained, holdout_pt, holdout_onnx) -> str:
    from prefect.artifacts import create_markdown_artifact

    md = bootstrap_report(version, dataset, holdout, trained, holdout_pt, holdout_onnx)
    create_markdown_artifact(markdown=md, key="bootstrap", description="baseline champion")
    return md


start_baseline_run_task = stage_task(start_baseline_run, name="start_baseline_run")
baseline_lineage_task = stage_task(baseline_lineage, name="baseline_lineage")
baseline_tags_task = task(baseline_tags, name="baseline_tags")
