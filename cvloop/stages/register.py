"""Runbook step 7, registration: the candidate's lineage, gate verdict, exports and
benchmarks as tags, registered in one transaction (``challenger`` only on a pass)."""

from __future__ import annotations

import json
from pathlib import Path

from cvloop.stages.candidate import ChampionRef, TrainingData, dataset_schema
from cvloop.stages.evaluate import Evaluations
from cvloop.stages.gate import _fit_json
from cvloop.stages.model import (
    TrainedModel,
)
from registry.names import DRIFT_CAMERAS, EXPORTS, GATE, GATE_REASONS


def register_candidate(
    trained: TrainedModel,
    champion: ChampionRef,
    evals: Evaluations,
    exported: dict,
    gate_report: dict,
    lineage: dict,
    model_name: str,
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
    failed = [f"{c['name']}: {c['detail']}" for c in gate_report["checks"] if not c["passed"]]
    from registry.models import sha256_file

    extra = {
        GATE: "passed" if gate_report["passed"] else "rejected",
        GATE_REASONS: _fit_json(failed, 4900),
        EXPORTS: json.dumps({k: v.get("status") for k, v in exported["exports"].items()}),
        DRIFT_CAMERAS: ",".join(drift_cameras or []),
    }
    for who, b in exported["benchmarks"].items():
        if who.startswith("challenger."):
            fmt = who.split(".", 1)[1]
            keep = ("device", "p50_ms", "p95_ms", "p99_ms", "throughput_fps", "memory_mb")
            extra[f"cvloop.bench.{fmt}"] = json.dumps({k: b[k] for k in keep})
    for fmt, e in exported["exports"].items():
        if e["status"] == "ok" and fmt != "onnx":
            extra[f"cvloop.sha256.{fmt}"] = sha256_file(Path(e["path"]))
    aliases = ["challenger"] if gate_report["passed"] else []
    verdict = "passed every gate" if gate_report["passed"] else "REJECTED by the gates"
    return register_model(
        trained.run_id,
        trained,
        {**lineage, "parent_version": champion.version},
        holdout,
        extra,
        model_name,
        aliases,
        f"Fine-tuned from v{champion.version} on {lineage.get('dataset_version')}; {verdict}.",
    )


def candidate_lineage(data: TrainingData) -> dict:
    """Lineage tags of a candidate trained on ``data``."""
    from cvloop.config.lineage import git_commit, params_sha256

    return {
        "dataset_version": data.dataset["name"],
        "dataset_dvc_md5": data.dataset["dvc_md5"],
        "dataset_git_rev": data.dataset["git_rev"],
        "holdout_version": data.holdout.get("name", "unknown"),
        "git_commit": git_commit(),
        "params_sha256": params_sha256(),
        **dataset_schema(data.dataset_yaml),
    }
