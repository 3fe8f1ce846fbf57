"""TensorRT engines of a trained champion on a CUDA device: built, scored on the holdout
like the .pt (parity), benchmarked against PyTorch FP32. Skipped with the reason without
CUDA (`make test-gpu` installs requirements/gpu.lock first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import context

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("int8", [False, True], ids=["fp16", "int8"])
def test_engine_matches_the_pt_on_the_holdout_and_is_benchmarked(
    booted, stack_client_env, tmp_path, int8
):
    from cvloop.adapters.export import benchmark_engine, export_tensorrt
    from cvloop.adapters.training import evaluate
    from cvloop.config.params import load_params

    p = load_params()
    champ = context().registry.fetch_alias("champion")
    holdout = Path(booted.repo) / "holdout" / "data" / "data.yaml"
    dataset = Path(booted.repo) / "datasets" / "data.yaml"
    engine = export_tensorrt(
        champ.pt, champ.imgsz, tmp_path / "best.engine", int8=int8, calibration_yaml=dataset,
        calibration_frames=32, batch=4,
    )  # fmt: skip
    assert engine.stat().st_size > 0
    pt = evaluate(champ.pt, holdout, imgsz=champ.imgsz, device="0")
    eng = evaluate(engine, holdout, imgsz=champ.imgsz, device="0")
    limit = p.gate.int8_parity_points if int8 else p.gate.export_parity_points
    assert abs(eng.map50_95 - pt.map50_95) * 100 <= limit, (pt.map50_95, eng.map50_95)
    fmt = "tensorrt_int8" if int8 else "tensorrt_fp16"
    b = benchmark_engine(engine, champ.imgsz, batch=4, warmup=5, iterations=50, fmt=fmt)
    base = benchmark_engine(champ.pt, champ.imgsz, batch=4, warmup=5, iterations=50,
                            fmt="pytorch_fp32")  # fmt: skip
    assert 0 < b.p50_ms <= b.p95_ms <= b.p99_ms and b.throughput_fps > 0
    assert base.p50_ms > 0 and base.throughput_fps > 0 and b.device == base.device
    print(f"{fmt}: p50 {b.p50_ms} ms vs PyTorch FP32 {base.p50_ms} ms "
          f"(x{base.p50_ms / b.p50_ms:.2f}); mAP50-95 {eng.map50_95:.4f} vs {pt.map50_95:.4f}")  # fmt: skip
