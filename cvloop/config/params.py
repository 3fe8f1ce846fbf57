"""``params.yaml``: every knob of the runbook, loaded once into typed models.

A bad value fails with one message per problem, each naming the key, the value and what is
allowed, e.g.::

    params.yaml is invalid (2 problems):
      - train.lr0 = -1: must be greater than 0
      - rollout.stages: the last stage must reach share 100, got 50
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cvloop.config.settings import project_dir
from cvloop.core.errors import ConfigError

Share = Annotated[float, Field(gt=0, le=1)]
Points = Annotated[float, Field(ge=0, le=100)]
Prob = Annotated[float, Field(ge=0, le=1)]
PosInt = Annotated[int, Field(ge=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SchemaParams(_Section):
    classes: list[Annotated[str, Field(min_length=1, pattern=r"^[a-z][a-z0-9_-]*$")]] = Field(
        min_length=1
    )
    label_policy_version: PosInt = 1

    @model_validator(mode="after")
    def _unique(self) -> SchemaParams:
        dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if dupes:
            raise ValueError(f"class names must be unique, repeated: {dupes}")
        return self


class FleetParams(_Section):
    seed: int = 7
    cameras: PosInt = 6
    image_size: Annotated[int, Field(ge=64, le=1920)] = 320
    fps: Annotated[float, Field(gt=0, le=60)] = 2.0  # frame rate within a capture event


class BootstrapParams(_Section):
    days_ago: PosInt = 75
    days: PosInt = 14
    train_frames: Annotated[int, Field(ge=10)] = 600
    holdout_frames: PosInt = 300


class RegistryParams(_Section):
    model_name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] = (
        "cvloop-detector"
    )
    experiment: Annotated[str, Field(min_length=1)] = "cvloop"


class MonitorParams(_Section):
    current_days: PosInt = 7
    reference_days: PosInt = 7
    reference_start: dt.date | None = None
    min_slice_detections: PosInt = 200
    confidence_bins: Annotated[int, Field(ge=10, le=1000)] = 200
    size_bins: Annotated[int, Field(ge=10, le=1000)] = 200
    volume_max_per_frame: PosInt = 100
    exact_max_detections: PosInt = 5_000_000


class TriggerParams(_Section):
    holdout_map_drop_points: Points = 1.0
    holdout_map_drop_weeks: PosInt = 3
    confidence_ks_p: Annotated[float, Field(gt=0, lt=1)] = 0.01
    class_ap_regression_points: Points = 2.0
    new_labels_min: PosInt = 1000
    max_days_since_training: PosInt = 90
    severe_drift: bool = True
    severe_drift_psi: Annotated[float, Field(gt=0)] = 0.25
    severe_drift_wasserstein: Annotated[float, Field(gt=0)] = 0.25


class FramesParams(_Section):
    """The frame store's key layout (cvloop/core/keylayout.py): a team's bucket as it is."""

    images: str = "frames/{camera}/{date}/{ts_ms}.{ext}"
    videos: str = "videos/{camera}/{date}/{ts_ms}.{ext}"
    timestamp: str = "key"  # key | exif | object

    @model_validator(mode="after")
    def _layout(self) -> FramesParams:
        from cvloop.core.keylayout import check_layout

        try:
            check_layout(self.images, self.videos, self.timestamp)
        except Exception as exc:  # CvloopError: a message and a fix
            raise ValueError(
                f"{exc}{'; fix: ' + exc.fix if getattr(exc, 'fix', None) else ''}"
            ) from None
        return self


class CollectParams(_Section):
    days: PosInt = 30
    video_fps: Annotated[float, Field(gt=0, le=60)] = 1.0
    near_duplicate_hamming: Annotated[int, Field(ge=0, le=64)] = 4


class PrefilterParams(_Section):
    fps_per_camera: Annotated[float, Field(gt=0, le=60)] = 1.0
    batch_size: PosInt = 16
    conf: Prob = 0.25
    low_confidence: Prob = 0.7
    high_confidence: Prob = 0.99
    many_detections: PosInt = 50
    ordinary_share: Prob = 0.01  # frames with only confident detections kept (seed 001: ~1 %)
    empty_share: Prob = 0.05  # frames with no detection kept (maybe missed objects)

    @model_validator(mode="after")
    def _order(self) -> PrefilterParams:
        if not self.low_confidence < self.high_confidence:
            raise ValueError(
                f"low_confidence ({self.low_confidence}) must be below high_confidence "
                f"({self.high_confidence})"
            )
        return self


class SelectParams(_Section):
    budget: PosInt = 600
    drift_slice_weight: Annotated[float, Field(ge=1)] = 3.0
    per_class_cap: PosInt = 300
    per_camera_cap: PosInt = 200
    exploration_share: Annotated[float, Field(ge=0, lt=1)] = 0.1
    seed: int = 13


class AnnotateParams(_Section):
    conf: Prob = 0.5
    import_batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500


class ReviewParams(_Section):
    frames_per_class: PosInt = 200
    window_frames: PosInt = 50
    stable_windows: Annotated[int, Field(ge=2)] = 3
    stable_tolerance: Annotated[float, Field(gt=0, le=1)] = 0.05
    iou_match: Annotated[float, Field(gt=0, lt=1)] = 0.5
    moved_iou: Annotated[float, Field(gt=0, le=1)] = 0.9
    poll_seconds: Annotated[float, Field(gt=0)] = 30
    deadline_hours: Annotated[float, Field(gt=0)] = 72
    agreement_share: Annotated[float, Field(ge=0, le=1)] = 0.1
    agreement_min: Annotated[float, Field(gt=0, le=1)] = 0.8
    agreement_min_boxes: PosInt = 10


class ValidateParams(_Section):
    min_box_area: Annotated[float, Field(ge=0, lt=1)] = 0.0001
    max_box_area: Annotated[float, Field(gt=0, le=1)] = 0.9
    duplicate_iou: Annotated[float, Field(gt=0, le=1)] = 0.95

    @model_validator(mode="after")
    def _order(self) -> ValidateParams:
        if not self.min_box_area < self.max_box_area:
            raise ValueError(
                f"min_box_area ({self.min_box_area}) must be below max_box_area ({self.max_box_area})"
            )
        return self


class VersionParams(_Section):
    val_share: Annotated[float, Field(gt=0, lt=1)] = 0.15


# Ultralytics' optimizers, named; never "auto" (it discards lr0 and momentum and picks its own)
Optimizer = Literal["SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp"]


class TrainParams(_Section):
    model_yaml: str = "yolo11p.yaml"
    optimizer: Optimizer = "AdamW"
    lr0: Annotated[float, Field(gt=0, le=1)] = 0.001
    momentum: Annotated[float, Field(gt=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0, le=0.1)] = 0.0005
    epochs: PosInt = 50
    imgsz: Annotated[int, Field(ge=32, le=2048, multiple_of=32)] = 256
    batch: PosInt = 16
    device: str = "auto"
    workers: Annotated[int, Field(ge=0)] = 0
    patience: PosInt = 20
    seed: int = 0
    bootstrap_epochs: PosInt = 25
    bootstrap_lr0: Annotated[float, Field(gt=0, le=1)] = 0.0014
    new_class_repeat: Annotated[int, Field(ge=1, le=16)] = 4


class GateParams(_Section):
    holdout_map_tolerance_points: Points = 0.5
    class_ap_tolerance_points: Points = 2.0
    drift_slice_min_gain_points: Points = 1.0
    min_slice_frames: PosInt = 20
    new_class_min_ap: Prob = 0.5
    export_parity_points: Points = 0.5
    int8_parity_points: Points = 1.5
    calibration_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.02
    robustness_corruptions: list[Literal["noise", "blur", "jpeg", "brightness"]] = [
        "noise", "blur", "jpeg", "brightness",
    ]  # fmt: skip
    robustness_tolerance_points: Points = 2.0


class ExportParams(_Section):
    openvino_fp32: bool = True
    tensorrt_fp16: bool = True
    tensorrt_int8: bool = False
    int8_calibration_frames: PosInt = 300
    bench_warmup: Annotated[int, Field(ge=0)] = 10
    bench_iterations: PosInt = 100
    bench_batch: PosInt = 8


class RolloutStage(_Section):
    share: Annotated[float, Field(gt=0, le=100)]
    hours: Annotated[float, Field(gt=0)]


class CanaryQualityParams(_Section):
    """The canary's quality evidence (cvloop/core/pairing.py): paired re-scoring and labels."""

    rescore_frames: PosInt = 400
    confident_floor: Prob = 0.7
    match_conf: Prob = 0.25
    match_iou: Annotated[float, Field(gt=0, le=1)] = 0.5
    max_loss: Annotated[float, Field(gt=0, lt=1)] = 0.10
    min_boxes: PosInt = 30
    labels_min_frames: PosInt = 50
    labels_map_tolerance_points: Points = 1.0

    @model_validator(mode="after")
    def _floors(self) -> CanaryQualityParams:
        if self.match_conf > self.confident_floor:
            raise ValueError(
                f"match_conf ({self.match_conf}) must not exceed confident_floor "
                f"({self.confident_floor}): a confident box must be findable at that confidence"
            )
        return self


