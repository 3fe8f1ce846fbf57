"""Stack checks: each real service is reached the way the flows reach it.

Plain functions (callable without Prefect) plus thin ``@task`` wrappers at the bottom.
"""

from __future__ import annotations

from prefect import task

from cvloop.stages.stack import (
    CheckResult,
    check_frame_store,
    check_label_studio,
    check_mlflow,
    check_s3,
    report_markdown,
    require_all_ok,
)

check_frame_store_task = task(check_frame_store, name="check_frame_store")

check_s3_task = task(check_s3, name="check_s3")

check_mlflow_task = task(check_mlflow, name="check_mlflow")

check_label_studio_task = task(check_label_studio, name="check_label_studio")


@task(name="publish_stack_report")
def publish_stack_report(results: list[CheckResult]) -> str:
    from prefect.artifacts import create_markdown_artifact

    markdown = report_markdown(results)
    create_markdown_artifact(markdown=markdown, key="stack-check", description="cvloop stack check")
    return markdown


require_all_ok_task = task(require_all_ok, name="require_all_ok")
