"""Pre-annotation stage (runbook step 3): the champion's boxes at conf >= 0.5 go to Label
Studio's review queue, one project per dataset version."""

from __future__ import annotations

from prefect import task

from cvloop.stages.annotate import ReviewQueue, next_dataset_version, push_to_label_studio
from tasks import stage_task


@task(name="publish_review_queue")
def publish_review_queue(queue: ReviewQueue) -> str:
    from prefect.artifacts import create_link_artifact

    create_link_artifact(
        key="review-queue",
        link=queue.project_url,
        link_text=f"{queue.title}: {queue.tasks} frames to review in Label Studio",
        description=(
            f"pre-annotated by {queue.model_version}; {queue.imported} imported, "
            f"{queue.skipped} already there"
        ),
    )
    return queue.project_url


push_to_label_studio_task = stage_task(push_to_label_studio, name="push_to_label_studio", persist_result=True, retries=2,
    retry_delay_seconds=[10, 60],
)  # fmt: skip

next_dataset_version_task = stage_task(
    next_dataset_version, name="next_dataset_version", persist_result=True
)