class CanaryParams(_Section):
    min_frames: PosInt = 500
    p95_latency_ratio_max: Annotated[float, Field(ge=1)] = 1.25
    error_rate_max: Prob = 0.01
    confidence_ks_p_min: Annotated[float, Field(ge=0, lt=1)] = 0.001
    confidence_ks_stat_max: Prob = 0.3
    volume_ratio_min: Annotated[float, Field(gt=0, le=1)] = 0.8
    volume_ratio_max: Annotated[float, Field(ge=1)] = 1.25
    quality: CanaryQualityParams = CanaryQualityParams()


class RolloutParams(_Section):
    stages: list[RolloutStage] = Field(min_length=1)
    shadow_hours: Annotated[float, Field(ge=0)] = 0
    approval_before_share: Annotated[float, Field(gt=0, le=100)] = 100
    approval_deadline_hours: Annotated[float, Field(gt=0)] = 24
    auto_start: bool = True
    canary: CanaryParams = CanaryParams()

    @model_validator(mode="after")
    def _stages(self) -> RolloutParams:
        shares = [s.share for s in self.stages]
        if any(b <= a for a, b in itertools.pairwise(shares)):
            raise ValueError(f"stages must have strictly increasing shares, got {shares}")
        if shares[-1] != 100:
            raise ValueError(f"the last stage must reach share 100, got {shares[-1]:g}")
        if self.approval_before_share not in shares:
            raise ValueError(
                f"approval_before_share ({self.approval_before_share:g}) must be one of the "
                f"stage shares {shares}"
            )
        return self

    @property
    def total_hours(self) -> float:
        return sum(s.hours for s in self.stages) + self.shadow_hours

    def plan(self) -> tuple[list[float], list[float]]:
        """(shares, hours) of every stage: the shadow stage (share 0) first when
        ``shadow_hours`` is set, then ``stages``."""
        head = ([0.0], [self.shadow_hours]) if self.shadow_hours > 0 else ([], [])
        return head[0] + [s.share for s in self.stages], head[1] + [s.hours for s in self.stages]


