"""Model half of the retrain (runbook steps 6–8): fine-tune a candidate from the champion,
score champion and candidate on the same frames, export and benchmark, gate, register.

Plain functions (a test calls them without Prefect) with ``@task`` wrappers at the end.
Each passes run ids, paths and small records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from prefect import task

from cvloop.core.gates import GateReport, evaluate_gates
from tasks.model import TrainedModel, _client, evaluate_model, start_training_run, train_model


@dataclass(frozen=True)
class ChampionRef:
    version: str
    pt: str
    onnx: str
    classes: list[str]
    imgsz: int


@dataclass(frozen=True)
class TrainingData:
    """The data a candidate is trained and judged on: a dataset version and the holdout."""

    dataset: dict  # name, dvc_md5, git_rev
    holdout: dict  # name, dvc_md5
    dataset_yaml: str
    holdout_dir: str


@dataclass(frozen=True)
class Evaluations:
    """Metrics per evaluation set (``holdout``, ``slice:<tag>``) for both models."""

    champion: dict
    challenger: dict
    sets: dict  # name -> frames
    slices: list[str]  # the drift slices that gate (each tag, then drift:all)
    new_classes: list[str] = field(default_factory=list)  # no champion baseline


def training_data(versions=None, dataset_version: str | None = None) -> TrainingData:
    """From the retrain's new versions (a :class:`NewVersions`), or, for a candidate run on
    its own, from the data repository's checkout, which must hold ``dataset_version``
    (default: the newest)."""
    from cvloop.adapters.versioning import VersioningError
    from tasks.data import DATASET_DIR, DATASET_POINTER, HOLDOUT_DIR, HOLDOUT_POINTER, data_repo

    repo = data_repo()
    repo.checkout([DATASET_POINTER, HOLDOUT_POINTER])
    holdout = dict(versions.holdout) if versions is not None and versions.holdout else {}
    if not holdout:
        tags = repo.tags("holdout-v*")
        holdout = {"name": tags[-1] if tags else "unknown"}
        if (repo.root / HOLDOUT_POINTER).exists():
            holdout["dvc_md5"] = repo.pointer_info(HOLDOUT_POINTER)["md5"]
    holdout = {k: holdout[k] for k in ("name", "dvc_md5") if k in holdout}
    if versions is not None:
        d = versions.dataset
        dataset = {"name": d["name"], "dvc_md5": d["dvc_md5"], "git_rev": d["git_rev"]}
        return TrainingData(dataset, holdout, versions.dataset_yaml, versions.holdout_dir)
    tags = repo.tags("dataset-v*")
    name = dataset_version or (tags[-1] if tags else None)
    if name is None or name not in tags:
        raise VersioningError(
            f"dataset version {name!r} not found in {repo.root} (versions: {', '.join(tags)})",
            fix="name one of the versions, or run `cvloop bootstrap` / the retrain flow first",
        )
    md5 = repo.pointer_info(DATASET_POINTER)["md5"]
    import yaml

    tagged = yaml.safe_load(repo.git("show", f"{name}:{DATASET_POINTER}"))["outs"][0]["md5"]
    if tagged != md5:
        raise VersioningError(
            f"the data repository's checkout is not {name} (datasets.dvc {md5[:12]}, "
            f"{name} has {tagged[:12]})",
            fix=f"cd {repo.root} && git checkout {name} -- {DATASET_POINTER} && dvc checkout "
            f"{DATASET_POINTER}, or train on the newest version",
        )
    rev = repo.git("rev-list", "-n", "1", name)
    return TrainingData(
        {"name": name, "dvc_md5": md5, "git_rev": rev},
        holdout,
        str(repo.root / DATASET_DIR / "data.yaml"),
        str(repo.root / HOLDOUT_DIR),
    )


def holdout_drift_tags(holdout_dir: str, holdout_version: str) -> list[str]:
    """The drift slices of the frames a holdout version added (what its retrain was about)."""
    from cvloop.adapters.datasets import read_manifest

    tags = {
        t
        for e in read_manifest(Path(holdout_dir))
        if e.added_in == holdout_version
        for t in e.slice_tags
        if t.startswith("drift:")
    }
    return sorted(tags)


def resolve_champion() -> ChampionRef:
    """The champion's files from the registry (sha256 verified on fetch)."""
    from registry.models import CHAMPION, ModelRegistry

    reg = ModelRegistry.from_settings()
    m = reg.fetch_alias(CHAMPION)
    return ChampionRef(str(reg.alias_version(CHAMPION)), str(m.pt), str(m.onnx), m.classes, m.imgsz)


