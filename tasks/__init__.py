"""Prefect tasks: thin wrappers over the stage functions of ``cvloop/stages/``.

One module per runbook stage; a task module never imports another (the import contract in
``pyproject.toml``). A stage function that reaches an outside system takes the
:class:`~cvloop.context.Context` first; :func:`stage_task` makes it a task whose parameters
are the others (what Prefect shows, caches and persists), and hands it the context of the
running flow run (:func:`cvloop.context.current`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from prefect import task


def retry_transient(task, task_run, state) -> bool:
    """Prefect's ``retry_condition_fn``: retry a failed task only when the error may pass
    by itself (a service down or busy: ``CvloopError.transient``, or an error cvloop did not
    name). Bad input, a refused token or a missing version fails at once: a retry would
    repeat it and only delay the message."""
    from cvloop.core.errors import CvloopError

    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # the result cannot be read back: retry, as without a condition
        return True
    return not isinstance(exc, CvloopError) or exc.transient


def stage_task(fn: Callable[..., Any], **options: Any):
    """A Prefect task over ``fn(ctx, ...)``: called with the other arguments, it runs
    ``fn(current(), ...)``. ``options`` are :func:`prefect.task`'s (name, retries, ...);
    with retries, only transient errors are retried (:func:`retry_transient`)."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if not params or params[0].name != "ctx":
        raise TypeError(f"{fn.__qualname__} does not take the context first")

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        from cvloop.context import current

        return fn(current(), *args, **kwargs)

    run.__signature__ = sig.replace(parameters=params[1:])  # type: ignore[attr-defined]
    run.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k != "ctx"}
    if options.get("retries"):
        options.setdefault("retry_condition_fn", retry_transient)
    return task(run, **options)
