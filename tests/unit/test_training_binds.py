"""The training hyperparameters in params.yaml are the ones Ultralytics trains with.

Ultralytics' default ``optimizer=auto`` throws ``lr0`` and ``momentum`` away and picks its own
(AdamW at 0.002 * 5 / (4 + classes), or MuSGD at 0.01 on a large dataset), so the runbook's
"fine-tune at lr0 0.001" was recorded but never applied. These tests train for real (one
epoch on a few generated frames) and read the learning rate back **from the trainer's
optimizer**; they fail if ``auto`` comes back.
"""

from __future__ import annotations

import math

import pytest

from cvloop.adapters.models import model_yaml_path
from cvloop.adapters.training import OptimizerUsed, TrainResult, train, ultralytics_train_args
from cvloop.config.params import TrainParams
from tests.conftest import tiny_yolo_dataset


def test_auto_is_not_an_allowed_optimizer():
    with pytest.raises(Exception, match="optimizer"):
        TrainParams(optimizer="auto")
    args = ultralytics_train_args(TrainParams(), epochs=50, lr0=0.001, device="cpu")
    assert args["optimizer"] == "AdamW" and args["lr0"] == 0.001 and args["momentum"] == 0.9


def test_the_optimizer_trains_at_the_configured_rate(tmp_path):
    # not the defaults: each of the three would come out differently under optimizer=auto
    optimizer, lr0, momentum, torch_name = "SGD", 0.0007, 0.85, "SGD"
    data = tiny_yolo_dataset(tmp_path / "data", n=4)
    p = TrainParams(optimizer=optimizer, lr0=0.5, momentum=momentum, epochs=1, imgsz=64,
                    batch=4, device="cpu", patience=5)  # fmt: skip
    res = train(data, model_yaml_path("yolo11p.yaml"), tmp_path / "runs", "t", p, lr0=lr0)
    # what the optimizer started from (Ultralytics' auto would give AdamW at 0.002*5/5=0.002)
    assert res.optimizer == OptimizerUsed(torch_name, lr0, momentum)
    assert res.epochs_run == 1 and res.epochs_planned == 1 and not res.stopped_early
    metrics, tags = res.lineage()
    assert metrics["train.lr0_used"] == lr0 and metrics["train.momentum_used"] == momentum
    assert tags == {"cvloop.train.optimizer_used": torch_name}


def test_early_stopping_is_reported(tmp_path):
    res = TrainResult(tmp_path / "best.pt", tmp_path, epochs_run=23, seconds=1.0, device="cpu",
                      epochs_planned=50, best_epoch=3,
                      optimizer=OptimizerUsed("AdamW", 0.001, 0.9))  # fmt: skip
    metrics, _ = res.lineage()
    assert res.stopped_early and metrics["train.stopped_early"] == 1.0
    assert metrics["train.best_epoch"] == 3 and metrics["train.epochs_planned"] == 50
    full = TrainResult(tmp_path / "best.pt", tmp_path, 50, 1.0, "cpu", epochs_planned=50)
    assert not full.stopped_early and not math.isnan(full.lineage()[0]["train.epochs_run"])


def test_status_shows_what_training_used_not_what_was_configured():
    from cvloop.stages.status import _training_line, _training_used

    used = _training_used(
        {"train.lr0_used": 0.001, "train.momentum_used": 0.9, "train.epochs_run": 23.0,
         "train.epochs_planned": 50.0, "train.best_epoch": 3.0, "train.stopped_early": 1.0},
        {"cvloop.train.optimizer_used": "AdamW"},
    )  # fmt: skip
    line = _training_line({"training": used, "train_params": {"lr0": "0.5", "epochs": "50"}})
    assert line.split(None, 1)[1] == (
        "AdamW lr0 0.001 momentum 0.9 epochs 23/50 (stopped early, best epoch 3)"
    )
    old = _training_line({"training": {}, "train_params": {"lr0": "0.001", "epochs": "50"}})
    assert old.endswith("lr0 0.001 epochs 50 (as configured)")  # a run from before
