"""How much of a period the Prefect orchestration itself took, from the Prefect API.

For every flow run that started in the period:

* **work** is the union of its task runs' running intervals (overlaps counted once);
* **in-flow overhead** is the flow run's running time (``total_run_time``: paused or
  suspended time excluded) minus that work — state changes, result persistence, caching,
  task submission, and whatever the flow body does between tasks (so an upper bound);
* **pickup** is the delay between a deployment run's expected start and its start (the
  worker polling, the process starting).

The share is ``(in-flow overhead + pickup) / wall``. Runs that were still running are
counted up to now. Runs a deployment's schedule started (``auto_scheduled``: the 5-minute
review check and rollout tick, idle most of the time) are also shown apart: a late start of
one of those delays nothing, so the share **on the path** counts only the runs the caller
started and waited for.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cvloop.adapters.prefect_rest import PrefectRest


@dataclass
class RunCost:
    name: str
    flow: str
    running_s: float
    work_s: float
    pickup_s: float
    scheduled: bool = False  # started by a deployment's schedule, not by the caller

    @property
    def overhead_s(self) -> float:
        return max(0.0, self.running_s - self.work_s) + self.pickup_s


@dataclass
class OrchestrationShare:
    wall_s: float
    runs: list[RunCost] = field(default_factory=list)

    @property
    def overhead_s(self) -> float:
        return sum(r.overhead_s for r in self.runs)

    @property
    def share(self) -> float:
        return self.overhead_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def path_overhead_s(self) -> float:
        """Orchestration of the runs the caller started (what it waited for)."""
        return sum(r.overhead_s for r in self.runs if not r.scheduled)

    @property
    def path_share(self) -> float:
        return self.path_overhead_s / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        work = sum(r.work_s for r in self.runs)
        pickup = sum(r.pickup_s for r in self.runs)
        by_flow: dict[str, list[RunCost]] = {}
        for r in self.runs:
            by_flow.setdefault(r.flow, []).append(r)
        flows = ", ".join(
            f"{name} {len(rs)} ({sum(r.overhead_s for r in rs):.1f} s)"
            for name, rs in sorted(by_flow.items(), key=lambda kv: -len(kv[1]))
        )
        sched = [r for r in self.runs if r.scheduled]
        return (
            f"{len(self.runs)} flow runs [{flows}]: {work:.1f} s in tasks, "
            f"{self.overhead_s - pickup:.1f} s in flow runs outside tasks, "
            f"{pickup:.1f} s worker pickup; orchestration {self.overhead_s:.1f} s = "
            f"{self.share * 100:.1f} % of {self.wall_s:.0f} s wall; on the path (the "
            f"{len(self.runs) - len(sched)} runs started and waited for) "
            f"{self.path_overhead_s:.1f} s = {self.path_share * 100:.1f} %, the other "
            f"{len(sched)} started by their schedules "
            f"({sum(r.overhead_s for r in sched):.1f} s, delaying nothing)"
        )


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def union_seconds(intervals: list[tuple[dt.datetime, dt.datetime]]) -> float:
    """Total length of the union of intervals, in seconds."""
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += (b - a).total_seconds()
            end = b
        elif b > end:
            total += (b - end).total_seconds()
            end = b
    return total


def orchestration_share(api_url: str, since: dt.datetime, wall_s: float) -> OrchestrationShare:
    now = dt.datetime.now(dt.UTC)
    out = OrchestrationShare(wall_s=wall_s)
    with PrefectRest(api_url) as client:
        flows = {f["id"]: f["name"] for f in client.paged("/flows/filter", {})}
        runs = client.paged(
            "/flow_runs/filter",
            {"flow_runs": {"start_time": {"after_": since.isoformat()}}},
        )
        for run in runs:
            if not run.get("start_time"):  # scheduled ahead, not started (the filter keeps them)
                continue
            tasks = client.paged("/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
            intervals = []
            for t in tasks:
                a, b = _ts(t.get("start_time")), _ts(t.get("end_time"))
                if a is not None:
                    intervals.append((a, b or now))
            running = float(run.get("total_run_time") or 0.0)
            if run.get("state_type") == "RUNNING" and run.get("estimated_run_time"):
                running = float(run["estimated_run_time"])
            start, expected = _ts(run.get("start_time")), _ts(run.get("expected_start_time"))
            pickup = 0.0
            if run.get("deployment_id") and start and expected and start > expected:
                pickup = (start - expected).total_seconds()
            out.runs.append(
                RunCost(
                    name=run["name"],
                    flow=flows.get(run["flow_id"], "?"),
                    running_s=running,
                    work_s=union_seconds(intervals),
                    pickup_s=pickup,
                    scheduled=bool(run.get("auto_scheduled")),
                )
            )
    return out
