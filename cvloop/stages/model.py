"""Model stage: train, export, evaluate, register.

Each function takes and returns paths, run ids and small records, never a model object.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from cvloop.adapters.training import EvalResult, evaluate, export_onnx, train
from registry.models import MODEL_ARTIFACT_DIR, ModelRegistry, sha256_file
from registry.names import (
    DEVICE,
    FLOW,
    FLOW_RUN_ID,
    HOLDOUT_MAP50,
    HOLDOUT_MAP50_95,
    HOLDOUT_PER_CLASS,
    LINEAGE_TAGS,
    REGISTERED_VERSION,
    REGISTRATION,
)


@dataclass(frozen=True)
class TrainedModel:
    run_id: str
    best_pt: str
    onnx: str
    classes: list[str]
    imgsz: int
    epochs_run: int
    train_seconds: float


def _client():
    from mlflow import MlflowClient

    from cvloop.config.settings import load_settings

    uri = load_settings().mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def find_champion(model_name: str | None = None) -> str | None:
    """The version the ``champion`` alias points to, or None."""
    from registry.names import CHAMPION

    return ModelRegistry.from_settings(model_name).alias_version(CHAMPION)


def resolve_model_source(model_yaml: str) -> str:
    """A model YAML shipped with cvloop (e.g. ``yolo11p.yaml``) or one Ultralytics knows."""
    from cvloop.adapters.models import model_yaml_path

    return model_yaml_path(model_yaml)


def training_dir() -> str:
    """Where Ultralytics writes during training: under the cvloop home, never the cwd."""
    from cvloop.config.settings import load_settings

    return str(load_settings().home / "training")


def start_training_run(experiment: str, run_name: str, params: dict, tags: dict) -> str:
    """Create the MLflow run that every later step of this model logs into."""
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
    for k, v in params.items():
        client.log_param(run.info.run_id, k, v)
    return run.info.run_id


def start_retrain_run(experiment: str, flow_run_id: str, run_name: str, tags: dict) -> str:
    """The retrain's MLflow run (collection, review edit rates, dataset version, training
    and gates all log into it); the same flow run always gets the same MLflow run."""
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`cvloop.flow_run_id` = '{flow_run_id}'", max_results=1
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        exp_id,
        run_name=run_name,
        tags={FLOW: "retrain", FLOW_RUN_ID: flow_run_id} | {k: str(v) for k, v in tags.items()},
    )
    return run.info.run_id


def log_retrain_step(run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
    """Numbers and tags of a finished step onto the retrain's MLflow run."""
    client = _client()
    for k, v in metrics.items():
        client.log_metric(run_id, k, float(v))
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))


def train_model(
    run_id: str,
    data_yaml: str,
    model_source: str,
    classes: list[str],
    out_dir: str,
    *,
    epochs: int,
    lr0: float,
    imgsz: int,
    batch: int,
    device: str,
    workers: int,
    patience: int,
    seed: int,
) -> TrainedModel:
    """Train, export ONNX, and log best.pt, best.onnx, model.json and the plots to the run."""
    client = _client()
    try:
        res = train(
            Path(data_yaml),
            model_source,
            Path(out_dir),
            run_id,
            epochs=epochs,
            lr0=lr0,
            imgsz=imgsz,
            batch=batch,
            device=device,
            workers=workers,
            patience=patience,
            seed=seed,
            mlflow_client=client,
            mlflow_run_id=run_id,
        )
        model_dir = Path(out_dir) / run_id / MODEL_ARTIFACT_DIR
        model_dir.mkdir(parents=True, exist_ok=True)
        pt = model_dir / "best.pt"
        shutil.copyfile(res.best_pt, pt)
        onnx = export_onnx(pt, imgsz, model_dir / "best.onnx")
        (model_dir / "model.json").write_text(
            json.dumps({"classes": classes, "imgsz": imgsz, "source": model_source}, indent=2)
        )
        client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_DIR)
        for plot in res.plots:
            client.log_artifact(run_id, str(plot), "plots")
        client.log_metric(run_id, "train.seconds", res.seconds)
        client.log_metric(run_id, "train.epochs_run", res.epochs_run)
        client.set_tag(run_id, DEVICE, res.device)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    return TrainedModel(run_id, str(pt), str(onnx), classes, imgsz, res.epochs_run, res.seconds)


def evaluate_model(
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
        client = _client()
        for k, v in result.as_metrics(prefix).items():
            client.log_metric(run_id, k, v)
    return result


def register_model(
    run_id: str,
    trained: TrainedModel,
    lineage: dict[str, str],
    holdout: EvalResult,
    extra_tags: dict[str, str],
    model_name: str,
    aliases: list[str],
    description: str,
) -> str:
    """Register the run's model with lineage tags; set ``aliases`` once all tags are on."""
    reg = ModelRegistry.from_settings(model_name)
    tags = {LINEAGE_TAGS[k]: v for k, v in lineage.items() if k in LINEAGE_TAGS}
    tags.update(
        {
            LINEAGE_TAGS["training_run"]: run_id,
            LINEAGE_TAGS["sha256_pt"]: sha256_file(Path(trained.best_pt)),
            LINEAGE_TAGS["sha256_onnx"]: sha256_file(Path(trained.onnx)),
            LINEAGE_TAGS["classes"]: json.dumps(trained.classes),
            LINEAGE_TAGS["imgsz"]: str(trained.imgsz),
            HOLDOUT_MAP50_95: f"{holdout.map50_95:.4f}",
            HOLDOUT_MAP50: f"{holdout.map50:.4f}",
            HOLDOUT_PER_CLASS: json.dumps(
                {k: round(v, 4) for k, v in holdout.per_class_ap50_95.items()}
            ),
        }
    )
    tags.update(extra_tags)
    # One transaction: the version is created with every tag and marked pending, the aliases
    # move, then it is marked complete. Any error on the way deletes what this call created
    # (a version, an alias), so no half-registered challenger is left; a crash (no chance to
    # clean up) leaves a pending version of this run, which the re-run completes.
    version = _existing_version(reg, run_id)
    created = version is None
    before = {alias: reg.alias_version(alias) for alias in aliases}
    try:
        if created:
            version = reg.register(run_id, {**tags, REGISTRATION: "pending"}, description)
        else:
            reg.set_tags(version, tags)
        for alias in aliases:
            reg.set_alias(alias, version)
        reg.set_tags(version, {REGISTRATION: "complete"})
    except BaseException:
        if created and version is not None:
            reg.delete_version(version)
            for alias, previous in before.items():  # the alias goes back where it was
                if previous is not None and previous != version:
                    try:
                        reg.set_alias(alias, previous)
                    except Exception:
                        pass
        raise
    client = _client()
    client.set_tag(run_id, REGISTERED_VERSION, version)
    client.set_terminated(run_id, status="FINISHED")
    return version


def _existing_version(reg: ModelRegistry, run_id: str) -> str | None:
    """A version already registered from this run (a re-run after a crash reuses it)."""
    for mv in reg.client.search_model_versions(f"name='{reg.name}' and run_id='{run_id}'"):
        return str(mv.version)
    return None
