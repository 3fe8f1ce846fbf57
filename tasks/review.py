"""The review stage as Prefect tasks; what each step does is told in :mod:`cvloop.stages.review`."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict

from prefect import task
from prefect.input import RunInput

from cvloop.core.errors import CvloopError
from cvloop.stages.annotate import ReviewQueue
from cvloop.stages.review import (
    DEADLINE_MARGIN_S,
    REVIEW_PAUSE_KEY,
    ReviewStatus,
    WatchedRun,
    check_review,
    ensure_reviewed,
    review_markdown,
)
from tasks import stage_task


class ReviewGo(RunInput):
    """What resumes a retrain waiting for review (the Prefect UI shows this as a form)."""

    go: bool = True
    reason: str = "an operator said go"


def record_review(queue: ReviewQueue, status: ReviewStatus, mlflow_run_id: str | None) -> None:
    """Progress to the store (``review-progress.json``), a Prefect artifact, and edit rates
    to the retrain's MLflow run (step = frames reviewed)."""
    from prefect.artifacts import create_markdown_artifact

    from cvloop.context import current

    ctx = current()
    ctx.store.put_text(
        f"{queue.run_base}/review-progress.json", json.dumps(asdict(status), indent=2)
    )
    create_markdown_artifact(
        markdown=review_markdown(queue, status),
        key=f"review-progress-{queue.dataset_version}",
        description=f"review progress of {queue.title}",
    )
    if mlflow_run_id:
        step = int(status.progress["reviewed"])
        metrics = {"review.frames": step}
        for name, c in status.progress["classes"].items():
            if c["frames"]:
                metrics[f"review.edit_rate.{name}"] = c["edit_rate"]
                metrics[f"review.frames.{name}"] = c["frames"]
            if c.get("agreement") is not None:
                metrics[f"review.agreement.{name}"] = c["agreement"]
        metrics["review.double_frames"] = int(status.progress.get("double_frames") or 0)
        ctx.tracker.log_metrics(mlflow_run_id, metrics, step=step)


def wait_for_review(status: ReviewStatus, deadline_hours: float, poll_seconds: float) -> ReviewGo:
    """Wait (suspended or paused) until someone or the watcher says go; returns their input.

    Called from the flow body: Prefect suspends flows, not tasks.
    """
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, suspend_flow_run
    from prefect.runtime import deployment

    if status.go:
        return ReviewGo(go=True, reason=status.reason)
    timeout = int(deadline_hours * 3600)
    print(f"waiting for reviewers: {status.reason}")
    try:
        if deployment.id:  # a worker runs it: suspend, the process exits
            return suspend_flow_run(wait_for_input=ReviewGo, timeout=timeout, key=REVIEW_PAUSE_KEY)
        return pause_flow_run(
            wait_for_input=ReviewGo,
            timeout=timeout,
            poll_interval=max(1, int(poll_seconds)),
            key=REVIEW_PAUSE_KEY,
        )
    except FlowPauseTimeout:
        raise CvloopError(
            f"nobody resumed the review within {deadline_hours} h",
            fix="run the review/watch deployment (it resumes at the deadline), or resume the "
            "run in the Prefect UI",
        ) from None


def _waiting_retrains():
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["retrain", "holdout-refresh"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
        )


def watch_reviews(p, poll_seconds: float | None = None) -> list[dict]:
    """For every retrain waiting for review: check Label Studio, record progress and edit
    rates, resume the run when the review may stop (stable, complete, or deadline)."""
    from prefect.flow_runs import resume_flow_run

    from cvloop.context import current
    from cvloop.stages.schema import current_schema

    ctx = current()
    store = ctx.store
    out = []
    poll = poll_seconds or p.review.poll_seconds
    for run in _waiting_retrains():
        # a retrain's queue, or a holdout refresh's (every frame must be labeled there)
        keys = [f"{base}/{run.id}/review-queue.json"
                for base in ("runs/retrain", "runs/holdout-refresh")]  # fmt: skip
        key = next((k for k in keys if store.exists(k)), None)
        if key is None:
            continue  # paused for another reason (by hand)
        refresh = key.startswith("runs/holdout-refresh/")
        info = json.loads(store.get_text(key))
        queue = ReviewQueue(**info)
        details = run.state.state_details if run.state else None
        deadline = getattr(details, "pause_timeout", None)
        # resume a little before the pause times out: the watcher runs every few minutes
        margin = dt.timedelta(seconds=max(2 * poll, DEADLINE_MARGIN_S))
        passed = bool(deadline) and dt.datetime.now(dt.UTC) >= deadline - margin
        status = check_review(
            ctx,
            queue,
            list(current_schema(ctx).classes),
            list((run.parameters or {}).get("classes") or []),
            p.review,
            deadline_passed=passed,
            complete_only=refresh,
        )
        record_review(queue, status, info.get("mlflow_run_id"))
        from cvloop.stages.notify import flow_run_url, tell

        links = {"review in Label Studio": queue.project_url,
                 "the run (Prefect)": flow_run_url(ctx, str(run.id)) or ""}  # fmt: skip
        if passed and status.progress["reviewed"] < status.progress["total_tasks"]:
            p_ = status.progress
            tell(ctx, "review_stalled", str(run.id),
                 f"{queue.title}: the review passed its deadline at {p_['reviewed']}/"
                 f"{p_['total_tasks']} frames",
                 "The run goes on with what is reviewed (review.deadline_hours); the rest "
                 "stays in Label Studio for the next version.",
                 links, roles=("on_call", "ml_lead"))  # fmt: skip
        if status.progress.get("disagreeing") and not status.go:
            from cvloop.stages.review import agreement_lines

            classes = sorted(status.progress["disagreeing"])
            tell(ctx, "review_disagreement", f"{run.id}-{'-'.join(classes)}",
                 f"{queue.title}: reviewers disagree on {', '.join(classes)}",
                 "\n".join([status.reason, *agreement_lines(queue, status.progress)[1:]]),
                 links, roles=("ml_lead", "reviewers"))  # fmt: skip
        if status.go:
            resume_flow_run(run.id, run_input={"go": True, "reason": status.reason})
            print(f"resumed {run.name}: {status.reason}")
        else:
            print(f"{run.name} waits: {status.reason}")
        out.append(
            asdict(
                WatchedRun(
                    str(run.id),
                    run.name,
                    queue.dataset_version,
                    status.progress["reviewed"],
                    status.progress["total_tasks"],
                    status.go,
                    status.reason,
                )
            )
        )
    return out


check_review_task = stage_task(check_review, name="check_review", persist_result=True)

record_review_task = task(record_review, name="record_review")

ensure_reviewed_task = task(ensure_reviewed, name="ensure_reviewed")

watch_reviews_task = task(watch_reviews, name="watch_reviews")
