"""Stack checks: each real service is reached the way the flows reach it.

The checks are ``cvloop/stages/stack.py``.
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
from tasks import stage_task

check_frame_store_task = stage_task(check_frame_store, name="check_frame_store")

check_s3_task = stage_task(check_s3, name="check_s3")

check_mlflow_task = stage_task(check_mlflow, name="check_mlflow")

check_label_studio_task = stage_task(check_label_studio, name="check_label_studio")


@task(name="publish_stack_report")
def publish_stack_report(results: list[CheckResult]) -> str:
    from prefect.artifacts import create_markdown_artifact

    markdown = report_markdown(results)
    create_markdown_artifact(markdown=markdown, key="stack-check", description="cvloop stack check")
    return markdown


require_all_ok_task = task(require_all_ok, name="require_all_ok")
