"""Pre-annotation stage (runbook step 3): the champion's boxes at conf >= 0.5 go to Label
Studio's review queue, one project per dataset version."""

from __future__ import annotations

from prefect import task

from cvloop.stages.annotate import ReviewQueue, next_dataset_version, push_to_label_studio
from tasks import stage_task


@task(name="publish_review_queue")
def publish_review_queue(queue: ReviewQueue) -> str:
    from prefect.artifacts import create_link_artifact
    from prefect.runtime import flow_run

    from cvloop.context import current
    from cvloop.stages.notify import flow_run_url, tell

    create_link_artifact(
        key="review-queue",
        link=queue.project_url,
        link_text=f"{queue.title}: {queue.tasks} frames to review in Label Studio",
        description=(
            f"pre-annotated by {queue.model_version}; {queue.imported} imported, "
            f"{queue.skipped} already there"
        ),
    )
    ctx = current()
    links = {"review in Label Studio": queue.project_url, "how to review": "runbooks/review.md"}
    run = flow_run_url(ctx, flow_run.get_id())
    if run:
        links["the waiting run (Prefect)"] = run
    tell(ctx, "review_ready", f"{queue.dataset_version}-{queue.project_id}",
         f"{queue.title}: {queue.tasks} frames wait for review",
         f"Pre-annotated by {queue.model_version}; the run waits for the review (a retrain:"
         " until the edit rate is stable or every frame is reviewed; a holdout refresh: every"
         f" frame), at most review.deadline_hours ({ctx.params.review.deadline_hours:g} h).",
         links, roles=("reviewers", "on_call"))  # fmt: skip
    return queue.project_url


push_to_label_studio_task = stage_task(push_to_label_studio, name="push_to_label_studio", persist_result=True, retries=2,
    retry_delay_seconds=[10, 60],
)  # fmt: skip

next_dataset_version_task = stage_task(
    next_dataset_version, name="next_dataset_version", persist_result=True
)
