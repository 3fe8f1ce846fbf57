"""Runbook step 7, the decision: champion vs candidate metrics through the gates
(``cvloop/core/gates.py``), and the comparison report operators and the ML lead read."""

from __future__ import annotations

import json

from cvloop.core.gates import GateReport, evaluate_gates
from cvloop.stages.evaluate import Evaluations
from cvloop.stages.model import (
    TrainedModel,
    _client,
)
from registry.names import GATE


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
    client.set_tag(trained.run_id, GATE, "passed" if report.passed else "rejected")
    return report.as_dict()


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
