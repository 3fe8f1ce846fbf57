"""``cvloop schema``: the class list as a versioned schema, changed by commands (the
``schema-change`` flow), never by editing params.yaml."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cvloop.app.common import client_settings as _settings
from cvloop.app.common import me as _me

schema_app = typer.Typer(
    help="Show or change the class schema (add, rename, retire a class).", no_args_is_help=True
)

Why = Annotated[str, typer.Option(help="why (recorded in the schema log and the weekly review)")]
By = Annotated[str | None, typer.Option(help="who (default: you)")]


def _run(op: str, name: str, **kw) -> None:
    from cvloop.app.services import require_healthy

    settings = _settings()
    require_healthy(settings, ["mlflow", "prefect", "labelstudio"])
    from flows.schema import schema_change

    out = schema_change(op=op, name=name, **kw)
    print(json.dumps(out, indent=2))


@schema_app.command("show")
def show(as_json: Annotated[bool, typer.Option("--json", help="the whole log")] = False) -> None:
    """The current schema version, its classes and label policy, and how it got there."""
    from cvloop.app.common import client_context
    from cvloop.stages.schema import schema_log

    log = schema_log(client_context())
    if as_json:
        print(json.dumps([v.to_dict() for v in log.versions], indent=2))
        return
    s = log.current
    print(f"{s.tag}: {', '.join(f'{i}={c}' for i, c in enumerate(s.classes))} "
          f"(label policy v{s.label_policy_version})")  # fmt: skip
    for v in log.versions[1:]:
        c = v.history[-1]
        print(f"  schema-v{v.version}  {c.when}  {c.describe()}  by {c.who or '?'}"
              + (f": {c.why}" if c.why else ""))  # fmt: skip


@schema_app.command("add-class")
def add_class(
    name: Annotated[str, typer.Argument(help="the new class (lower case)")],
    seed: Annotated[
        list[str] | None,
        typer.Option("--seed", help="an example frame of it (image file or frame-store key)"),
    ] = None,
    camera: Annotated[
        list[str] | None, typer.Option("--camera", help="a camera that shows it")
    ] = None,
    why: Why = "",
    by: By = None,
) -> None:
    """Add a class: new schema version, labels kept, Label Studio updated; the next retrain
    routes its seed frames and likely frames to review and trains a resized head."""
    _run("add", name, seeds=seed, cameras=camera, why=why, who=by or _me())


@schema_app.command("rename-class")
def rename_class(
    old: Annotated[str, typer.Argument(help="the class now")],
    new: Annotated[str, typer.Argument(help="its new name (not an existing class)")],
    why: Why = "",
    by: By = None,
) -> None:
    """Rename a class: same id and boxes, new name everywhere."""
    _run("rename", old, new_name=new, why=why, who=by or _me())


@schema_app.command("retire-class")
def retire_class(
    name: Annotated[str, typer.Argument(help="the class to retire")],
    merge_into: Annotated[
        str | None,
        typer.Option("--merge-into", help="relabel its boxes as this class (default: drop)"),
    ] = None,
    why: Why = "",
    by: By = None,
) -> None:
    """Retire a class: its boxes are dropped, or merged into another class; the later ids
    shift down by one."""
    _run("retire", name, merge_into=merge_into, why=why, who=by or _me())
