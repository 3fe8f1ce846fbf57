"""Every name cvloop writes into MLflow and Prefect, in one place: aliases, model-version
and run tags, the drift event. They are data contracts — the MLflow UI, dashboards and a
team's own scripts read them — so they never change with the code's layout.
"""

from __future__ import annotations

# ---- aliases of the registered model ------------------------------------------------------
CHAMPION = "champion"  # serves 100 % (or the rest of a rollout)
CHALLENGER = "challenger"  # in rollout, or waiting to start one
PREVIOUS_CHAMPION = "previous-champion"  # the rollback target

# ---- lineage (on every registered version) -------------------------------------------------
LINEAGE_TAGS = {
    "dataset_version": "cvloop.dataset.version",
    "dataset_dvc_md5": "cvloop.dataset.dvc_md5",
    "dataset_git_rev": "cvloop.dataset.git_rev",
    "holdout_version": "cvloop.holdout.version",
    "git_commit": "cvloop.git_commit",
    "params_sha256": "cvloop.params_sha256",
    "parent_version": "cvloop.parent_version",
    "training_run": "cvloop.training_run",
    "sha256_pt": "cvloop.sha256.pt",
    "sha256_onnx": "cvloop.sha256.onnx",
    "classes": "cvloop.classes",
    "imgsz": "cvloop.imgsz",
    "schema_version": "cvloop.schema.version",  # schema-v<n> (the class list it predicts)
    "label_policy_version": "cvloop.schema.label_policy_version",
}
DATASET_VERSION = LINEAGE_TAGS["dataset_version"]
DATASET_DVC_MD5 = LINEAGE_TAGS["dataset_dvc_md5"]
DATASET_GIT_REV = LINEAGE_TAGS["dataset_git_rev"]
HOLDOUT_VERSION = LINEAGE_TAGS["holdout_version"]
GIT_COMMIT = LINEAGE_TAGS["git_commit"]
PARAMS_SHA256 = LINEAGE_TAGS["params_sha256"]
PARENT_VERSION = LINEAGE_TAGS["parent_version"]
TRAINING_RUN = LINEAGE_TAGS["training_run"]
CLASSES = LINEAGE_TAGS["classes"]
SCHEMA_VERSION = LINEAGE_TAGS["schema_version"]


def sha256_tag(fmt: str) -> str:
    """The checksum tag of an artifact format (``pt``, ``onnx``, ``engine-fp16`` ...)."""
    return f"cvloop.sha256.{fmt}"


def bench_tag(fmt: str) -> str:
    """The serving benchmark of an export (``onnx``, ``tensorrt-fp16`` ...)."""
    return f"cvloop.bench.{fmt}"


# ---- holdout metrics and the registration transaction ------------------------------------
HOLDOUT_MAP50_95 = "cvloop.holdout.map50_95"
HOLDOUT_MAP50 = "cvloop.holdout.map50"
HOLDOUT_PER_CLASS = "cvloop.holdout.per_class_ap50_95"
HOLDOUT_ONNX_MAP50_95 = "cvloop.holdout_onnx.map50_95"
HOLDOUT_REFERENCE_VERSION = "cvloop.holdout.reference.version"
HOLDOUT_REFERENCE_MAP50_95 = "cvloop.holdout.reference.map50_95"
HOLDOUT_REFERENCE_PER_CLASS = "cvloop.holdout.reference.per_class_ap50_95"
HOLDOUT_REFERENCE_RESCORED = "cvloop.holdout.reference.rescored"
HOLDOUT_PREVIOUS = "cvloop.holdout.previous"
HOLDOUT_CAMERAS = "cvloop.holdout.cameras"
REGISTRATION = "cvloop.registration"  # pending | complete
REGISTERED_VERSION = "cvloop.registered_version"  # on the training run
SOURCES = "cvloop.sources"

