"""``cvloop init`` (a project folder for a team) and ``cvloop adopt`` (its own detector,
labeled data and holdout as version 1: the adopt flow, reported to Prefect;
runbooks/adopt.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cvloop.app.common import client_settings as _settings


def adopt(
    checkpoint: Annotated[str, typer.Argument(help="the Ultralytics detection checkpoint (.pt)")],
    data: Annotated[
        str,
        typer.Option(
            help="labeled data: a YOLO data.yaml, a COCO JSON or a Label Studio JSON export"
        ),
    ],
    data_format: Annotated[
        str | None, typer.Option("--format", help="yolo | coco | label-studio (default: detected)")
    ] = None,
    images: Annotated[
        str | None,
        typer.Option(
            help="image folder of a COCO / Label Studio export (default: the JSON's folder)"
        ),
    ] = None,
    onnx: Annotated[
        str | None, typer.Option(help="its ONNX export (default: exported here)")
    ] = None,
    imgsz: Annotated[
        int | None, typer.Option(help="only if the checkpoint does not record it")
    ] = None,
    class_map: Annotated[
        list[str] | None,
        typer.Option(help="NAME=SCHEMA_NAME for a class the data spells differently (repeatable)"),
    ] = None,
    holdout: Annotated[
        str | None, typer.Option(help="your labeled holdout, in any of the formats")
    ] = None,
    holdout_format: Annotated[str | None, typer.Option()] = None,
    holdout_images: Annotated[str | None, typer.Option()] = None,
    holdout_frames: Annotated[
        int | None,
        typer.Option(
            help="carve a holdout of N frames out of --data (default: holdout.min_frames)"
        ),
    ] = None,
) -> None:
    """Make version 1 of everything from your own detector: the champion (checkpoint, its
    classes and imgsz), dataset v1, holdout v1; scored, registered, serving 100 %."""
    from cvloop.app.services import require_healthy

    require_healthy(_settings(), ["mlflow", "prefect"])
    from flows.adopt import adopt as adopt_flow

    version = adopt_flow(
        checkpoint=checkpoint, data=data, data_format=data_format, images_dir=images,
        onnx=onnx, imgsz=imgsz, class_map=class_map, holdout=holdout,
        holdout_format=holdout_format, holdout_images_dir=holdout_images,
        holdout_frames=holdout_frames,
    )  # fmt: skip
    print(f"champion: version {version} (adopted)")


def init(
    directory: Annotated[Path, typer.Argument(help="the project folder (made if missing)")] = Path(
        "."
    ),
    checkpoint: Annotated[
        str | None, typer.Option(help="read the classes and imgsz from your best.pt")
    ] = None,
    classes: Annotated[str | None, typer.Option(help="a,b,c (without --checkpoint)")] = None,
    imgsz: Annotated[int | None, typer.Option(help="without --checkpoint (default 640)")] = None,
    model_name: Annotated[
        str | None, typer.Option(help="the registered model (default: <folder>-detector)")
    ] = None,
    force: Annotated[bool, typer.Option(help="overwrite files that exist")] = False,
    check: Annotated[bool, typer.Option(help="only check an existing project")] = False,
) -> None:
    """Make a cvloop project for your own detector (params.yaml with your classes, .env,
    prefect.yaml, runbooks/, a git data repository), or check one. Never overwrites a
    file without --force."""
    from cvloop.app.init import describe, init_project

    rows = init_project(directory, checkpoint=checkpoint, classes=classes, imgsz=imgsz,
                        model_name=model_name, force=force, check=check)  # fmt: skip
    print(describe(rows, directory.resolve()))
    if any(r.action in ("missing", "invalid") for r in rows):
        raise typer.Exit(1)
