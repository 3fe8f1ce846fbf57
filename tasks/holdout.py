"""The quarterly holdout refresh as Prefect tasks; what each step does is told in :mod:`cvloop.stages.holdout`."""

from __future__ import annotations

from prefect import task

from cvloop.stages.holdout import (
    RefreshSample,
    record_refresh,
    refresh_work_dir,
    sample_for_refresh,
    score_champion_on_holdout,
    version_refreshed_holdout,
)
from tasks import stage_task


@task(name="publish_refresh_report")
def publish_refresh_report(out: dict, sample: RefreshSample) -> str:
    from prefect.artifacts import create_markdown_artifact

    def f(x):
        return "n/a" if x is None else f"{x:.4f}"

    s = sample.summary
    lines = [
        f"# Holdout refresh: {out['previous_version']} -> {out['holdout_version']}",
        "",
        f"{out['frames']} labeled frames from cameras {', '.join(s['cameras'])} "
        f"({len(s['strata'])} camera x month x part-of-day strata); checked for leakage "
        f"against {len(s['training_versions_checked'])} training versions.",
        "",
        "| champion | mAP50-95 on the previous holdout | on the new holdout |",
        "|---|---|---|",
        f"| v{out['champion']} | {f(out['champion_map50_95_previous'])} | "
        f"{f(out['champion_map50_95_new'])} |",
        "",
        "The monitor compares the weekly holdout mAP with the new holdout's score from now "
        "on (model version tag `cvloop.holdout.reference.map50_95`).",
        "",
        "| stratum | frames |",
        "|---|---|",
        *[f"| {k} | {n} |" for k, n in s["strata"].items()],
    ]
    md = "\n".join(lines) + "\n"
    create_markdown_artifact(markdown=md, key="holdout-refresh", description="holdout refresh")
    return md


sample_for_refresh_task = stage_task(
    sample_for_refresh, name="sample_for_refresh", persist_result=True
)

score_champion_task = stage_task(score_champion_on_holdout, name="score_champion_on_holdout",
                           persist_result=True)  # fmt: skip

version_refreshed_holdout_task = stage_task(
    version_refreshed_holdout, name="version_refreshed_holdout", persist_result=True
)

record_refresh_task = stage_task(record_refresh, name="record_refresh")

refresh_work_dir_task = stage_task(refresh_work_dir, name="refresh_work_dir")