def fine_tune(
    retrain_run_id: str,
    champion: ChampionRef,
    data: TrainingData,
    out_dir: str,
    experiment: str,
    train,
) -> TrainedModel:
    """Fine-tune from the champion's best.pt on the new dataset version with ``train``
    (params.yaml's section: lr0, epochs, imgsz, batch, device, ...); the training run is a
    child of the retrain's MLflow run."""
    from cvloop.config.lineage import git_commit

    run_id = start_training_run(
        experiment,
        f"finetune-{data.dataset['name']}-from-v{champion.version}",
        {
            "epochs": train.epochs,
            "lr0": train.lr0,
            "imgsz": train.imgsz,
            "batch": train.batch,
            "init": "champion",
        },
        {
            "mlflow.parentRunId": retrain_run_id,
            "cvloop.flow": "retrain",
            "cvloop.dataset.version": data.dataset["name"],
            "cvloop.dataset.dvc_md5": data.dataset["dvc_md5"],
            "cvloop.parent_version": champion.version,
            "cvloop.git_commit": git_commit(),
        },
    )
    source, classes = champion.pt, list(champion.classes)
    names = _dataset_names(data.dataset_yaml)
    if names and names != classes:
        # the class schema changed: start from best.pt with the head resized, each kept
        # class keeping its learned output (cvloop/adapters/head.py), new classes from the prior
        from cvloop.adapters.head import resize_checkpoint
        from tasks.schema import schema_log

        # renamed classes keep their rows under the new name (the schema log knows which)
        sources = schema_log().sources(classes)
        init, rep = resize_checkpoint(
            champion.pt,
            names,
            Path(out_dir) / run_id / "init" / "resized-from-champion.pt",
            sources or None,
        )
        _client().set_tag(
            run_id,
            "cvloop.head_resize",
            json.dumps(
                {"kept": rep.kept_classes, "new": rep.new_classes, "dropped": rep.dropped_classes}
            ),
        )
        source, classes = str(init), names
        data_yaml = repeat_new_class_frames(
            data.dataset_yaml, [names.index(c) for c in rep.new_classes],
            getattr(train, "new_class_repeat", 1), Path(out_dir) / run_id / "init",
        )  # fmt: skip
        _client().log_param(run_id, "new_class_repeat", getattr(train, "new_class_repeat", 1))
    else:
        data_yaml = data.dataset_yaml
    return train_model(
        run_id,
        data_yaml,
        source,
        classes,
        out_dir,
        epochs=train.epochs,
        lr0=train.lr0,
        imgsz=train.imgsz,
        batch=train.batch,
        device=train.device,
        workers=train.workers,
        patience=train.patience,
        seed=train.seed,
    )


def repeat_new_class_frames(data_yaml: str, new_ids: list[int], repeat: int, dest: Path) -> str:
    """A data.yaml whose training list names each frame holding a new class ``repeat``
    times (repeat-factor sampling): a class the champion never saw starts from its prior
    with a few dozen frames among hundreds, and would otherwise barely move in a short
    fine-tune. Validation and the class list are the dataset's own; the dataset version
    itself is unchanged. Without new classes (or ``repeat`` 1) the dataset's data.yaml."""
    import yaml

    if not new_ids or repeat <= 1:
        return data_yaml
    src = Path(data_yaml)
    cfg = yaml.safe_load(src.read_text()) or {}
    root = Path(cfg.get("path") or src.parent)
    if not root.is_absolute():
        root = src.parent / root
    train_dir = root / str(cfg["train"])
    wanted = {str(i) for i in new_ids}
    lines = []
    for image in sorted(
        p for p in train_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    ):
        # Ultralytics' own rule: the last /images/ of the path becomes /labels/
        label = Path("/labels/".join(str(image.with_suffix(".txt")).rsplit("/images/", 1)))
        ids = (
            {ln.split()[0] for ln in label.read_text().splitlines() if ln.strip()}
            if label.exists()
            else set()
        )
        lines += [str(image)] * (repeat if ids & wanted else 1)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "train.txt").write_text("\n".join(lines) + "\n")
    val = root / str(cfg["val"])
    out = {**cfg, "path": str(root), "train": str(dest / "train.txt"), "val": str(val)}
    (dest / "data.yaml").write_text(yaml.safe_dump(out, sort_keys=False))
    return str(dest / "data.yaml")


