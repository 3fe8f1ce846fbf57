"""Weekly review: the week's records, the flow runs that failed (Prefect's own API), the
report artifact."""

from __future__ import annotations

import datetime as dt

from prefect import task

from cvloop.stages.weekly import gather_week, review_markdown, store_review
from tasks import stage_task

gather_week_task = stage_task(gather_week, name="gather_week")
review_markdown_task = task(review_markdown, name="review_markdown")
store_review_task = stage_task(store_review, name="store_review")


@task(name="failed_flow_runs")
def failed_flow_runs(start: dt.datetime, end: dt.datetime) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=start, before_=end),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])
                ),
            ),
            limit=200,
        )
        names = {}
        out = []
        for r in runs:
            if r.flow_id not in names:
                names[r.flow_id] = client.read_flow(r.flow_id).name
            out.append(
                {
                    "flow": names[r.flow_id],
                    "run": r.name,
                    "id": str(r.id),
                    "state": r.state.name if r.state else "?",
                    "when": r.start_time.isoformat(timespec="seconds") if r.start_time else "",
                    "message": (r.state.message or "")[:200] if r.state else "",
                }
            )
    return sorted(out, key=lambda x: x["when"])


@task(name="publish_weekly_review")
def publish_weekly_review(week: str, md: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=md, key="weekly-review", description=week)
