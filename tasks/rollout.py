"""Rollout stage: the serving manifest and the reports operators read (plain + @task)."""

from __future__ import annotations

from prefect import task

from cvloop.stages.bootstrap import bootstrap_report, write_initial_manifest


@task(name="publish_bootstrap_report")
def publish_bootstrap_report(version, dataset, holdout, trained, holdout_pt, holdout_onnx) -> str:
    from prefect.artifacts import create_markdown_artifact

    md = bootstrap_report(version, dataset, holdout, trained, holdout_pt, holdout_onnx)
    create_markdown_artifact(markdown=md, key="bootstrap", description="baseline champion")
    return md


write_initial_manifest_task = task(write_initial_manifest, name="write_initial_manifest")

publish_bootstrap_report_task = publish_bootstrap_report
