"""params.yaml: the runbook defaults load, and every bad value names key, value and rule."""

from __future__ import annotations

import pytest
import yaml

from cvloop.config.params import load_params, parse_params, with_overrides
from cvloop.core.errors import ConfigError


@pytest.fixture(scope="module")
def base():
    return load_params()


def test_runbook_defaults(base):
    # seeds/000: 30 days, 1 fps, conf 0.5, lr0 0.001, 50 epochs, 10/50/100 over 24 h,
    # holdout 200-500 +50 per retrain, mAP drop > 1 point for 3 weeks, KS p < 0.01.
    assert base.collect.days == 30
    assert base.prefilter.fps_per_camera == 1.0
    assert base.annotate.conf == 0.5
    assert base.train.lr0 == 0.001
    assert base.train.epochs == 50
    assert [s.share for s in base.rollout.stages] == [10, 50, 100]
    assert base.rollout.total_hours == 24
    assert (base.holdout.min_frames, base.holdout.max_frames) == (200, 500)
    assert base.holdout.add_per_retrain == 50
    assert base.trigger.holdout_map_drop_points == 1.0
    assert base.trigger.holdout_map_drop_weeks == 3
    assert base.trigger.confidence_ks_p == 0.01
    # seeds/001 edge cases
    assert (base.prefilter.low_confidence, base.prefilter.high_confidence) == (0.7, 0.99)
    assert base.prefilter.many_detections == 50
    assert base.classes == ["crate", "barrel", "cone"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"train": {"lr0": -1}}, "train.lr0 = -1: Input should be greater than 0"),
        ({"train": {"epochs": 0}}, "train.epochs = 0: Input should be greater than or equal to 1"),
        ({"train": {"imgsz": 300}}, "train.imgsz = 300: Input should be a multiple of 32"),
        (
            {"annotate": {"conf": 1.5}},
            "annotate.conf = 1.5: Input should be less than or equal to 1",
        ),
        ({"train": {"lr": 0.1}}, "train.lr: unknown key"),
        ({"train": {"optimizer": "auto"}}, "train.optimizer = 'auto': Input should be 'SGD'"),
        (
            {"prefilter": {"keep_empty": True}},
            "prefilter.keep_empty: no longer a key: replaced by prefilter.empty_share",
        ),
        (
            {"collect": {"days": "thirty"}},
            "collect.days = 'thirty': Input should be a valid integer",
        ),
        ({"holdout": {"min_frames": 600}}, "min_frames (600) must not exceed max_frames (500)"),
        (
            {"prefilter": {"low_confidence": 0.995}},
            "low_confidence (0.995) must be below high_confidence",
        ),
        (
            {"rollout": {"stages": [{"share": 10, "hours": 1}, {"share": 50, "hours": 1}]}},
            "the last stage must reach share 100, got 50",
        ),
        (
            {
                "rollout": {
                    "stages": [
                        {"share": 50, "hours": 1},
                        {"share": 10, "hours": 1},
                        {"share": 100, "hours": 1},
                    ]
                }
            },
            "stages must have strictly increasing shares",
        ),
        ({"rollout": {"approval_before_share": 75}}, "must be one of the stage shares"),
        ({"schema": {"classes": ["crate", "crate"]}}, "class names must be unique"),
        ({"schema": {"classes": ["Bad Name"]}}, "schema.classes.0 = 'Bad Name'"),
        ({"export": {"onnx": True}}, "export.onnx: no longer a key: removed"),
        ({"rollout": {"canary": {"poll_seconds": 60}}}, "rollout/tick deployment in prefect.yaml"),
    ],
)
def test_bad_values_name_key_value_and_rule(base, overrides, expected):
    with pytest.raises(ConfigError) as info:
        with_overrides(base, overrides)
    assert expected in str(info.value)
    assert "fix:" in str(info.value)


def test_all_problems_are_listed_at_once(base):
    with pytest.raises(ConfigError) as info:
        with_overrides(base, {"train": {"lr0": 0, "epochs": -3}, "annotate": {"conf": 2}})
    text = str(info.value)
    assert "(3 problems)" in text
    for key in ("train.lr0", "train.epochs", "annotate.conf"):
        assert key in text


def test_missing_section_and_unknown_section():
    with pytest.raises(ConfigError) as info:
        parse_params({"schema": {"classes": ["a"]}, "trainn": {}})
    text = str(info.value)
    assert "rollout: required key is missing" in text
    assert "trainn: unknown key" in text


def test_invalid_yaml_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_params(bad)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_params(tmp_path / "nope.yaml")
    assert "CVLOOP_PARAMS" in str(info.value)


def test_roundtrip_dump_is_loadable(base, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(base.model_dump(by_alias=True, mode="json")))
    assert load_params(path) == base
