"""Runbook step 7, the decision: champion vs candidate metrics through the gates
(``cvloop/core/gates.py``), and the comparison report operators and the ML lead read."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from cvloop.core import slices
from cvloop.core.gates import GateReport, evaluate_gates
from cvloop.stages.evaluate import Evaluations
from cvloop.stages.export import Exported
from cvloop.stages.model import (
    TrainedModel,
)
from registry.names import GATE

if TYPE_CHECKING:
    from cvloop.config.params import GateParams
    from cvloop.context import Context


def gate_candidate(
    ctx: Context,
    trained: TrainedModel,
    evals: Evaluations,
    exported: Exported,
    classes: list[str],
    gate: GateParams,
    drift_note: str = "",
) -> GateReport:
    """Run every gate with ``params.yaml``'s ``gate`` section; the report goes to the
    training run either way. ``drift_note``: where the drift slices came from."""
    groups = {s.removeprefix("slice:"): n for s, n in evals.sets.items()
              if getattr(slices.SliceTag.maybe(s.removeprefix("slice:")), "family", None)
              == slices.GROUP}  # fmt: skip
    report: GateReport = evaluate_gates(
        evals.champion, evals.challenger, classes, evals.slices, exported.for_gates(),
        **gate.model_dump(),
        slice_frames={t: evals.sets.get(f"slice:{t}") or 0 for t in evals.slices},
        new_classes=evals.new_classes, group_slices=groups, drift_note=drift_note,
        clean_frames=evals.sets.get(f"slice:{slices.CLEAN}"), holdout_frames=evals.sets.get("holdout"),
    )  # fmt: skip
    owners = ctx.params.owners.names("ml_lead", "on_call")
    report = GateReport(report.checks, [*report.notes, "decides on a rejection: "
                                        + ("; ".join(owners) or "the ML lead (params.yaml owners)")])  # fmt: skip
    ctx.tracker.log_text(trained.run_id, report.markdown(), "gate/report.md")
    ctx.tracker.log_dict(trained.run_id, report.as_dict(), "gate/report.json")
    ctx.tracker.set_tags(trained.run_id, {GATE: "passed" if report.passed else "rejected"})
    return report


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


def comparison_markdown(
    gate_report: GateReport, evals: Evaluations, exported: Exported, version: str
) -> str:
    """The candidate's report: champion vs candidate per set and per class, calibration,
    every gate, every export and its benchmark (Prefect artifact and MLflow text)."""
    verdict = "PASSED" if gate_report.passed else "REJECTED"
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
    lines += ["", *[f"- {n}" for n in gate_report.notes]]
    lines += ["", "| gate | result | detail |", "|---|---|---|"]
    for c in gate_report.checks:
        mark = "skipped" if c.skipped else ("pass" if c.passed else "**FAIL**")
        lines.append(f"| {c.name} | {mark} | {c.detail} |")
    lines += ["", "| export | status | holdout mAP50-95 | note |", "|---|---|---|---|"]
    for fmt, e in exported.exports.items():
        lines.append(f"| {fmt} | {e.status} | {_fmt(e.map50_95)} | {e.reason or ''} |")
    lines += ["", "| model.format | device | p50 ms | p95 ms | p99 ms | batch | frames/s "
              "| memory MB | file MB |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for who, b in exported.benchmarks.items():
        lines.append(
            f"| {who} | {b['device']} | {b['p50_ms']} | {b['p95_ms']} | {b['p99_ms']} | "
            f"{b['batch']} | {b['throughput_fps']} | {b['memory_mb']} | {b['file_mb']} |"
        )
    return "\n".join(lines) + "\n"