# ---- adoption: a team's own checkpoint as version 1 (cvloop adopt) -----------------------
SOURCE = "cvloop.source"  # adopted | (absent: trained by cvloop)
ADOPT_SHA256 = "cvloop.adopt.sha256"  # the checkpoint's sha256, recorded before it is loaded
ADOPT_ORIGIN = "cvloop.adopt.origin"  # where the file came from (path or URI given)
ADOPT_ARCHITECTURE = "cvloop.adopt.architecture"
ADOPT_ULTRALYTICS = "cvloop.adopt.ultralytics_version"  # the version that wrote it
ADOPT_SAVED_AT = "cvloop.adopt.saved_at"
ADOPT_IMGSZ_FROM = "cvloop.adopt.imgsz_from"  # checkpoint | given
ADOPT_ONNX = "cvloop.adopt.onnx"  # given: <origin> | exported by cvloop
ADOPT_DATASET = "cvloop.adopt.dataset"  # JSON: format, origin, imported, quarantined
ADOPT_PARITY = "cvloop.adopt.parity"  # holdout mAP50-95 of .pt and ONNX, and their gap

# ---- the gates (runbook step 7) ------------------------------------------------------------
GATE = "cvloop.gate"  # passed | rejected
GATE_REASONS = "cvloop.gate.reasons"  # JSON list
EXPORTS = "cvloop.exports"  # JSON: format -> ok | skipped: reason | failed: reason
HEAD_RESIZE = "cvloop.head_resize"
DRIFT_CAMERAS = "cvloop.drift.cameras"
DRIFT_SLICES = "cvloop.drift.slices"
DRIFT_SOURCE = "cvloop.drift.source"  # where a retrain's drift slices came from

# ---- the rollout (runbook step 8) ----------------------------------------------------------
APPROVED_BY = "cvloop.approved_by"  # the ML lead's approval: the MLflow UI or `cvloop approve`
APPROVED_AT = "cvloop.approved_at"
APPROVED_NOTE = "cvloop.approved_note"
REJECTED_BY = "cvloop.rejected_by"
REJECTED_AT = "cvloop.rejected_at"
REJECTED_NOTE = "cvloop.rejected_note"
ROLLOUT_STATUS = "cvloop.rollout.status"
ROLLOUT_SHARE = "cvloop.rollout.share"
ROLLOUT_REASON = "cvloop.rollout.reason"
ROLLOUT_EVIDENCE = (
    "cvloop.rollout.evidence"  # what decided the last tick: labels | pairing | guards
)
ROLLOUT_CANARY = "cvloop.rollout.canary"  # ok | breach | insufficient
ROLLOUT_KEPT = "cvloop.rollout.kept_share"  # per class: champion's confident boxes kept
ROLLOUT_LABELS = "cvloop.rollout.labels"  # frames with reviewed labels and each model's mAP
PROMOTED_AT = "cvloop.promoted_at"

# ---- runs (MLflow tracking) -----------------------------------------------------------------
FLOW = "cvloop.flow"
FLOW_RUN_ID = "cvloop.flow_run_id"
DEVICE = "cvloop.device"
ENDED_BECAUSE = "cvloop.ended_because"  # why cvloop ended a run its own process could not
TRIGGERS = "cvloop.triggers"
TRIGGERS_FIRED = "cvloop.triggers.fired"
REVIEW_REASON = "cvloop.review.reason"
LABELSTUDIO_PROJECT = "cvloop.labelstudio.project"
CANDIDATE_VERSION = "cvloop.candidate.version"
CANDIDATE_GATE = "cvloop.candidate.gate"
CHAMPION_VERSION = "cvloop.champion"
WINDOW_CURRENT = "cvloop.window.current"
WINDOW_REFERENCE = "cvloop.window.reference"
BINS = "cvloop.bins"


def override_tag(key: str) -> str:
    return f"cvloop.override.{key}"


# ---- Prefect events -------------------------------------------------------------------------
DRIFT_EVENT = "cvloop.drift.detected"  # prefect.yaml's automation starts retrain/on-drift on it


def model_resource(model_name: str) -> str:
    """The Prefect event resource of a registered model."""
    return f"cvloop.model.{model_name}"