def _dataset_names(data_yaml: str) -> list[str]:
    """The class names of a dataset's data.yaml, in id order."""
    import yaml

    names = (yaml.safe_load(Path(data_yaml).read_text()) or {}).get("names") or {}
    if isinstance(names, dict):
        return [names[k] for k in sorted(names, key=int)]
    return list(names)


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
    serving_conf: float = 0.25,
) -> Evaluations:
    """Champion and candidate on the same frames, in this run: the holdout, each drift
    slice of it, the slices pooled (``drift:all``) and its clean part; mAP, precision,
    recall, per-class AP (Ultralytics on the .pt) and the expected calibration error of the
    served model (ONNX, at the serving threshold). Logged to the candidate's training run."""
    from cvloop.adapters.cameras import registry
    from cvloop.adapters.eval_sets import build_slice_sets, class_view
    from cvloop.adapters.storage import open_storage
    from cvloop.stages.evaluate import model_ece

    sets = {"holdout": (Path(holdout_dir) / "data.yaml", None)}
    groups = {c: r["group"] for c, r in registry(open_storage()).items()}
    for tag, (yaml_path, n) in build_slice_sets(
        Path(holdout_dir), slice_tags, Path(work_dir) / "slices", trained.classes, groups
    ).items():
        sets[f"slice:{tag}"] = (yaml_path, n)
    # after a schema change the champion predicts another class list: it is scored on a
    # view of the same frames labelled in its classes, and its per-class results are named
    # by today's classes (a class it cannot predict has no champion baseline)
    view, renamed = _champion_view(champion, trained.classes)
    client = _client()
    champ, chall = {}, {}
    for name, (yaml_path, _n) in sets.items():
        key = name.replace(":", ".").replace(" ", "_")
        champ_yaml = yaml_path
        if view is not None:
            champ_yaml = class_view(Path(yaml_path).parent, Path(work_dir) / "champion-view" /
                                    key, list(champion.classes), view)  # fmt: skip
        for who, pt, onnx, out, yml, names in (
            ("champion", champion.pt, champion.onnx, champ, champ_yaml, champion.classes),
            ("challenger", trained.best_pt, trained.onnx, chall, yaml_path, trained.classes),
        ):
            res = evaluate_model(trained.run_id, pt, str(yml), trained.imgsz,
                                 f"{who}.{key}", device)  # fmt: skip
            out[name] = _metrics(res)
            if who == "champion" and renamed is not None:
                out[name] = _renamed(out[name], renamed)
            ece = model_ece(Path(onnx), list(names), trained.imgsz, Path(yml),
                            conf=serving_conf)  # fmt: skip
            if ece is not None:
                out[name]["ece"] = ece
                client.log_metric(trained.run_id, f"{who}.{key}.ece", ece)
    return Evaluations(
        champ,
        chall,
        {k: n for k, (_, n) in sets.items()},
        [*slice_tags, "drift:all"] if slice_tags else [],
        [c for c in trained.classes if c not in set((renamed or {}).values())]
        if renamed is not None
        else [],
    )


def _champion_view(
    champion: ChampionRef, classes: list[str]
) -> tuple[dict[int, int | None] | None, dict[str, str] | None]:
    """(today's id -> champion id, champion name -> today's name) when the class lists
    differ; (None, None) when they are the same."""
    if list(champion.classes) == list(classes):
        return None, None
    from tasks.schema import schema_log

    sources = schema_log().sources(list(champion.classes)) or {
        c: c for c in classes if c in champion.classes
    }
    view = {
        i: (champion.classes.index(sources[c]) if c in sources else None)
        for i, c in enumerate(classes)
    }
    return view, {old: new for new, old in sources.items()}


def _renamed(metrics: dict, names: dict[str, str]) -> dict:
    """Per-class keys of the champion's metrics under today's class names (a class of its
    own that no longer exists is left out)."""
    out = {}
    for k, v in metrics.items():
        if k.startswith(("ap50_95.", "ap50.")):
            kind, cls = k.split(".", 1)
            if cls in names:
                out[f"{kind}.{names[cls]}"] = v
        else:
            out[k] = v
    return out