class HoldoutParams(_Section):
    min_frames: PosInt = 200
    max_frames: PosInt = 500
    add_per_retrain: Annotated[int, Field(ge=0)] = 50
    max_drift_share: Annotated[float, Field(ge=0, le=1)] = 0.5
    refresh_days: PosInt = 90
    refresh_frames: PosInt = 300
    near_duplicate_hamming: Annotated[int, Field(ge=0, le=64)] = 4
    capture_event_seconds: Annotated[float, Field(ge=0)] = 10.0

    @model_validator(mode="after")
    def _range(self) -> HoldoutParams:
        if self.min_frames > self.max_frames:
            raise ValueError(
                f"min_frames ({self.min_frames}) must not exceed max_frames ({self.max_frames})"
            )
        return self


class ServeLogParams(_Section):
    flush_rows: PosInt = 2000
    flush_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    fsync: bool = True


class ServeParams(_Section):
    route_by: Literal["frame", "camera"] = "frame"
    runtime: Literal["onnxruntime", "openvino", "tensorrt"] = "onnxruntime"
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    threads: Annotated[int, Field(ge=0, le=256)] = 0
    max_batch: Annotated[int, Field(ge=1, le=256)] = 8
    max_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 4.0
    max_queue: Annotated[int, Field(ge=1, le=100_000)] = 64
    max_image_mb: Annotated[float, Field(gt=0, le=512)] = 20.0
    conf: Prob = 0.25
    iou: Prob = 0.7
    reload_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0
    log: ServeLogParams = ServeLogParams()


class SloParams(_Section):
    latency_ms: Annotated[float, Field(gt=0)] = 250.0
    latency_target: Annotated[float, Field(gt=0, lt=1)] = 0.95
    error_rate: Prob = 0.01


class OwnersParams(_Section):
    """Who the runbook's steps belong to: named in the weekly review, the gate report, the
    drift dashboard and every notification (cvloop/adapters/notify.py)."""

    ml_lead: str = ""  # the DRI: approves promotions, decides on rejections
    on_call: str = ""  # runs the loop this week: triggers, stalled reviews, rollbacks
    reviewers: list[str] = []  # label in Label Studio

    def names(self, *roles: str) -> list[str]:
        """``role: name`` of each named role that is set (reviewers joined)."""
        named = {"ml_lead": self.ml_lead, "on_call": self.on_call,
                 "reviewers": ", ".join(self.reviewers)}  # fmt: skip
        return [f"{r.replace('_', ' ')}: {named[r]}" for r in roles if named[r]]


