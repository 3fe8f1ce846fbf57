"""``cvloop review``: the review queue from a terminal (the same as the Prefect UI and the
``review/watch`` deployment do)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cvloop.app.common import client_context
from cvloop.app.common import client_settings as _settings

review_app = typer.Typer(
    help="Review progress, edit rates, and the go that resumes a waiting retrain.",
    no_args_is_help=True,
)


@review_app.command("watch")
def watch() -> None:
    """Check every retrain waiting for review now; resume those that may go on."""
    from cvloop.app.services import require_healthy

    require_healthy(_settings(), ["prefect", "labelstudio"])
    from flows.review_watch import review_watch

    runs = review_watch()
    if not runs:
        print("no retrain is waiting for review")
    for r in runs:
        print(
            f"{r['flow_run_name']} {r['flow_run_id']} ({r['dataset_version']}): "
            f"{r['reviewed']}/{r['total']} "
            f"reviewed; {'resumed' if r['go'] else 'waits'}: {r['reason']}"
        )


@review_app.command("go")
def go(
    flow_run: Annotated[str, typer.Argument(help="the waiting retrain's flow run id")],
    reason: Annotated[str, typer.Option(help="why (kept in the run and MLflow)")] = "operator",
) -> None:
    """Resume a retrain waiting for review with what is reviewed so far."""
    from prefect.flow_runs import resume_flow_run

    _settings()
    resume_flow_run(flow_run, run_input={"go": True, "reason": f"an operator said go: {reason}"})
    print(f"resumed {flow_run}")


@review_app.command("simulate")
def simulate(
    dataset_version: Annotated[str, typer.Argument(help="e.g. dataset-v2 (its project)")],
    frames: Annotated[int | None, typer.Option(help="tasks to review; all if not set")] = None,
    plant_bad: Annotated[int, typer.Option(help="tasks given a bad box (for the demo)")] = 0,
) -> None:
    """Synthetic fleet only: review tasks with the fleet's ground truth, as a person would."""
    from cvloop.adapters.labelstudio import project_title
    from cvloop.sim.fleet.reviewer import simulate_review
    from cvloop.stages.schema import current_schema

    ctx = client_context()
    queue = ctx.labelstudio
    queue.check()
    title = project_title(dataset_version, ctx.params.registry.model_name)
    project = queue.ensure_project(title, list(current_schema(ctx).classes))
    size = ctx.params.fleet.image_size
    rep = simulate_review(
        queue,
        project,
        ctx.storage(ctx.settings.fleet_truth_uri),
        frames=frames,
        plant_bad=plant_bad,
        width=size,
        height=size,
    )
    print(json.dumps({"project": title, "submitted": rep.submitted, "planted": rep.planted,
                      "no_truth": rep.no_truth}, indent=2))  # fmt: skip