def export_and_benchmark(
    trained: TrainedModel, champion: ChampionRef, data: TrainingData, export
) -> dict:
    """Each export's own mAP on the holdout (parity with the .pt) and its serving benchmark.

    ONNX always (ONNX Runtime, as the fleet serves it; the champion's ONNX is measured in
    the same run as the baseline). Where CUDA and TensorRT are present: an FP16 engine and,
    with ``export.tensorrt_int8``, an INT8 engine calibrated on frames of the dataset, each
    benchmarked against the PyTorch FP32 .pt on the same GPU; otherwise each TensorRT
    export is recorded as skipped with the reason. ``export`` is params.yaml's section.
    """
    from cvloop.adapters.export import (
        benchmark_engine,
        benchmark_onnx_isolated,
        export_tensorrt,
        tensorrt_status,
    )

    holdout_yaml = f"{data.holdout_dir}/data.yaml"
    onnx_eval = evaluate_model(
        trained.run_id, trained.onnx, holdout_yaml, trained.imgsz, "challenger_onnx.holdout"
    )
    exports: dict[str, dict] = {
        "onnx": {"status": "ok", "map50_95": onnx_eval.map50_95, "path": trained.onnx}
    }
    bench = {
        f"{who}.onnx": benchmark_onnx_isolated(
            Path(path), list(names), trained.imgsz, batch=export.bench_batch,
            warmup=export.bench_warmup, iterations=export.bench_iterations,
        ).as_dict()
        for who, path, names in (("challenger", trained.onnx, trained.classes),
                                 ("champion", champion.onnx, champion.classes))
    }  # fmt: skip
    ok, why = tensorrt_status()
    wanted = [
        ("tensorrt_fp16", export.tensorrt_fp16, False),
        ("tensorrt_int8", export.tensorrt_int8, True),
    ]
    for fmt, on, int8 in wanted:
        if not on:
            continue
        if not ok:
            exports[fmt] = {"status": "skipped", "reason": why}
            continue
        try:
            engine = export_tensorrt(
                Path(trained.best_pt), trained.imgsz,
                Path(trained.best_pt).with_name(f"best-{fmt.split('_')[1]}.engine"),
                int8=int8, calibration_yaml=Path(data.dataset_yaml),
                calibration_frames=export.int8_calibration_frames, batch=export.bench_batch,
            )  # fmt: skip
            m = evaluate_model(trained.run_id, str(engine), holdout_yaml, trained.imgsz,
                               f"challenger_{fmt}.holdout", "0")  # fmt: skip
            exports[fmt] = {"status": "ok", "map50_95": m.map50_95, "path": str(engine)}
            bench[f"challenger.{fmt}"] = benchmark_engine(
                engine, trained.imgsz, batch=export.bench_batch, warmup=export.bench_warmup,
                iterations=export.bench_iterations, fmt=fmt,
            ).as_dict()  # fmt: skip
        except Exception as exc:  # a failed export gates (fails closed), with its reason
            exports[fmt] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]}
    if any(v["status"] == "ok" for k, v in exports.items() if k.startswith("tensorrt")):
        bench["challenger.pytorch_fp32"] = benchmark_engine(
            Path(trained.best_pt), trained.imgsz, batch=export.bench_batch,
            warmup=export.bench_warmup, iterations=export.bench_iterations, fmt="pytorch_fp32",
        ).as_dict()  # fmt: skip
    client = _client()
    for who, b in bench.items():
        for k in ("p50_ms", "p95_ms", "p99_ms", "throughput_fps", "memory_mb", "file_mb"):
            client.log_metric(trained.run_id, f"bench.{who}.{k}", b[k])
    for fmt, e in exports.items():
        if e["status"] == "ok" and fmt != "onnx":
            client.log_artifact(trained.run_id, e["path"], "model")
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
        slice_frames={t: evals.sets.get(f"slice:{t}") or 0 for t in evals.slices},
        min_slice_frames=gate.min_slice_frames,
        new_classes=evals.new_classes,
        group_slices={
            s.removeprefix("slice:"): n for s, n in evals.sets.items()
            if s.startswith("slice:group:")
        },
    )  # fmt: skip
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
    drift_cameras: list[str] | None = None,
) -> str:
    """Register the candidate either way, with lineage, gate results and the benchmark;
    alias ``challenger`` only when every gate passed (set after every tag is on)."""
    from cvloop.adapters.training import EvalResult
    from tasks.model import register_model

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
        "cvloop.gate": "passed" if gate_report["passed"] else "rejected",
        "cvloop.gate.reasons": _fit_json(failed, 4900),
        "cvloop.exports": json.dumps({k: v.get("status") for k, v in exported["exports"].items()}),
        "cvloop.drift.cameras": ",".join(drift_cameras or []),
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


