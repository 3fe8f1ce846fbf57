"""Stack check: is every service cvloop needs reachable from a worker? (operators' smoke test)"""

from __future__ import annotations

from prefect import flow

from flows.hooks import publish_failure
from tasks.stack import (
    check_frame_store_task,
    check_label_studio_task,
    check_mlflow_task,
    check_s3_task,
    publish_stack_report,
    require_all_ok_task,
)


@flow(name="stack-check", log_prints=True, on_failure=[publish_failure])
def stack_check() -> None:
    """Reach the frame store, S3, MLflow and Label Studio as the runbook flows do."""
    # reach each service
    results = [
        check_frame_store_task(),
        check_s3_task(),
        check_mlflow_task(),
        check_label_studio_task(),
    ]
    # report (artifact "stack-check"), then fail with every broken service listed
    publish_stack_report(results)
    require_all_ok_task(results)


if __name__ == "__main__":
    stack_check()
