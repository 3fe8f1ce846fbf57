"""Pre-annotation stage (runbook step 3): the champion's boxes at conf >= 0.5 go to Label
Studio's review queue, one project per dataset version."""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from cvloop.adapters.frame_keys import VIDEO_KEY_SEP, read_frame
from cvloop.adapters.labelstudio import TaskSpec, image_url, project_title
from cvloop.core.frames import LabelBox

if TYPE_CHECKING:
    from cvloop.context import Context
    from cvloop.stages.model import ChampionRef

DERIVED_PREFIX = "derived"


@dataclass(frozen=True)
class ReviewQueue:
    """Where the frames of this retrain are reviewed."""

    project_id: int
    project_url: str
    title: str
    dataset_version: str  # the version these reviews will become, e.g. dataset-v3
    model_version: str  # the model that pre-annotated, e.g. cvloop-detector/4
    tasks: int
    imported: int
    skipped: int
    run_base: str  # runs/retrain/<flow run id>
    mlflow_run_id: str | None = None  # the retrain's MLflow run (edit rates go there)


def image_key(store, key: str) -> str:
    """A frame key Label Studio can load: sampled video frames are written out as JPEGs
    (``derived/<video key>/<ms>.jpg``, once)."""
    if VIDEO_KEY_SEP not in key:
        return key
    video, offset = key.split(VIDEO_KEY_SEP)
    derived = f"{DERIVED_PREFIX}/{video}/{offset}.jpg"
    if not store.exists(derived):
        store.put_bytes(derived, read_frame(store, key))
    return derived


def _size(jpeg: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as im:
        return im.size


def task_specs(
    store, rows: list[dict], conf: float, translate: dict[str, str | None] | None = None
) -> list[TaskSpec]:
    """Review tasks for the selected frames: image URL, identity, pre-annotation >= conf.

    ``translate`` (from the schema log) gives the champion's class names their current
    names (a class renamed or merged since it was trained; None: retired, not proposed)."""
    from cvloop.core.frames import content_hash

    translate = translate or {}
    specs = []
    for row in rows:
        key = image_key(store, row["key"])
        data = store.get_bytes(key)
        width, height = _size(data)
        dets = [
            {**d, "label": translate.get(d["label"], d["label"])}
            for d in row.get("detections") or []
            if d["conf"] >= conf
        ]
        dets = [d for d in dets if d["label"] is not None]
        specs.append(
            TaskSpec(
                sha256=content_hash(data),
                image=image_url(store, key),
                width=width,
                height=height,
                boxes=[LabelBox(d["label"], d["cx"], d["cy"], d["w"], d["h"]) for d in dets],
                scores=[d["conf"] for d in dets],
                meta={
                    "key": row["key"],
                    "image_key": key,
                    "camera": row["camera"],
                    "captured": dt.datetime.fromtimestamp(row["ts_ms"] / 1000, dt.UTC).isoformat(
                        timespec="seconds"
                    ),
                    "ts_ms": int(row["ts_ms"]),
                    "why": "; ".join(row["why"]),
                },
            )
        )
    return specs


def push_to_label_studio(
    ctx: Context,
    run_base: str,
    selected_key: str,
    champion: ChampionRef,
    dataset_version: str,
    classes: list[str],
    conf: float,
    batch_size: int,
    mlflow_run_id: str | None = None,
    description: str = "",
) -> ReviewQueue:
    """Create (or find) the project of ``dataset_version``, connect the frame store, import
    the selected frames with the champion's pre-annotations; frames already there are
    skipped (identity = content hash), so a re-run adds no duplicate. Label Studio gives
    ``review.agreement_share`` of the tasks to two reviewers (inter-annotator agreement)."""
    from cvloop.adapters.parquet import read_parquet

    store = ctx.store
    rows = read_parquet(store.get_bytes(selected_key)).to_pylist()
    if not rows:
        from cvloop.core.errors import CvloopError

        raise CvloopError(
            f"no frame was selected for review ({selected_key} is empty): the window held no "
            f"readable production frames in the frame store {store.uri}",
            fix="check that the fleet's frames reach the store (CVLOOP_STORAGE_URI) and the "
            "collect window (collect.days, window_end); the collect and selection reports "
            "of this run say what was found",
        )
    model_version = champion.label
    queue = ctx.labelstudio
    queue.check()
    title = project_title(dataset_version, ctx.params.registry.model_name)
    project = queue.ensure_project(
        title,
        classes,
        description or f"cvloop review queue for {dataset_version}",
        double_share=ctx.params.review.agreement_share,
    )
    queue.connect_storage(project, store)
    from cvloop.stages.schema import schema_log

    specs = task_specs(store, rows, conf, schema_log(ctx).translate())

    def progress(done: int, total: int) -> None:
        print(f"label studio: imported {done}/{total} tasks into {title!r}")

    result = queue.import_tasks(project, specs, model_version, batch_size, progress)
    out = ReviewQueue(
        project,
        queue.project_url(project),
        title,
        dataset_version,
        model_version,
        result.total,
        result.imported,
        result.skipped,
        run_base,
        mlflow_run_id,
    )
    store.put_text(f"{run_base}/review-queue.json", json.dumps(asdict(out), indent=2))
    return out


def next_dataset_version(ctx: Context) -> str:
    """``dataset-v<n+1>``: the name the reviewed frames will be versioned under."""
    from cvloop.adapters.versioning import next_version

    return f"dataset-v{next_version(ctx.data_repo, 'dataset')}"
