"""Inter-annotator agreement on the real Label Studio: a review queue gives its configured
share of tasks to two reviewers (Label Studio's overlap cohort), two people who read a box as
two classes hold the review however complete it is, and the ML lead settles it in Label
Studio (marks the right annotation as ground truth, or deletes the wrong one): the review
goes on, and the label that trains is the settled one."""

from __future__ import annotations

import uuid

import pytest

from cvloop.adapters.labelstudio import TaskSpec
from cvloop.core.frames import LabelBox
from tests.conftest import context

CRATE = LabelBox("crate", 0.4, 0.4, 0.3, 0.3)
AS_CONE = LabelBox("cone", 0.4, 0.4, 0.3, 0.3)  # the same object, read as another class


@pytest.fixture()
def queue_and_project(stack_client_env):
    ctx = context()
    queue = ctx.labelstudio
    title = f"cvloop agreement {uuid.uuid4().hex[:8]}"
    project = queue.ensure_project(title, ["crate", "cone"], double_share=0.5)
    try:
        yield ctx, queue, project, title
    finally:
        queue.client.projects.delete(id=project)


def test_two_reviewers_who_disagree_hold_the_review_until_it_is_settled(queue_and_project):
    from cvloop.stages.annotate import ReviewQueue
    from cvloop.stages.review import check_review, review_markdown

    ctx, queue, project, title = queue_and_project
    settings = queue.client.projects.get(id=project)
    assert (settings.maximum_annotations, settings.overlap_cohort_percentage) == (2, 50)
    specs = [TaskSpec(f"{i:064x}", f"/data/x{i}.jpg", 100, 100, [CRATE], [0.9]) for i in range(8)]
    assert queue.import_tasks(project, specs, "m/1", 3).imported == 8
    doubles = queue.double_labeled(project)
    assert len(doubles) == 4, doubles  # Label Studio's cohort: half of the tasks, two reviewers

    # the share follows params on an existing project (and leaves it alone when not given)
    queue.ensure_project(title, ["crate", "cone"], double_share=0.25)
    assert queue.client.projects.get(id=project).overlap_cohort_percentage == 25
    queue.ensure_project(title, ["crate", "cone"])
    assert queue.client.projects.get(id=project).overlap_cohort_percentage == 25
    queue.ensure_project(title, ["crate", "cone"], double_share=0.5)
    doubles = queue.double_labeled(project)
    assert len(doubles) == 4

    ada = queue.ensure_user("ada@agreement.test", "Ada", "Reviewer")
    bo = queue.ensure_user("bo@agreement.test", "Bo", "Reviewer")
    disputed = sorted(doubles)[:2]
    for tid, _, _ in queue.tasks(project):
        queue.submit(tid, [CRATE], 100, 100, completed_by=ada)
        if tid in doubles:  # Bo reads two of the crates as cones
            queue.submit(tid, [AS_CONE if tid in disputed else CRATE], 100, 100, completed_by=bo)

    rq = ReviewQueue(project, queue.project_url(project), title, "dataset-v99", "m/1", 8, 8, 0,
                     "runs/retrain/agreement-test")  # fmt: skip
    review = ctx.params.review.model_copy(update={"agreement_min_boxes": 4})

    def check():
        return check_review(ctx, rq, ["crate", "cone"], ["crate"], review)

    status = check()
    p = status.progress
    assert p["reviewed"] == 8 and p["double_frames"] == 4
    # crate: Ada 4 boxes, Bo 2 -> 2 pairs agree, F1 = 4/6
    assert p["classes"]["crate"]["agreement"] == pytest.approx(0.6667, abs=1e-4)
    assert p["classes"]["crate"]["disagreements"] == disputed
    assert not status.go and "reviewers disagree" in status.reason, status.reason
    assert "crate: 0.67 over 6 boxes on 4 frames, 2 unresolved" in status.reason
    md = review_markdown(rq, status)
    assert "| crate | 8 |" in md and "0.667 (6) |" in md
    for tid in disputed:
        assert f"{rq.project_url}?task={tid}" in md

    # the ML lead settles the first frame: Ada's annotation is marked ground truth; the second:
    # Bo's annotation is deleted
    first, second = disputed
    anns = {a.completed_by: a.id for a in queue.client.annotations.list(id=first)}
    queue.client.annotations.update(id=anns[ada], ground_truth=True)
    anns = {a.completed_by: a.id for a in queue.client.annotations.list(id=second)}
    queue.client.annotations.delete(id=anns[bo])

    status = check()
    assert status.go and status.reason == "all 8 tasks reviewed", status.reason
    assert status.progress["classes"]["crate"]["disagreements"] == []
    # the label that trains is the settled one, though Bo's annotation of it is the newest
    _, reviewed = queue.reviewed(project)
    settled = {r.task_id: r for r in reviewed}
    assert [b.label for b in settled[first].final] == ["crate"] and settled[first].resolved
    assert settled[first].double is not None  # still measured: the agreement stays honest
    assert [b.label for b in settled[second].final] == ["crate"]
    assert settled[second].double is None
