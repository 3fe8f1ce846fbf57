"""Runbook step 7, export + benchmark: each export's own holdout mAP (parity with the .pt)
and its serving benchmark, the champion's ONNX measured in the same run as the baseline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cvloop.stages.candidate import TrainingData
from cvloop.stages.model import (
    ChampionRef,
    TrainedModel,
    evaluate_model,
)

if TYPE_CHECKING:
    from cvloop.config.params import ExportParams
    from cvloop.context import Context


@dataclass(frozen=True)
class ExportResult:
    """One export of the candidate: ``ok`` (with its own holdout mAP and file), ``skipped``
    (with why: no CUDA for TensorRT) or ``failed`` (with why: it gates, fails closed)."""

    status: str
    map50_95: float | None = None
    path: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Exported:
    """Every export and every serving benchmark (``<who>.<format>`` -> the benchmark)."""

    exports: dict[str, ExportResult] = field(default_factory=dict)
    benchmarks: dict[str, dict] = field(default_factory=dict)

    def for_gates(self) -> dict[str, dict]:
        """The exports as the gates read them (``cvloop/core/gates.py``)."""
        return {k: asdict(v) for k, v in self.exports.items()}


def export_and_benchmark(
    ctx: Context,
    trained: TrainedModel,
    champion: ChampionRef,
    data: TrainingData,
    export: ExportParams,
) -> Exported:
    """Each export's own mAP on the holdout (parity with the .pt) and its serving benchmark.

    ONNX always (ONNX Runtime, as the fleet serves it; the champion's ONNX is measured in
    the same run as the baseline). With ``export.openvino_fp32`` and OpenVINO installed: an
    FP32 IR converted from that ONNX, scored by Ultralytics' OpenVINO backend and benchmarked
    as ``cvloop serve`` runs it (``serve.runtime: openvino``) beside ONNX Runtime; recorded
    as skipped with the reason where OpenVINO is absent. Where CUDA and TensorRT are present: an FP16 engine and,
    with ``export.tensorrt_int8``, an INT8 engine calibrated on frames of the dataset, each
    benchmarked against the PyTorch FP32 .pt on the same GPU; otherwise each TensorRT
    export is recorded as skipped with the reason. ``export`` is params.yaml's section.
    """
    from cvloop.adapters.export import (
        benchmark_engine,
        benchmark_onnx_isolated,
        export_openvino,
        export_tensorrt,
        openvino_status,
        tensorrt_status,
    )

    holdout_yaml = f"{data.holdout_dir}/data.yaml"
    onnx_eval = evaluate_model(
        ctx, trained.run_id, trained.onnx, holdout_yaml, trained.imgsz, "challenger_onnx.holdout"
    )
    exports: dict[str, ExportResult] = {
        "onnx": ExportResult("ok", onnx_eval.map50_95, trained.onnx)
    }
    bench = {
        f"{who}.onnx": benchmark_onnx_isolated(
            Path(path), list(names), trained.imgsz, batch=export.bench_batch,
            warmup=export.bench_warmup, iterations=export.bench_iterations,
        ).as_dict()
        for who, path, names in (("challenger", trained.onnx, trained.classes),
                                 ("champion", champion.onnx, champion.classes))
    }  # fmt: skip
    if export.openvino_fp32:
        ov_ok, ov_why = openvino_status()
        if not ov_ok:
            exports["openvino_fp32"] = ExportResult("skipped", reason=ov_why)
        else:
            try:
                ir = export_openvino(Path(trained.onnx), trained.imgsz, list(trained.classes))
                m = evaluate_model(ctx, trained.run_id, str(ir), holdout_yaml, trained.imgsz,
                                   "challenger_openvino_fp32.holdout", "cpu")  # fmt: skip
                exports["openvino_fp32"] = ExportResult("ok", m.map50_95, str(ir))
                bench["challenger.openvino_fp32"] = benchmark_onnx_isolated(
                    Path(trained.onnx), list(trained.classes), trained.imgsz,
                    batch=export.bench_batch, warmup=export.bench_warmup,
                    iterations=export.bench_iterations, runtime="openvino",
                ).as_dict()  # fmt: skip
            except Exception as exc:  # a failed export gates (fails closed), with its reason
                exports["openvino_fp32"] = ExportResult(
                    "failed", reason=f"{type(exc).__name__}: {exc}"[:500]
                )
    ok, why = tensorrt_status()
    wanted = [
        ("tensorrt_fp16", export.tensorrt_fp16, False),
        ("tensorrt_int8", export.tensorrt_int8, True),
    ]
    for fmt, on, int8 in wanted:
        if not on:
            continue
        if not ok:
            exports[fmt] = ExportResult("skipped", reason=why)
            continue
        try:
            engine = export_tensorrt(
                Path(trained.best_pt), trained.imgsz,
                Path(trained.best_pt).with_name(f"best-{fmt.split('_')[1]}.engine"),
                int8=int8, calibration_yaml=Path(data.dataset_yaml),
                calibration_frames=export.int8_calibration_frames, batch=export.bench_batch,
            )  # fmt: skip
            m = evaluate_model(ctx, trained.run_id, str(engine), holdout_yaml, trained.imgsz,
                               f"challenger_{fmt}.holdout", "0")  # fmt: skip
            exports[fmt] = ExportResult("ok", m.map50_95, str(engine))
            bench[f"challenger.{fmt}"] = benchmark_engine(
                engine, trained.imgsz, batch=export.bench_batch, warmup=export.bench_warmup,
                iterations=export.bench_iterations, fmt=fmt,
            ).as_dict()  # fmt: skip
        except Exception as exc:  # a failed export gates (fails closed), with its reason
            exports[fmt] = ExportResult("failed", reason=f"{type(exc).__name__}: {exc}"[:500])
    if any(v.status == "ok" for k, v in exports.items() if k.startswith("tensorrt")):
        bench["challenger.pytorch_fp32"] = benchmark_engine(
            Path(trained.best_pt), trained.imgsz, batch=export.bench_batch,
            warmup=export.bench_warmup, iterations=export.bench_iterations, fmt="pytorch_fp32",
        ).as_dict()  # fmt: skip
    keys = ("p50_ms", "p95_ms", "p99_ms", "throughput_fps", "memory_mb", "file_mb")
    ctx.tracker.log_metrics(trained.run_id, {f"bench.{who}.{k}": b[k] for who, b in bench.items()
                                             for k in keys})  # fmt: skip
    for fmt, e in exports.items():
        if e.status == "ok" and fmt != "onnx":
            if Path(e.path).is_dir():  # an OpenVINO IR: .xml + .bin + metadata.yaml
                ctx.tracker.log_folder(trained.run_id, e.path, f"model/{Path(e.path).name}")
            else:
                ctx.tracker.log_file(trained.run_id, e.path, "model")
    return Exported(exports, bench)


def export_triton(ctx: Context, version: str, out: Path, *, instances: int = 1,
                  gpu: bool = False, max_batch: int | None = None):  # fmt: skip
    """A Triton model repository for registered ``version`` (runbooks/serve.md): its ONNX
    checked against the registry's sha256, the config read from the graph, batching from
    params.yaml's ``serve`` section."""
    from cvloop.adapters.triton import write_repository
    from registry.names import ADOPT_ORIGIN, DATASET_VERSION, SOURCE, TRAINING_RUN

    local = ctx.registry.fetch(str(version))
    tags = local.tags
    origin = (f"adopted from {tags.get(ADOPT_ORIGIN, '?')}" if tags.get(SOURCE) == "adopted"
              else f"training run {tags.get(TRAINING_RUN, '?')}, dataset "
              f"{tags.get(DATASET_VERSION, '?')}")  # fmt: skip
    sp = ctx.params.serve
    return write_repository(
        Path(out), ctx.params.registry.model_name, str(version), local.onnx,
        local.sha256["onnx"], local.classes, max_batch=max_batch or sp.max_batch,
        max_wait_ms=sp.max_wait_ms, instances=instances, gpu=gpu,
        provenance=f"Registered version {version} ({origin}); ONNX sha256 "
        f"{local.sha256['onnx'][:12]}.", imgsz=local.imgsz,
    )  # fmt: skip
