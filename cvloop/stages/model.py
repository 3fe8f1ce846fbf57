"""Model stage: train, export, evaluate, register.

Each function takes and returns paths, run ids and small records, never a model object.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cvloop.adapters.training import EvalResult, evaluate, export_onnx, train
from cvloop.config.params import TrainParams
from registry.models import MODEL_ARTIFACT_DIR
from registry.names import CHAMPION, DEVICE, FLOW, FLOW_RUN_ID

if TYPE_CHECKING:
    from cvloop.context import Context


@dataclass(frozen=True)
class TrainedModel:
    run_id: str
    best_pt: str
    onnx: str
    classes: list[str]
    imgsz: int
    epochs_run: int
    train_seconds: float


def find_champion(ctx: Context) -> str | None:
    """The version the ``champion`` alias points to, or None."""
    return ctx.registry.alias_version(CHAMPION)


def resolve_model_source(model_yaml: str) -> str:
    """A model YAML shipped with cvloop (e.g. ``yolo11p.yaml``) or one Ultralytics knows."""
    from cvloop.adapters.models import model_yaml_path

    return model_yaml_path(model_yaml)


def training_dir(ctx: Context) -> str:
    """Where Ultralytics writes during training: under the cvloop home, never the cwd."""
    return str(ctx.settings.home / "training")


def start_training_run(
    ctx: Context, experiment: str, run_name: str, params: dict, tags: dict
) -> str:
    """Create the MLflow run that every later step of this model logs into. A run of the
    same name under the same parent still RUNNING belongs to an attempt whose process died
    (the retrain runs one training at a time): it is ended KILLED first, naming this one."""
    parent = tags.get("mlflow.parentRunId")
    key = {"mlflow.parentRunId": parent} if parent else None
    return start_run_again(ctx, experiment, run_name, params, tags, key)


def start_run_again(
    ctx: Context,
    experiment: str,
    run_name: str,
    params: dict | None,
    tags: dict,
    key: dict | None,
) -> str:
    """A new run, after ending the RUNNING runs of the same name and ``key`` tags (an
    attempt killed before it could end its run; no ``key``: nothing is ended)."""
    stale = (
        ctx.tracker.end_abandoned(
            experiment, run_name, key,
            f"its process died before the run ended; {run_name} was started again",
        )
        if key
        else []
    )  # fmt: skip
    run_id = ctx.tracker.start_run(experiment, run_name, params, tags)
    for old in stale:
        print(f"MLflow run {old} ({run_name}) was left RUNNING by a process that died: "
              f"ended KILLED; this attempt logs into {run_id}")  # fmt: skip
    return run_id


def start_retrain_run(
    ctx: Context, experiment: str, flow_run_id: str, run_name: str, tags: dict
) -> str:
    """The retrain's MLflow run (collection, review edit rates, dataset version, training
    and gates all log into it); the same flow run always gets the same MLflow run."""
    found = ctx.tracker.find_runs(experiment, tags={FLOW_RUN_ID: flow_run_id}, max_results=1)
    if found:
        return found[0].run_id
    return ctx.tracker.start_run(experiment, run_name, None,
                                 {FLOW: "retrain", FLOW_RUN_ID: flow_run_id} | tags)  # fmt: skip


def log_retrain_step(
    ctx: Context, run_id: str, metrics: dict[str, float], tags: dict[str, str]
) -> None:
    """Numbers and tags of a finished step onto the retrain's MLflow run."""
    ctx.tracker.log_metrics(run_id, metrics)
    ctx.tracker.set_tags(run_id, tags)


