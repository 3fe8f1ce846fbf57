"""Runbook step 7, registration: the candidate's lineage, gate verdict, exports and
benchmarks as tags, registered in one transaction (``challenger`` only on a pass)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from cvloop.core.gates import GateReport
from cvloop.stages.candidate import TrainingData, dataset_schema
from cvloop.stages.evaluate import Evaluations
from cvloop.stages.export import Exported
from cvloop.stages.gate import _fit_json
from cvloop.stages.model import (
    ChampionRef,
    TrainedModel,
)
from registry.names import DRIFT_CAMERAS, EXPORTS, GATE, GATE_REASONS, bench_tag, sha256_tag

if TYPE_CHECKING:
    from cvloop.context import Context


def register_candidate(
    ctx: Context,
    trained: TrainedModel,
    champion: ChampionRef,
    evals: Evaluations,
    exported: Exported,
    gate_report: GateReport,
    lineage: dict,
    drift_cameras: list[str] | None = None,
) -> str:
    """Register the candidate either way, with lineage, gate results and the benchmark;
    alias ``challenger`` only when every gate passed (set after every tag is on)."""
    from cvloop.adapters.training import EvalResult
    from cvloop.stages.model import register_model

    h = evals.challenger["holdout"]
    holdout = EvalResult(
        h["map50_95"], h["map50"], h["precision"], h["recall"],
        {k.split(".", 1)[1]: v for k, v in h.items() if k.startswith("ap50_95.")},
        {k.split(".", 1)[1]: v for k, v in h.items() if k.startswith("ap50.")},
        0, 0,
    )  # fmt: skip
    failed = gate_report.reasons
    from registry.models import sha256_file

    extra = {
        GATE: "passed" if gate_report.passed else "rejected",
        GATE_REASONS: _fit_json(failed, 4900),
        EXPORTS: json.dumps({k: v.status for k, v in exported.exports.items()}),
        DRIFT_CAMERAS: ",".join(drift_cameras or []),
    }
    for who, b in exported.benchmarks.items():
        if who.startswith("challenger."):
            fmt = who.split(".", 1)[1]
            keep = ("device", "p50_ms", "p95_ms", "p99_ms", "throughput_fps", "memory_mb")
            extra[bench_tag(fmt)] = json.dumps({k: b[k] for k in keep})
    for fmt, e in exported.exports.items():
        if e.status == "ok" and fmt != "onnx":
            extra[sha256_tag(fmt)] = _sha256_export(Path(e.path), sha256_file)
    aliases = ["challenger"] if gate_report.passed else []
    verdict = "passed every gate" if gate_report.passed else "REJECTED by the gates"
    return register_model(
        ctx,
        trained.run_id,
        trained,
        {**lineage, "parent_version": champion.version},
        holdout,
        extra,
        aliases,
        f"Fine-tuned from v{champion.version} on {lineage.get('dataset_version')}; {verdict}.",
    )


def candidate_lineage(ctx: Context, data: TrainingData) -> dict:
    """Lineage tags of a candidate trained on ``data``."""
    from cvloop.config.lineage import git_commit, params_sha256

    return {
        "dataset_version": data.dataset["name"],
        "dataset_dvc_md5": data.dataset["dvc_md5"],
        "dataset_git_rev": data.dataset["git_rev"],
        "holdout_version": data.holdout.get("name", "unknown"),
        "git_commit": git_commit(),
        "params_sha256": params_sha256(),
        **dataset_schema(ctx, data.dataset_yaml),
    }


def record_candidate(
    ctx: Context, mlflow_run: str, trained, version: str, gate: GateReport
) -> dict:
    """The candidate's verdict on the retrain's MLflow run; returns it with the reasons."""
    from registry.names import CANDIDATE_GATE, CANDIDATE_VERSION

    reasons = gate.reasons
    verdict = "passed" if gate.passed else "rejected"
    ctx.tracker.log_metrics(mlflow_run, {"candidate.epochs_run": trained.epochs_run,
                                         "candidate.train_seconds": trained.train_seconds})  # fmt: skip
    ctx.tracker.set_tags(mlflow_run, {CANDIDATE_VERSION: version, CANDIDATE_GATE: verdict})
    print(f"candidate v{version} {verdict}" + (": " + "; ".join(reasons) if reasons else ""))
    if not gate.passed:
        from cvloop.stages.notify import model_version_url, tell

        tell(ctx, "candidate_rejected", f"v{version}",
             f"{ctx.params.registry.model_name}: candidate v{version} rejected by the gates",
             "\n".join(f"- {r}" for r in reasons),
             {"candidate (MLflow)": model_version_url(ctx, version),
              "gate report": ctx.tracker.run_url(trained.run_id),
              "what to do": "runbooks/candidate.md"}, roles=("ml_lead", "on_call"))  # fmt: skip
    return {"candidate_version": version, "gate": verdict, "gate_reasons": reasons,
            "training_run": trained.run_id}  # fmt: skip


def _sha256_export(path: Path, sha256_file) -> str:
    """An export's digest: its file's, or for a folder (an OpenVINO IR: .xml, .bin,
    metadata.yaml) the sha256 of its files' ``name sha256`` lines, sorted by name."""
    import hashlib

    if not path.is_dir():
        return sha256_file(path)
    lines = "".join(f"{f.name} {sha256_file(f)}\n" for f in sorted(path.iterdir()) if f.is_file())
    return hashlib.sha256(lines.encode()).hexdigest()
