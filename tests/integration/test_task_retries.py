"""A task's retries are spent on errors that may pass by themselves (a service down), never
on bad input: the review queue of an empty window used to wait 70 s of retries before it
said "no frame was selected for review"."""

from __future__ import annotations

import pytest

from cvloop.core.errors import CvloopError


def _count_calls(error: Exception):
    from prefect import flow

    from tasks import stage_task

    calls: list[int] = []

    def stage(ctx, n: int) -> int:
        calls.append(n)
        raise error

    t = stage_task(stage, name="failing_stage", retries=2, retry_delay_seconds=0)

    @flow(name="retry-check")
    def check() -> None:
        t(1)

    with pytest.raises(type(error)):
        check()
    return len(calls)


def test_bad_input_fails_at_once_and_a_service_down_is_retried(stack_client_env):
    assert _count_calls(CvloopError("no frame was selected for review", fix="x")) == 1
    down = CvloopError("Label Studio at http://127.0.0.1:1 is not reachable", transient=True)
    assert _count_calls(down) == 3
    assert _count_calls(RuntimeError("an error cvloop did not name")) == 3
