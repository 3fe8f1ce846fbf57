"""Review stage (runbook step 4): progress and edit rates from Label Studio, the wait for
reviewers, and the watcher that resumes a waiting retrain when the edit rate is stable.

The retrain flow does not hold a worker while people review: run from a deployment it
*suspends* (the process exits; Prefect reschedules the run when it is resumed, and the
finished steps come back from their persisted results); run in-process it *pauses*. Either
way it waits for a :class:`ReviewGo` input, given

* by the ``review/watch`` deployment (every few minutes: reads Label Studio, publishes the
  progress artifact and edit rates, resumes the run when the drift classes' edit rate is
  stable, every task is reviewed, or the deadline has come), or
* by an operator: *Resume* on the paused run in the Prefect UI (the form asks go/reason),
  or ``cvloop review go``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cvloop.config.params import ReviewParams
from cvloop.core.errors import CvloopError
from cvloop.core.review import AgreementRule, DoubleLabel, decide, review_progress
from cvloop.stages.annotate import ReviewQueue

if TYPE_CHECKING:
    from cvloop.context import Context

REVIEW_PAUSE_KEY = "review"

DEADLINE_MARGIN_S = 900  # three runs of the review/watch schedule (every 300 s)


@dataclass(frozen=True)
class ReviewStatus:
    go: bool
    reason: str
    progress: dict  # ReviewProgress.as_dict()
    checked_at: str


def check_review(
    ctx: Context,
    queue: ReviewQueue,
    classes: list[str],
    watch: list[str],
    review: ReviewParams,
    *,
    operator_go: bool = False,
    deadline_passed: bool = False,
    complete_only: bool = False,
) -> ReviewStatus:
    """Read the reviews from Label Studio, compute edit rates, decide whether to go on.

    ``complete_only`` (a holdout refresh): only every task reviewed, an operator's go or the
    deadline end the review; a stable edit rate does not (a holdout must be exact)."""
    total, reviewed = ctx.labelstudio.reviewed(queue.project_id)
    progress = review_progress(
        ((r.predicted, r.final) for r in reviewed),
        total,
        classes,
        watch,
        window_frames=review.window_frames,
        stable_windows=review.stable_windows,
        stable_tolerance=review.stable_tolerance,
        frames_per_class=review.frames_per_class,
        iou_match=review.iou_match,
        moved_iou=review.moved_iou,
        doubles=[DoubleLabel(r.task_id, *r.double, r.resolved) for r in reviewed if r.double],
        agreement=AgreementRule(review.agreement_min, review.agreement_min_boxes, review.iou_match),
    )
    go, reason = decide(progress, operator_go=operator_go, deadline_passed=deadline_passed)
    if complete_only and go and reason.startswith("edit rate stable"):
        go, reason = (
            False,
            (f"every frame must be labeled: {progress.reviewed}/{progress.total_tasks}"),
        )
    return ReviewStatus(
        go, reason, progress.as_dict(), dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )


def review_markdown(queue: ReviewQueue, status: ReviewStatus) -> str:
    p = status.progress
    lines = [
        f"# Review progress: [{queue.title}]({queue.project_url})",
        "",
        f"**{p['reviewed']} / {p['total_tasks']}** frames reviewed; decision: "
        f"**{'go' if status.go else 'wait'}** ({status.reason}); checked {status.checked_at}.",
        "",
        f"Watched classes: {', '.join(p['watched']) or 'none'}",
        "",
        "| class | frames | edit rate | kept | moved | relabelled | deleted | added "
        "| window rates | stable | agreement (boxes) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in p["classes"].items():
        agree = c.get("agreement")
        lines.append(
            f"| {name} | {c['frames']} | {c['edit_rate']:.3f} | {c['kept']} | {c['moved']} | "
            f"{c['relabelled']} | {c['deleted']} | {c['added']} | "
            f"{', '.join(f'{w:.3f}' for w in c['windows'][-5:])} | "
            f"{'yes' if c['stable'] else 'no'} | "
            f"{'-' if agree is None else f'{agree:.3f}'} ({c.get('double_boxes', 0)}) |"
        )
    lines += ["", *agreement_lines(queue, p)]
    return "\n".join(lines) + "\n"


def agreement_lines(queue: ReviewQueue, p: dict) -> list[str]:
    """What the report says of two reviewers' agreement, with the frames to settle."""
    floor = p.get("min_agreement")
    if not p.get("double_frames"):
        return ["Inter-annotator agreement: not measured yet (no frame annotated by two "
                "reviewers; review.agreement_share sets how many frames get two)."]  # fmt: skip
    out = [f"Inter-annotator agreement: {p['double_frames']} frames annotated by two reviewers; "
           f"a class holds the review below {floor:.2f}."]  # fmt: skip
    for name in p.get("disagreeing") or []:
        tasks = p["classes"][name]["disagreements"]
        links = ", ".join(f"[{t}]({queue.project_url}?task={t})" for t in tasks[:20])
        out.append(f"- **{name}**: settle {len(tasks)} frames (mark the right annotation as "
                   f"ground truth, or delete the wrong one): {links}")  # fmt: skip
    return out


@dataclass(frozen=True)
class WatchedRun:
    flow_run_id: str
    flow_run_name: str
    dataset_version: str
    reviewed: int
    total: int
    go: bool
    reason: str


def ensure_reviewed(queue: ReviewQueue, status: ReviewStatus, go: bool, reason: str) -> int:
    """Stop here (clearly) if the review was called off or nothing was reviewed."""
    if go and status.progress["reviewed"]:
        return int(status.progress["reviewed"])
    raise CvloopError(
        f"review of {queue.title} ended with {status.progress['reviewed']} reviewed frames "
        f"({reason})",
        fix=f"review frames at {queue.project_url}, then run the retrain again: reviewed "
        "frames are kept and no task is imported twice",
    )
