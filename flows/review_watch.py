"""Review watch: every few minutes, look at the retrains waiting for review.

For each: read the reviews from Label Studio, publish the progress artifact, log edit rates
to the retrain's MLflow run, and resume the run when its drift classes' edit rate is
stable, every task is reviewed, or the review deadline has come.
"""

from __future__ import annotations

from prefect import flow

from cvloop.context import current
from flows.hooks import publish_failure
from tasks.review import watch_reviews_task


@flow(name="review-watch", log_prints=True, on_failure=[publish_failure])
def review_watch() -> list[dict]:
    """Check every retrain waiting for review; resume those that may go on."""
    return watch_reviews_task(current().params)


if __name__ == "__main__":
    review_watch()
