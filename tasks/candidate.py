"""Model half of the retrain (runbook steps 6–8): fine-tune a candidate from the champion,
score champion and candidate on the same frames, export and benchmark, gate, register.

Plain functions (a test calls them without Prefect) with ``@task`` wrappers at the end.
Each passes run ids, paths and small records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from prefect import task

from cvloop.gates import GateReport, evaluate_gates
from tasks.model import TrainedModel, _client, evaluate_model, start_training_run, train_model


@dataclass(frozen=True)
class ChampionRef:
    version: str
    pt: str
    onnx: str
    classes: list[str]
    imgsz: int


@dataclass(frozen=True)
class Evaluations:
    """Metrics per evaluation set (``holdout``, ``slice:<tag>``) for both models."""

    champion: dict
    challenger: dict
    sets: dict  # name -> frames
    slices: list[str]


def resolve_champion() -> ChampionRef:
    """The champion's files from the registry (sha256 verified on fetch)."""
    from registry.models import CHAMPION, ModelRegistry

    reg = ModelRegistry.from_settings()
    m = reg.fetch_alias(CHAMPION)
    return ChampionRef(str(reg.alias_version(CHAMPION)), str(m.pt), str(m.onnx), m.classes, m.imgsz)


def fine_tune(
    retrain_run_id: str,
    champion: ChampionRef,
    data_yaml: str,
    dataset: dict,
    out_dir: str,
    experiment: str,
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
    """Fine-tune from the champion's best.pt on the new dataset version; the training run
    is a child of the retrain's MLflow run."""
    from cvloop.lineage import git_commit

    run_id = start_training_run(
        experiment,
        f"finetune-{dataset['name']}-from-v{champion.version}",
        {"epochs": epochs, "lr0": lr0, "imgsz": imgsz, "batch": batch, "init": "champion"},
        {
            "mlflow.parentRunId": retrain_run_id,
            "cvloop.flow": "retrain",
            "cvloop.dataset.version": dataset["name"],
            "cvloop.dataset.dvc_md5": dataset["dvc_md5"],
            "cvloop.parent_version": champion.version,
            "cvloop.git_commit": git_commit(),
        },
    )
    return train_model(
        run_id,
        data_yaml,
        champion.pt,
        champion.classes,
        out_dir,
        epochs=epochs,
        lr0=lr0,
        imgsz=imgsz,
        batch=batch,
        device=device,
        workers=workers,
        patience=patience,
        seed=seed,
    )


def _metrics(result) -> dict:
    out = {"map50_95": result.map50_95, "map50": result.map50}
    out.update({"precision": result.precision, "recall": result.recall})
    out.update({f"ap50_95.{k}": v for k, v in result.per_class_ap50_95.items()})
    out.update({f"ap50.{k}": v for k, v in result.per_class_ap50.items()})
    return out


def evaluate_pair(
    trained: TrainedModel,
    champion: ChampionRef,
    holdout_dir: str,
    slice_tags: list[str],
    work_dir: str,
    device: str,
) -> Evaluations:
    """Champion and candidate on the holdout and on each drift slice of the holdout, in this
    run, on the same frames; both logged to the candidate's training run."""
    from cvloop.slices import build_slice_sets

    sets = {"holdout": (Path(holdout_dir) / "data.yaml", None)}
    for tag, (yaml_path, n) in build_slice_sets(
        Path(holdout_dir), slice_tags, Path(work_dir) / "slices", trained.classes
    ).items():
        sets[f"slice:{tag}"] = (yaml_path, n)
    champ, chall = {}, {}
    for name, (yaml_path, _n) in sets.items():
        key = name.replace(":", ".").replace(" ", "_")
        champ[name] = _metrics(
            evaluate_model(trained.run_id, champion.pt, str(yaml_path), trained.imgsz,
                           f"champion.{key}", device)
        )  # fmt: skip
        chall[name] = _metrics(
            evaluate_model(trained.run_id, trained.best_pt, str(yaml_path), trained.imgsz,
                           f"challenger.{key}", device)
        )  # fmt: skip
    return Evaluations(
        champ,
        chall,
        {k: n for k, (_, n) in sets.items()},
        [t for t in slice_tags if f"slice:{t}" in sets],
    )


def export_and_benchmark(
    trained: TrainedModel,
    champion: ChampionRef,
    holdout_yaml: str,
    *,
    tensorrt_fp16: bool,
    tensorrt_int8: bool,
    batch: int,
    warmup: int,
    iterations: int,
) -> dict:
    """ONNX parity on the holdout and serving benchmarks (candidate and champion); TensorRT
    engines where a CUDA device and TensorRT are present, else skipped with the reason."""
    from cvloop.export import benchmark_onnx, tensorrt_status

    onnx_eval = evaluate_model(
        trained.run_id, trained.onnx, holdout_yaml, trained.imgsz, "challenger_onnx.holdout"
    )
    exports: dict[str, dict] = {"onnx": {"status": "ok", "map50_95": onnx_eval.map50_95}}
    ok, why = tensorrt_status()
    for fmt, wanted in (("tensorrt_fp16", tensorrt_fp16), ("tensorrt_int8", tensorrt_int8)):
        if wanted:
            exports[fmt] = (
                {"status": "skipped", "reason": why}
                if not ok
                else {"status": "failed", "reason": "TensorRT export is not wired yet"}
            )
    bench = {
        who: benchmark_onnx(
            Path(path), trained.classes, trained.imgsz, batch=batch, warmup=warmup,
            iterations=iterations,
        ).as_dict()
        for who, path in (("challenger", trained.onnx), ("champion", champion.onnx))
    }  # fmt: skip
    client = _client()
    for who, b in bench.items():
        for k in ("p50_ms", "p95_ms", "p99_ms", "throughput_fps", "memory_mb", "file_mb"):
            client.log_metric(trained.run_id, f"bench.{who}.onnx.{k}", b[k])
    return {"exports": exports, "benchmarks": bench}


def gate_candidate(
    trained: TrainedModel, evals: Evaluations, exported: dict, classes: list[str], gate
) -> dict:
    """Run every gate; the report goes to the training run either way."""
    report: GateReport = evaluate_gates(
        evals.champion,
        evals.challenger,
        classes,
        evals.slices,
        exported["exports"],
        holdout_map_tolerance_points=gate.holdout_map_tolerance_points,
        class_ap_tolerance_points=gate.class_ap_tolerance_points,
        drift_slice_min_gain_points=gate.drift_slice_min_gain_points,
        new_class_min_ap=gate.new_class_min_ap,
        export_parity_points=gate.export_parity_points,
        int8_parity_points=gate.int8_parity_points,
    )
    client = _client()
    client.log_text(trained.run_id, report.markdown(), "gate/report.md")
    client.log_dict(trained.run_id, report.as_dict(), "gate/report.json")
    client.set_tag(trained.run_id, "cvloop.gate", "passed" if report.passed else "rejected")
    return report.as_dict()


def register_candidate(
    trained: TrainedModel,
    champion: ChampionRef,
    evals: Evaluations,
    exported: dict,
    gate_report: dict,
    lineage: dict,
    model_name: str,
) -> str:
    """Register the candidate either way, with lineage, gate results and the benchmark;
    alias ``challenger`` only when every gate passed (set after every tag is on)."""
    from cvloop.training import EvalResult
    from tasks.model import register_model

    h = evals.challenger["holdout"]
    holdout = EvalResult(
        h["map50_95"], h["map50"], h["precision"], h["recall"],
        {k.split(".", 1)[1]: v for k, v in h.items() if k.startswith("ap50_95.")},
        {k.split(".", 1)[1]: v for k, v in h.items() if k.startswith("ap50.")},
        0, 0,
    )  # fmt: skip
    failed = [f"{c['name']}: {c['detail']}" for c in gate_report["checks"] if not c["passed"]]
    bench = exported["benchmarks"]["challenger"]
    extra = {
        "cvloop.gate": "passed" if gate_report["passed"] else "rejected",
        "cvloop.gate.reasons": _fit_json(failed, 4900),
        "cvloop.bench.onnx": json.dumps(
            {k: bench[k] for k in ("device", "p50_ms", "p95_ms", "p99_ms", "throughput_fps")}
        ),
        "cvloop.exports": json.dumps({k: v.get("status") for k, v in exported["exports"].items()}),
    }
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


def _fit_json(items: list[str], limit: int) -> str:
    """A JSON list that fits an MLflow tag: whole reasons only, then a count of the rest."""
    kept = list(items)
    text = json.dumps(kept)
    while len(text) > limit and kept:
        kept.pop()
        text = json.dumps([*kept, f"... and {len(items) - len(kept)} more (gate/report.json)"])
    return text


@task(name="publish_gate_report")
def publish_gate_report(gate_report: dict, evals: Evaluations, exported: dict, version: str) -> str:
    from prefect.artifacts import create_markdown_artifact

    lines = [
        f"# Candidate v{version}: {'PASSED' if gate_report['passed'] else 'REJECTED'}",
        "",
        "| set | frames | champion mAP50-95 | candidate mAP50-95 |",
        "|---|---|---|---|",
    ]
    for name, n in evals.sets.items():
        c = evals.champion.get(name, {}).get("map50_95")
        d = evals.challenger.get(name, {}).get("map50_95")
        lines.append(
            f"| {name} | {n if n is not None else 'all'} | "
            f"{'—' if c is None else f'{c:.4f}'} | {'—' if d is None else f'{d:.4f}'} |"
        )
    lines += ["", "| gate | result | detail |", "|---|---|---|"]
    for c in gate_report["checks"]:
        mark = "skipped" if c["skipped"] else ("pass" if c["passed"] else "**FAIL**")
        lines.append(f"| {c['name']} | {mark} | {c['detail']} |")
    lines += ["", "| model | format | device | p50 ms | p95 ms | p99 ms | batch | frames/s | MB |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for who, b in exported["benchmarks"].items():
        lines.append(
            f"| {who} | {b['format']} | {b['device']} | {b['p50_ms']} | {b['p95_ms']} | "
            f"{b['p99_ms']} | {b['batch']} | {b['throughput_fps']} | {b['file_mb']} |"
        )
    md = "\n".join(lines) + "\n"
    create_markdown_artifact(markdown=md, key="gate-report", description=f"candidate v{version}")
    return md


def candidate_lineage(versions) -> dict:
    """Lineage tags of a candidate trained on ``versions`` (a :class:`NewVersions`)."""
    from cvloop.lineage import git_commit, params_sha256
    from cvloop.params import params
    from tasks.data import HOLDOUT_POINTER, data_repo

    holdout = versions.holdout or {}
    if not holdout:
        repo = data_repo()
        tags = repo.tags("holdout-v*")
        holdout = {"name": tags[-1] if tags else "unknown"}
        if (repo.root / HOLDOUT_POINTER).exists():
            holdout["dvc_md5"] = repo.pointer_info(HOLDOUT_POINTER)["md5"]
    return {
        "dataset_version": versions.dataset["name"],
        "dataset_dvc_md5": versions.dataset["dvc_md5"],
        "dataset_git_rev": versions.dataset["git_rev"],
        "holdout_version": holdout["name"],
        "git_commit": git_commit(),
        "params_sha256": params_sha256(),
        "schema_version": str(params().schema_.label_policy_version),
    }


def slice_tags(cameras: list[str] | None, classes: list[str] | None) -> list[str]:
    """The holdout tags of the drift slices named by the triggering event."""
    return [f"drift:camera {c}" for c in cameras or []] + [
        f"drift:class {c}" for c in classes or []
    ]


resolve_champion_task = task(resolve_champion, name="resolve_champion", persist_result=True)
fine_tune_task = task(fine_tune, name="fine_tune", persist_result=True)
evaluate_pair_task = task(evaluate_pair, name="evaluate_pair", persist_result=True)
export_and_benchmark_task = task(
    export_and_benchmark, name="export_and_benchmark", persist_result=True
)
gate_candidate_task = task(gate_candidate, name="gate_candidate", persist_result=True)
register_candidate_task = task(register_candidate, name="register_candidate")
candidate_lineage_task = task(candidate_lineage, name="candidate_lineage")
slice_tags_task = task(slice_tags, name="slice_tags")
