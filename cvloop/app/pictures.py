"""Pictures of what ran, drawn from the Prefect API (no browser needed): a flow run as a
timeline of its task runs — the shape of the Prefect UI's run graph — for the README and
for reports.

``cvloop picture flow-run <id> --out FILE.png``
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cvloop.adapters.prefect_rest import PrefectRest
from cvloop.app.orchestration import _ts

STATE_COLOURS = {
    "COMPLETED": "#2e9d5b",
    "FAILED": "#d64545",
    "CRASHED": "#d64545",
    "CANCELLED": "#888888",
    "RUNNING": "#3b7dd8",
    "PAUSED": "#e0a030",
    "PENDING": "#bbbbbb",
}


def _short(name: str) -> str:
    """A task run's name without Prefect's suffix (``collect_frames-a3f`` -> ``collect_frames``)."""
    head, _, tail = name.rpartition("-")
    hexish = len(tail) == 3 and all(c in "0123456789abcdef" for c in tail)
    return head if head and (tail.isdigit() or hexish) else name


def flow_run_picture(api_url: str, flow_run_id: str, out: Path, max_rows: int = 40) -> Path:
    """A PNG timeline of ``flow_run_id``'s task runs (and the states of the run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    now = dt.datetime.now(dt.UTC)
    with PrefectRest(api_url) as client:
        run = client.get(f"/flow_runs/{flow_run_id}")
        flow = client.get(f"/flows/{run['flow_id']}")["name"]
        states = client.get("/flow_run_states/", params={"flow_run_id": flow_run_id})
        tasks = client.paged(
            "/task_runs/filter",
            {"flow_runs": {"id": {"any_": [flow_run_id]}}, "sort": "EXPECTED_START_TIME_ASC"},
        )
    rows = [t for t in tasks if t.get("start_time")]
    rows.sort(key=lambda t: t["start_time"])
    if len(rows) > max_rows:  # the longest ones tell the story
        keep = sorted(rows, key=lambda t: -(t.get("total_run_time") or 0))[:max_rows]
        rows = [t for t in rows if t in keep]
    fig_h = 1.2 + 0.28 * max(1, len(rows))
    fig, ax = plt.subplots(figsize=(11, fig_h))
    for i, t in enumerate(rows):
        a, b = _ts(t["start_time"]), _ts(t.get("end_time")) or now
        width = max((b - a).total_seconds(), 0.5) / 86400
        ax.barh(
            i,
            width,
            left=mdates.date2num(a),
            color=STATE_COLOURS.get(t.get("state_type"), "#999999"),
            height=0.7,
        )
        secs = (b - a).total_seconds()
        ax.text(
            mdates.date2num(b),
            i,
            f"  {_short(t['name'])}  {secs:.1f} s"
            if secs < 120
            else f"  {_short(t['name'])}  {secs / 60:.1f} min",
            va="center",
            fontsize=7,
        )
    # paused / suspended spans of the run (waiting for people, not work)
    spans, paused_at = [], None
    for s in sorted(states, key=lambda s: s["timestamp"]):
        if s["type"] == "PAUSED" and paused_at is None:
            paused_at = _ts(s["timestamp"])
        elif s["type"] != "PAUSED" and paused_at is not None:
            spans.append((paused_at, _ts(s["timestamp"])))
            paused_at = None
    for a, b in spans:
        ax.axvspan(mdates.date2num(a), mdates.date2num(b), color="#e0a030", alpha=0.15)
        ax.text(mdates.date2num(a), -0.9, " suspended: review in Label Studio", fontsize=7)
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    start, end = _ts(run.get("start_time")), _ts(run.get("end_time")) or now
    total = (end - start).total_seconds() if start else 0.0
    ax.set_title(
        f"flow run {flow}/{run['name']} — {run['state_name']}, {total / 60:.1f} min wall, "
        f"{(run.get('total_run_time') or 0) / 60:.1f} min running, {len(tasks)} task runs",
        fontsize=9,
        loc="left",
    )
    ax.set_xlabel("time (UTC); bars: task runs (green completed, red failed)", fontsize=8)
    ax.margins(x=0.25)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