class Params(_Section):
    """The whole of ``params.yaml``."""

    schema_: SchemaParams = Field(alias="schema")
    fleet: FleetParams = FleetParams()
    bootstrap: BootstrapParams = BootstrapParams()
    registry: RegistryParams = RegistryParams()
    monitor: MonitorParams = MonitorParams()
    trigger: TriggerParams = TriggerParams()
    frames: FramesParams = FramesParams()
    collect: CollectParams = CollectParams()
    prefilter: PrefilterParams = PrefilterParams()
    select: SelectParams = SelectParams()
    annotate: AnnotateParams = AnnotateParams()
    review: ReviewParams = ReviewParams()
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")
    version: VersionParams = VersionParams()
    train: TrainParams = TrainParams()
    gate: GateParams = GateParams()
    export: ExportParams = ExportParams()
    rollout: RolloutParams
    holdout: HoldoutParams = HoldoutParams()
    serve: ServeParams = ServeParams()
    slo: SloParams = SloParams()
    owners: OwnersParams = OwnersParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def classes(self) -> list[str]:
        return list(self.schema_.classes)

    @model_validator(mode="after")
    def _holdout_sizes(self) -> Params:
        n = self.bootstrap.holdout_frames
        if not self.holdout.min_frames <= n <= self.holdout.max_frames:
            raise ValueError(
                f"bootstrap.holdout_frames ({n}) must be within holdout.min_frames.."
                f"holdout.max_frames ({self.holdout.min_frames}..{self.holdout.max_frames})"
            )
        return self

    @model_validator(mode="after")
    def _annotate_conf(self) -> Params:
        # pre-annotations are the prefilter's detections at >= annotate.conf: the prefilter
        # must keep every box the pre-annotation needs
        if self.annotate.conf < self.prefilter.conf:
            raise ValueError(
                f"annotate.conf ({self.annotate.conf}) must not be below prefilter.conf "
                f"({self.prefilter.conf})"
            )
        return self


#: keys of older params files and what replaced them (named in the error, not "unknown")
REPLACED_KEYS = {
    "prefilter.keep_empty": "replaced by prefilter.empty_share (the share of frames without a "
    "detection kept; 1.0 keeps them all, as keep_empty: true did)",
    "version.dataset_dir": "removed: the data repository's layout is fixed (datasets/ with "
    "datasets.dvc, holdout/data/ with holdout/data.dvc), and no code read the key; delete it",
    "export.onnx": "removed: the ONNX export is always made, scored and gated (every runtime is "
    "built from it), so the key could only be true; delete it",
    "rollout.canary.poll_seconds": "removed: the rollout advances on the schedule of the "
    "rollout/tick deployment in prefect.yaml (every 300 s), which no key of params.yaml "
    "changed; edit that schedule and run `cvloop deploy` instead",
}


def _describe(err: dict[str, Any], raw: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after",))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"{loc}: required key is missing"
    if err["type"] == "extra_forbidden":
        if loc in REPLACED_KEYS:
            return f"{loc}: no longer a key: {REPLACED_KEYS[loc]}"
        return f"{loc}: unknown key (check the spelling; allowed keys are listed in params.yaml)"
    value: Any = raw
    for part in err["loc"]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            value = None
            break
    if value is None or isinstance(value, dict):
        return f"{loc}: {msg}"
    return f"{loc} = {value!r}: {msg}"


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping, collecting every problem into one :class:`ConfigError`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(e, raw) for e in exc.errors()]
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"{source} is invalid ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n"
            f"{lines}",
            fix=f"edit {source}; each line names the key, the value and what is allowed",
        ) from None


def params_path() -> Path:
    import os

    return Path(os.environ.get("CVLOOP_PARAMS", project_dir() / "params.yaml"))


def load_params(path: str | Path | None = None) -> Params:
    """Load and validate ``params.yaml`` (``CVLOOP_PARAMS`` overrides the location)."""
    p = Path(path) if path else params_path()
    if not p.exists():
        raise ConfigError(
            f"params file not found: {p}",
            fix="run from the cvloop checkout or set CVLOOP_PARAMS=<path>",
        )
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}", fix=f"fix the syntax of {p}") from None
    return parse_params(raw or {}, source=str(p.name if p.parent == project_dir() else p))


def with_overrides(base: Params, overrides: dict[str, dict[str, Any]]) -> Params:
    """A copy of ``base`` with per-section overrides, validated like the file itself."""
    raw = base.model_dump(by_alias=True, mode="json")
    for section, values in overrides.items():
        raw.setdefault(section, {})
        raw[section] = {**raw[section], **values}
    return parse_params(raw, source="params (with overrides)")
