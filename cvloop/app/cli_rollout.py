"""``cvloop status | approve | rollback | rollout``: production from a terminal.

``cvloop status`` answers "which checkpoint is in prod, trained on what?" in one screen;
the others are the people's levers on a rollout (the ``rollout/tick`` deployment does the
rest every few minutes).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cvloop.app.common import client_context
from cvloop.app.common import client_settings as _settings
from cvloop.app.common import me as _me
from registry.names import APPROVED_BY, REJECTED_BY

rollout_app = typer.Typer(
    help="Start a rollout or run one tick of it now (deployment rollout/tick runs it).",
    no_args_is_help=True,
)


def status(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
    history: Annotated[int, typer.Option(help="rollout changes to show")] = 10,
) -> None:
    """What serves production at what share; for each version its training run, dataset
    version and DVC hash, git commit, params, holdout metrics, gates, benchmark, approval;
    the rollout history."""
    from cvloop.stages.status import production_status, status_text

    s = production_status(client_context(), history)
    print(json.dumps(s, indent=2, default=str) if as_json else status_text(s))


def approve(
    version: Annotated[str, typer.Argument(help="model version (MLflow)")],
    by: Annotated[str | None, typer.Option(help="approver's name (default: you)")] = None,
    reject: Annotated[
        bool, typer.Option("--reject", help="reject: the rollout rolls back")
    ] = False,
    note: Annotated[str, typer.Option(help="why")] = "",
) -> None:
    """The ML lead's approval before 100 %: sets the model version's tag
    `cvloop.approved_by` (or `cvloop.rejected_by`), as the MLflow UI would."""
    from cvloop.stages.rollout import approve as do_approve

    tags = do_approve(client_context(), version, by or _me(), reject=reject, note=note)
    key = REJECTED_BY if reject else APPROVED_BY
    print(f"v{version}: {key} = {tags[key]} (the next rollout tick acts on it)")


def rollback(
    reason: Annotated[str, typer.Option(help="why (recorded in the manifest history)")],
    by: Annotated[str | None, typer.Option(help="who (default: you)")] = None,
) -> None:
    """Roll back now: a rollout in progress goes back to its champion; otherwise the
    champion goes back to the previous champion."""
    from cvloop.stages.rollout import rollback_now

    out = rollback_now(client_context(), reason, by or _me())
    print(f"rolled back v{out.get('rolled_back') or out['manifest']['extra'].get('rolled_back')}: "
          f"v{out['champion']} serves 100 %")  # fmt: skip


@rollout_app.command("start")
def start(
    version: Annotated[str | None, typer.Argument(help="default: the `challenger` alias")] = None,
    reason: Annotated[str, typer.Option(help="why")] = "",
    force: Annotated[
        bool,
        typer.Option(
            help="start a version rolled back before, or one gated against an older champion"
        ),
    ] = False,
) -> None:
    """Start the rollout of a version that passed every gate (first stage share)."""
    from cvloop.stages.rollout import start_rollout

    out = start_rollout(client_context(), version, _me(), reason, force)
    split = ", ".join(f"v{a['version']} {a['share']:g}%" for a in out["manifest"]["allocations"])
    print(f"{out['status']}: {split}")


@rollout_app.command("tick")
def tick() -> None:
    """One rollout step now: canary, then hold / advance / await approval / promote /
    roll back (the rollout flow, reported to Prefect)."""
    from cvloop.app.services import require_healthy

    settings = _settings()
    require_healthy(settings, ["mlflow", "prefect"])
    from flows.rollout import rollout

    out = rollout(who=_me())
    print(json.dumps(out, indent=2, default=str))


def weekly(
    days: Annotated[int, typer.Option(help="the days before now")] = 7,
) -> None:
    """The weekly review now: is anything red? did the deployment change, and why?
    (deployment weekly-review/weekly runs it on Mondays)."""
    from cvloop.app.services import require_healthy

    settings = _settings()
    require_healthy(settings, ["mlflow", "prefect"])
    from flows.weekly_review import weekly_review

    print(weekly_review(days=days)["markdown"])
