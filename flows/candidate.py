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

from prefect import flow
from prefect.runtime import flow_run

from cvloop.config.params import Params
from cvloop.context import current
from cvloop.core.slices import drift_cameras
from cvloop.stages.candidate import TrainingData
from cvloop.stages.model import ChampionRef
from flows.hooks import publish_failure
from registry.names import DATASET_VERSION, DRIFT_SLICES, FLOW, override_tag
from tasks.candidate import (
    candidate_lineage_task,
    evaluate_pair_task,
    export_and_benchmark_task,
    fine_tune_task,
    gate_candidate_task,
    holdout_drift_tags_task,
    publish_gate_report,
    record_candidate_task,
    register_candidate_task,
    slice_tags_task,
    training_data_task,
)
from tasks.model import resolve_champion_task, start_retrain_run_task, training_dir_task
from tasks.rollout import start_if_passed_task


def train_and_gate(
    p: Params,
    mlflow_run: str,
    data: TrainingData,
    drift_tags: list[str],
    champion: ChampionRef,
    drift_note: str = "",
) -> dict:
    """Steps 6–8 inside the calling flow, against the run's ``champion``; returns the
    candidate's version and verdict. ``drift_note``: where the drift slices came from (the
    gate report says it; with no slice, why there is none)."""
    work_dir = training_dir_task()
    # 6. fine-tune from the champion's best.pt on the dataset version (lr0 0.001, 50 epochs)
    trained = fine_tune_task(mlflow_run, champion, data, work_dir, p.registry.experiment, p.train)
    # 7. champion vs candidate on the same frames; exports and their benchmarks; gates
    evals = evaluate_pair_task(trained, champion, data.holdout_dir, drift_tags, work_dir,
                               p.train.device, p.prefilter.conf,
                               list(p.gate.robustness_corruptions))  # fmt: skip
    exported = export_and_benchmark_task(trained, champion, data, p.export)
    gate = gate_candidate_task(trained, evals, exported, trained.classes, p.gate, drift_note)
    # 8. register either way; alias `challenger` only if every gate passed; the rollout
    version = register_candidate_task(trained, champion, evals, exported, gate,
                                      candidate_lineage_task(data), drift_cameras(drift_tags))  # fmt: skip
    publish_gate_report(gate, evals, exported, version, trained.run_id)
    verdict = record_candidate_task(mlflow_run, trained, version, gate)
    rollout = start_if_passed_task(version, gate.passed, "cvloop retrain")
    print(f"rollout: {rollout}")
    return {**verdict, "rollout": rollout, "champion_version": champion.version}


@flow(name="candidate", log_prints=True, on_failure=[publish_failure])
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
    p = current().params
    overrides = {k: v for k, v in (("epochs", epochs), ("lr0", lr0)) if v is not None}
    if overrides:
        p = p.model_copy(update={"train": p.train.model_copy(update=overrides)})
    run_id = flow_run.get_id() or "local"
    champion = resolve_champion_task()
    data = training_data_task(None, dataset_version)
    holdout = data.holdout.get("name", "")
    if cameras or classes:
        tags, note = slice_tags_task(cameras, classes), "named by the run"
    else:
        tags = holdout_drift_tags_task(data.holdout_dir, holdout)
        note = (f"the drift frames {holdout} added" if tags else
                f"no drift anywhere: {holdout} added no drift frames, and the run named none")  # fmt: skip
    mlflow_run = start_retrain_run_task(
        p.registry.experiment, run_id, f"candidate-{flow_run.get_name() or 'local'}",
        {FLOW: "candidate", DATASET_VERSION: data.dataset["name"],
         DRIFT_SLICES: ",".join(tags) or "none",
         **{override_tag(k): v for k, v in overrides.items()}},
    )  # fmt: skip
    print(f"candidate on {data.dataset['name']} (holdout {data.holdout.get('name')}); "
          f"drift slices {tags or 'none'}; train {p.train.epochs} epochs, {p.train.optimizer} at lr0 {p.train.lr0}")  # fmt: skip
    out = train_and_gate(p, mlflow_run, data, tags, champion, note)
    return {**out, "dataset_version": data.dataset["name"], "drift_slices": tags}


if __name__ == "__main__":
    candidate()
