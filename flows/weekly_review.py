"""Weekly review: the runbook's two questions, answered from what the week recorded.

1. **Is anything red?** Monitor triggers that fired, canary breaches and stopped rollouts,
   failed or crashed flow runs, candidates the gates rejected.
2. **Did the deployment change, and why?** Every rollout-manifest change of the week (who,
   when, the split, the reason) and the model versions registered.

A markdown artifact ``weekly-review`` in Prefect and a copy in the store
(``reports/weekly/<ISO week>.md``). Deployment ``weekly-review/weekly`` (Mondays).
"""

from __future__ import annotations

import datetime as dt

from prefect import flow

from flows.hooks import publish_failure
from tasks.weekly import (
    failed_flow_runs,
    gather_week_task,
    publish_weekly_review,
    review_markdown_task,
    store_review_task,
)


@flow(name="weekly-review", log_prints=True, on_failure=[publish_failure])
def weekly_review(end: str | None = None, days: int = 7) -> dict:
    """The week before ``end`` (default now): anything red? did the deployment change?"""
    t1 = dt.datetime.fromisoformat(end) if end else dt.datetime.now(dt.UTC)
    t1 = t1 if t1.tzinfo else t1.replace(tzinfo=dt.UTC)
    t0 = t1 - dt.timedelta(days=days)
    week = f"{t0.date()}..{t1.date()}"
    # 1. what the week recorded: drift checks, versions, rollout and data changes; failures
    data = gather_week_task(t0, t1)
    failed = failed_flow_runs(t0, t1)
    # 2. the report: anything red? did the deployment change, and why?
    md, red = review_markdown_task(week, data, failed)
    store_review_task(t1, md)
    publish_weekly_review(week, md)
    print(f"weekly review {week}: {len(red)} red item(s); {len(data['changes'])} deployment "
          "change(s)")  # fmt: skip
    return {"week": week, "red": red, "changes": data["changes"], "versions": data["versions"],
            "data": data.get("data", []), "markdown": md}  # fmt: skip


if __name__ == "__main__":
    weekly_review()
