"""The review gate: runbook step 4 and the start of 5, shared by the retrain and the
quarterly holdout refresh.

Check the review queue; wait for the reviewers — the flow run *suspends* (no process waits,
``review/watch`` or an operator resumes it); read the schema again (it may have changed
during a review that lasts days); record progress and edit rates; fail clearly if nothing
was reviewed; export the reviews and validate them (Great Expectations), quarantining what
breaks a rule.

It is a function of the calling flow, not a subflow: Prefect suspends the flow run that
calls ``suspend_flow_run``, and it is the retrain (or the refresh) run that must exit and be
resumed, its finished steps coming back from their persisted results.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvloop.config.params import Params
from cvloop.core.schema import ClassSchema
from cvloop.stages.annotate import ReviewQueue
from cvloop.stages.dataset import ValidatedReviews
from tasks.dataset import export_reviews_task, publish_validation_report, validate_reviews_task
from tasks.review import (
    ReviewGo,
    check_review_task,
    ensure_reviewed_task,
    record_review_task,
    wait_for_review,
)
from tasks.schema import current_schema_task


@dataclass(frozen=True)
class Reviewed:
    """What the review gate hands on: the schema the labels follow now, the go (with its
    reason), the validated reviews."""

    schema: ClassSchema
    go: ReviewGo
    validated: ValidatedReviews


def review_gate(
    p: Params,
    queue: ReviewQueue,
    watched: list[str],
    mlflow_run: str | None,
    *,
    complete_only: bool = False,
) -> Reviewed:
    """Wait for the review of ``queue``, then validate it. ``watched``: the classes whose edit
    rate must settle (the drift and new classes); ``complete_only`` (a holdout): only every
    frame reviewed, the deadline or an operator end the wait."""
    r = p.review
    # 4. wait for the reviewers: until the watched classes' edit rate is stable (or go)
    schema = current_schema_task()
    status = check_review_task(queue, list(schema.classes), watched, r, complete_only=complete_only)
    go = wait_for_review(status, r.deadline_hours, r.poll_seconds)
    # the schema may have changed while the frames were in review: read it again
    schema = current_schema_task()
    status = check_review_task(queue, list(schema.classes), watched, r, operator_go=go.go,
                               complete_only=complete_only)  # fmt: skip
    record_review_task(queue, status, mlflow_run)
    ensure_reviewed_task(queue, status, go.go, go.reason)
    # 5a. validate the annotations (Great Expectations): what breaks a rule is quarantined
    export = export_reviews_task(queue, r, watched)
    validated = validate_reviews_task(export, list(schema.classes), p.validate_)
    publish_validation_report(validated)
    return Reviewed(schema, go, validated)
