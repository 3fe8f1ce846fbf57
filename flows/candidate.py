"""Candidate: the model half of the runbook (steps 6–8) on a dataset version.

The retrain flow runs these steps right after it versions dataset v_n+1 (:func:`train_and_gate`
is called from it, in the same flow run, so a resumed retrain finds its finished steps
cached). The ``candidate`` flow runs them on their own, on a dataset version that already
exists: to try again after a rejection (more epochs, another learning rate), or to
reproduce a registered model.

6. fine-tune from the champion's best.pt (resolved through the ``champion`` alias, sha256
   verified); 7. score champion and candidate on the same frames (holdout, each drift slice,
   the slices pooled, the clean part), export ONNX (+ TensorRT on CUDA) and benchmark, gate
   (fails closed); 8. register the candidate either way, alias ``challenger`` only when
   every gate passed.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.runtime import flow_run

from cvloop.config.params import Params, load_params
from cvloop.stages.candidate import TrainingData
from registry.names import CANDIDATE_GATE, CANDIDATE_VERSION, DRIFT_SLICES, FLOW
from tasks.candidate import (
    candidate_lineage_task,
    evaluate_pair_task,
    export_and_benchmark_task,
    fine_tune_task,
    gate_candidate_task,
    holdout_drift_tags_task,
    publish_gate_report,
    register_candidate_task,
    resolve_champion_task,
    slice_tags_task,
    training_data_task,
)
from tasks.model import log_retrain_step_task, start_retrain_run_task, training_dir_task


@task(name="start_rollout")
def start_rollout_task(version: str, who: str) -> str:
    """Begin the rollout of a candidate that passed every gate; a rollout already in
    progress is not disturbed (this candidate keeps its `challenger` alias; start it with
    `cvloop rollout start VERSION` once the other has ended)."""
    from cvloop.core.errors import CvloopError
    from cvloop.stages.rollout import start_rollout

    try:
        out = start_rollout(version, who, f"v{version} passed every gate")
    except CvloopError as exc:
        return f"not started: {exc}"
    m = out["manifest"]
    return f"{out['status']}: " + ", ".join(
        f"v{a['version']} {a['share']:g}%" for a in m["allocations"]
    )


def train_and_gate(
    p: Params,
    mlflow_run: str,
    data: TrainingData,
    drift_tags: list[str],
) -> dict:
    """Steps 6–8 inside the calling flow; returns the candidate's version and verdict."""
    # 6. fine-tune from the champion's best.pt on the dataset version (lr0 0.001, 50 epochs)
    champion = resolve_champion_task()
    work_dir = training_dir_task()
    trained = fine_tune_task(mlflow_run, champion, data, work_dir, p.registry.experiment, p.train)
    # 7. champion vs candidate on the same frames; exports and their benchmarks; gates
    evals = evaluate_pair_task(
        trained, champion, data.holdout_dir, drift_tags, work_dir, p.train.device, p.prefilter.conf
    )
    exported = export_and_benchmark_task(trained, champion, data, p.export)
    gate = gate_candidate_task(trained, evals, exported, trained.classes, p.gate)
    # 8. register either way; alias `challenger` only if every gate passed
    version = register_candidate_task(
        trained,
        champion,
        evals,
        exported,
        gate,
        candidate_lineage_task(data),
        p.registry.model_name,
        [t.split(" ", 1)[1] for t in drift_tags if t.startswith("drift:camera ")],
    )
    publish_gate_report(gate, evals, exported, version, trained.run_id)
    reasons = [f"{c['name']}: {c['detail']}" for c in gate["checks"] if not c["passed"]]
    verdict = "passed" if gate["passed"] else "rejected"
    log_retrain_step_task(
        mlflow_run,
        {
            "candidate.epochs_run": trained.epochs_run,
            "candidate.train_seconds": trained.train_seconds,
        },
        {CANDIDATE_VERSION: version, CANDIDATE_GATE: verdict},
    )
    print(f"candidate v{version} {verdict}" + (": " + "; ".join(reasons) if reasons else ""))
    rollout = "not started (gate rejected)"
    if gate["passed"] and p.rollout.auto_start:
        rollout = start_rollout_task(version, "cvloop retrain")
    elif gate["passed"]:
        rollout = "not started (rollout.auto_start is false): cvloop rollout start " + version
    print(f"rollout: {rollout}")
    return {
        "rollout": rollout,
        "candidate_version": version,
        "champion_version": champion.version,
        "gate": verdict,
        "gate_reasons": reasons,
        "training_run": trained.run_id,
    }


@flow(name="candidate", log_prints=True)
def candidate(
    dataset_version: str | None = None,
    cameras: list[str] | None = None,
    classes: list[str] | None = None,
    epochs: int | None = None,
    lr0: float | None = None,
) -> dict:
    """Fine-tune, judge and register a candidate on an existing dataset version (default:
    the newest). Drift slices: ``cameras``/``classes``, else those of the frames the newest
    holdout version added. ``epochs``/``lr0`` override params.yaml's ``train`` section."""
    p = load_params()
    overrides = {k: v for k, v in (("epochs", epochs), ("lr0", lr0)) if v is not None}
    if overrides:
        p = p.model_copy(update={"train": p.train.model_copy(update=overrides)})
    run_id = flow_run.get_id() or "local"
    data = training_data_task(None, dataset_version)
    if cameras or classes:
        tags = slice_tags_task(cameras, classes)
    else:
        tags = holdout_drift_tags_task(data.holdout_dir, data.holdout.get("name", ""))
    mlflow_run = start_retrain_run_task(
        p.registry.experiment,
        run_id,
        f"candidate-{flow_run.get_name() or 'local'}",
        {
            FLOW: "candidate",
            "cvloop.dataset.version": data.dataset["name"],
            DRIFT_SLICES: ",".join(tags) or "none",
            **{f"cvloop.override.{k}": v for k, v in overrides.items()},
        },
    )
    print(
        f"candidate on {data.dataset['name']} (holdout {data.holdout.get('name')}); "
        f"drift slices {tags or 'none'}; train {p.train.epochs} epochs at lr0 {p.train.lr0}"
    )
    out = train_and_gate(p, mlflow_run, data, tags)
    return {**out, "dataset_version": data.dataset["name"], "drift_slices": tags}


if __name__ == "__main__":
    candidate()