def _fit_json(items: list[str], limit: int) -> str:
    """A JSON list that fits an MLflow tag: whole reasons only, then a count of the rest."""
    kept = list(items)
    text = json.dumps(kept)
    while len(text) > limit and kept:
        kept.pop()
        text = json.dumps([*kept, f"... and {len(items) - len(kept)} more (gate/report.json)"])
    return text


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.4f}"


def comparison_markdown(gate_report: dict, evals: Evaluations, exported: dict, version: str) -> str:
    """The candidate's report: champion vs candidate per set and per class, calibration,
    every gate, every export and its benchmark (Prefect artifact and MLflow text)."""
    verdict = "PASSED" if gate_report["passed"] else "REJECTED"
    lines = [
        f"# Candidate v{version}: {verdict}",
        "",
        "| set | frames | champion mAP50-95 | candidate mAP50-95 | Δ points | champion mAP50 "
        "| candidate mAP50 | champion ECE | candidate ECE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, n in evals.sets.items():
        c, d = evals.champion.get(name, {}), evals.challenger.get(name, {})
        cm, dm = c.get("map50_95"), d.get("map50_95")
        delta = "—" if cm is None or dm is None else f"{(dm - cm) * 100:+.2f}"
        lines.append(
            f"| {name} | {n if n is not None else 'all'} | {_fmt(cm)} | {_fmt(dm)} | {delta} | "
            f"{_fmt(c.get('map50'))} | {_fmt(d.get('map50'))} | {_fmt(c.get('ece'))} | "
            f"{_fmt(d.get('ece'))} |"
        )
    h_c, h_d = evals.champion.get("holdout", {}), evals.challenger.get("holdout", {})
    classes = sorted({k.split(".", 1)[1] for k in [*h_c, *h_d] if k.startswith("ap50_95.")})
    lines += ["", "| class (holdout) | champion AP50-95 | candidate AP50-95 | champion AP50 "
              "| candidate AP50 |", "|---|---|---|---|---|"]  # fmt: skip
    for cls in classes:
        lines.append(
            f"| {cls} | {_fmt(h_c.get(f'ap50_95.{cls}'))} | {_fmt(h_d.get(f'ap50_95.{cls}'))} "
            f"| {_fmt(h_c.get(f'ap50.{cls}'))} | {_fmt(h_d.get(f'ap50.{cls}'))} |"
        )
    lines += ["", "| gate | result | detail |", "|---|---|---|"]
    for c in gate_report["checks"]:
        mark = "skipped" if c["skipped"] else ("pass" if c["passed"] else "**FAIL**")
        lines.append(f"| {c['name']} | {mark} | {c['detail']} |")
    lines += ["", "| export | status | holdout mAP50-95 | note |", "|---|---|---|---|"]
    for fmt, e in exported["exports"].items():
        lines.append(
            f"| {fmt} | {e['status']} | {_fmt(e.get('map50_95'))} | {e.get('reason', '')} |"
        )
    lines += ["", "| model.format | device | p50 ms | p95 ms | p99 ms | batch | frames/s "
              "| memory MB | file MB |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for who, b in exported["benchmarks"].items():
        lines.append(
            f"| {who} | {b['device']} | {b['p50_ms']} | {b['p95_ms']} | {b['p99_ms']} | "
            f"{b['batch']} | {b['throughput_fps']} | {b['memory_mb']} | {b['file_mb']} |"
        )
    return "\n".join(lines) + "\n"


@task(name="publish_gate_report")
def publish_gate_report(
    gate_report: dict, evals: Evaluations, exported: dict, version: str, run_id: str
) -> str:
    from prefect.artifacts import create_markdown_artifact

    md = comparison_markdown(gate_report, evals, exported, version)
    _client().log_text(run_id, md, "gate/comparison.md")
    create_markdown_artifact(markdown=md, key="gate-report", description=f"candidate v{version}")
    return md


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


def dataset_schema(dataset_yaml: str) -> dict:
    """The schema version a dataset folder's labels follow, and its label policy."""
    from cvloop.adapters.datasets import folder_schema
    from tasks.schema import schema_log

    n = folder_schema(Path(dataset_yaml).parent)
    policy = schema_log().get(n).label_policy_version
    return {"schema_version": f"schema-v{n}", "label_policy_version": str(policy)}


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
training_data_task = task(training_data, name="training_data", persist_result=True)
holdout_drift_tags_task = task(holdout_drift_tags, name="holdout_drift_tags")
