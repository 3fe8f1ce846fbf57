"""One writer of the data repository at a time, whatever started it (deployment, CLI, demo):
the stage functions that write versions, tags or the schema log run holding
:meth:`cvloop.adapters.versioning.DataRepo.writing`."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from cvloop.context import Context

F = TypeVar("F", bound=Callable[..., Any])


def writes_data_repo(what: str) -> Callable[[F], F]:
    """Make the stage function ``fn(ctx, ...)`` run holding the data repository
    (:meth:`cvloop.adapters.versioning.DataRepo.writing`): every writer of versions, tags and
    the schema log goes through it, whatever started it (deployment, CLI, demo)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(ctx: Context, *args: Any, **kwargs: Any) -> Any:
            flow_run = os.environ.get("PREFECT__FLOW_RUN_ID")
            who = f"{what}" + (f" (flow run {flow_run})" if flow_run else "")
            with ctx.data_repo.writing(who):
                return fn(ctx, *args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap
