"""Model stage: train, export, evaluate, register.

Each function takes and returns paths, run ids and small records, never a model object.
"""

from __future__ import annotations

from prefect import task

from cvloop.stages.model import (
    evaluate_model,
    find_champion,
    log_retrain_step,
    register_model,
    resolve_champion,
    resolve_model_source,
    start_retrain_run,
    start_training_run,
    train_model,
    training_dir,
)
from tasks import stage_task

find_champion_task = stage_task(
    find_champion, name="find_champion", retries=2, retry_delay_seconds=3
)

resolve_model_source_task = task(resolve_model_source, name="resolve_model_source")

training_dir_task = stage_task(training_dir, name="training_dir")

start_retrain_run_task = stage_task(
    start_retrain_run, name="start_retrain_run", persist_result=True
)

log_retrain_step_task = stage_task(log_retrain_step, name="log_retrain_step")

start_training_run_task = stage_task(start_training_run, name="start_training_run")

train_model_task = stage_task(train_model, name="train_model")

evaluate_model_task = stage_task(evaluate_model, name="evaluate_model")

register_model_task = stage_task(
    register_model, name="register_model", retries=2, retry_delay_seconds=[2, 10]
)

resolve_champion_task = stage_task(resolve_champion, name="resolve_champion", persist_result=True)