def train_model(
    ctx: Context,
    run_id: str,
    data_yaml: str,
    model_source: str,
    classes: list[str],
    out_dir: str,
    train_params: TrainParams,
    *,
    epochs: int | None = None,
    lr0: float | None = None,
) -> TrainedModel:
    """Train with ``params.yaml``'s ``train`` section (``epochs`` / ``lr0`` override it: the
    baseline's), export ONNX, and log best.pt, best.onnx, model.json and the plots to the
    run; each epoch's metrics go to the run as they come."""
    tracker = ctx.tracker
    imgsz = train_params.imgsz
    try:
        res = train(Path(data_yaml), model_source, Path(out_dir), run_id, train_params,
                    epochs=epochs, lr0=lr0,
                    on_epoch=lambda values, step: tracker.log_metrics(run_id, values, step=step))  # fmt: skip
        model_dir = Path(out_dir) / run_id / MODEL_ARTIFACT_DIR
        model_dir.mkdir(parents=True, exist_ok=True)
        pt = model_dir / "best.pt"
        shutil.copyfile(res.best_pt, pt)
        onnx = export_onnx(pt, imgsz, model_dir / "best.onnx")
        (model_dir / "model.json").write_text(
            json.dumps({"classes": classes, "imgsz": imgsz, "source": model_source}, indent=2)
        )
        tracker.log_folder(run_id, model_dir, MODEL_ARTIFACT_DIR)
        for plot in res.plots:
            tracker.log_file(run_id, plot, "plots")
        metrics, tags = res.lineage()
        tracker.log_metrics(run_id, metrics)
        tracker.set_tags(run_id, {DEVICE: res.device} | tags)
        if res.stopped_early:
            print(f"training stopped early at epoch {res.epochs_run} of {res.epochs_planned}: "
                  f"no gain for train.patience epochs (best epoch {res.best_epoch})")  # fmt: skip
    except BaseException:
        tracker.finish(run_id, "FAILED")
        raise
    return TrainedModel(run_id, str(pt), str(onnx), classes, imgsz, res.epochs_run, res.seconds)


def evaluate_model(
    ctx: Context,
    run_id: str | None,
    weights: str,
    data_yaml: str,
    imgsz: int,
    prefix: str,
    device: str = "auto",
    out_dir: str | None = None,
) -> EvalResult:
    """Evaluate a model file on a dataset and, given a run, log the metrics to it."""
    result = evaluate(
        Path(weights),
        Path(data_yaml),
        imgsz=imgsz,
        device=device,
        out_dir=Path(out_dir) if out_dir else None,
        name=prefix,
    )
    if run_id:
        ctx.tracker.log_metrics(run_id, result.as_metrics(prefix))
    return result


def register_model(
    ctx: Context,
    run_id: str,
    trained: TrainedModel,
    lineage: dict[str, str],
    holdout: EvalResult,
    extra_tags: dict[str, str],
    aliases: list[str],
    description: str,
) -> str:
    """Register the run's model with lineage tags, as one transaction
    (:func:`registry.registration.register`); ``aliases`` move once all tags are on."""
    from registry.registration import register

    return register(
        ctx.registry, ctx.tracker, run_id, pt=trained.best_pt, onnx=trained.onnx,
        classes=trained.classes, imgsz=trained.imgsz, lineage=lineage,
        holdout={"map50_95": holdout.map50_95, "map50": holdout.map50,
                 "per_class_ap50_95": holdout.per_class_ap50_95},
        extra_tags=extra_tags, aliases=aliases, description=description,
    )  # fmt: skip


@dataclass(frozen=True)
class ChampionRef:
    """The champion a flow run works against, resolved once at its start (its files fetched
    and sha256-verified): every stage of the run — prefilter, pre-annotation, fine-tune,
    evaluation — uses this one, even when the alias moves during a review that lasts days."""

    version: str
    pt: str
    onnx: str
    classes: list[str]
    imgsz: int
    model_name: str = ""

    @property
    def label(self) -> str:
        """``<registered model>/<version>``: the model version Label Studio records."""
        return f"{self.model_name}/{self.version}"


def resolve_champion(ctx: Context) -> ChampionRef:
    """The champion's files from the registry (sha256 verified on fetch)."""
    reg = ctx.registry
    m = reg.fetch_alias(CHAMPION)
    return ChampionRef(m.version, str(m.pt), str(m.onnx), m.classes, m.imgsz, reg.name)
