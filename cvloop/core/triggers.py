"""Retrain trigger rules: each returns its value, its threshold, and whether it fired.

Rules (``params.yaml`` -> ``trigger``):

1. ``holdout_map_drop`` (runbook): the champion's holdout mAP50-95 is more than
   ``holdout_map_drop_points`` below its value at registration for
   ``holdout_map_drop_weeks`` consecutive weekly checks.
2. ``confidence_ks_with_ap_regression`` (runbook): a slice's confidence KS p-value is
   below ``confidence_ks_p`` *and* a class's holdout AP50-95 is more than
   ``class_ap_regression_points`` below its value at registration.
3. ``new_labels``: at least ``new_labels_min`` labeled samples since the last training.
4. ``days_since_training``: at least ``max_days_since_training`` days since the champion
   was trained.
5. ``severe_drift`` (cvloop, on by default): a camera or class slice where one of the three
   signals has a KS p-value below ``confidence_ks_p`` *and* a PSI of at least
   ``severe_drift_psi`` or
   whose normed Wasserstein distance is at least ``severe_drift_wasserstein`` — a major
   shift that a frozen holdout cannot show yet (the holdout only learns the new conditions
   from the drift frames each retrain adds to it).

A rule that lacks its input (no holdout history yet, Label Studio unreachable) does not
fire, and says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from cvloop.core.signals import SliceDrift

if TYPE_CHECKING:
    from cvloop.config.params import TriggerParams


@dataclass
class TriggerResult:
    rule: str
    fired: bool
    value: str
    threshold: str
    explanation: str
    slices: list[dict] = field(default_factory=list)

    def row(self) -> dict:
        return asdict(self)


def holdout_map_drop(
    history: list[tuple[int, float]], reference: float | None, p: TriggerParams
) -> TriggerResult:
    """``history``: (ISO week, mAP50-95) of the weekly checks, oldest first."""
    name, need = "holdout_map_drop", p.holdout_map_drop_weeks
    threshold = f"> {p.holdout_map_drop_points:g} pt below reference for {need} weeks"
    if reference is None:
        return TriggerResult(name, False, "n/a", threshold, "no reference mAP on the champion")
    if not history:
        return TriggerResult(name, False, "n/a", threshold, "no weekly holdout value yet")
    drops = [(w, (reference - v) * 100) for w, v in history]
    run = 0
    for _, d in reversed(drops):
        if d > p.holdout_map_drop_points:
            run += 1
        else:
            break
    last_week, last_drop = drops[-1]
    return TriggerResult(
        name,
        run >= need,
        f"{last_drop:+.2f} pt (week {last_week}), {run} week(s) in a row",
        threshold,
        f"reference {reference:.4f}, latest {history[-1][1]:.4f}",
    )


def ks_with_ap_regression(
    drift: list[SliceDrift], ap_now: dict[str, float], ap_ref: dict[str, float], p: TriggerParams
) -> TriggerResult:
    name = "confidence_ks_with_ap_regression"
    threshold = (
        f"KS p < {p.confidence_ks_p:g} and a class AP down > {p.class_ap_regression_points:g} pt"
    )
    ks_hits = [
        r
        for r in drift
        if r.signal == "confidence" and r.stats.enough_data and r.stats.ks_p < p.confidence_ks_p
    ]
    regressions = {
        c: (ap_ref[c] - ap_now.get(c, 0.0)) * 100
        for c in ap_ref
        if (ap_ref[c] - ap_now.get(c, 0.0)) * 100 > p.class_ap_regression_points
    }
    value = f"{len(ks_hits)} slice(s) with KS p < {p.confidence_ks_p:g}; class AP drops: " + (
        ", ".join(f"{c} {d:.1f} pt" for c, d in regressions.items()) or "none"
    )
    fired = bool(ks_hits and regressions)
    why = (
        "both conditions hold"
        if fired
        else "no confidence shift"
        if not ks_hits
        else "no class AP regression on the holdout"
    )
    return TriggerResult(
        name, fired, value, threshold, why, [_slice(r) for r in ks_hits] if fired else []
    )


def new_labels(count: int | None, p: TriggerParams) -> TriggerResult:
    name, threshold = "new_labels", f">= {p.new_labels_min}"
    if count is None:
        return TriggerResult(name, False, "unknown", threshold, "Label Studio not reachable")
    return TriggerResult(
        name,
        count >= p.new_labels_min,
        str(count),
        threshold,
        "labeled samples since the champion was trained",
    )


def days_since_training(days: float | None, p: TriggerParams) -> TriggerResult:
    name, threshold = "days_since_training", f">= {p.max_days_since_training}"
    if days is None:
        return TriggerResult(name, False, "n/a", threshold, "no champion")
    return TriggerResult(
        name,
        days >= p.max_days_since_training,
        f"{days:.1f}",
        threshold,
        "days since the champion's training run",
    )


def severe_drift(drift: list[SliceDrift], p: TriggerParams) -> TriggerResult:
    name = "severe_drift"
    threshold = (
        f"a signal of a camera/class: KS p < {p.confidence_ks_p:g} and "
        f"(PSI >= {p.severe_drift_psi:g} or W/std >= {p.severe_drift_wasserstein:g})"
    )
    if not p.severe_drift:
        return TriggerResult(name, False, "disabled", threshold, "trigger.severe_drift is false")
    hits = [
        r
        for r in drift
        if r.kind in ("camera", "class", "group")
        and r.stats.enough_data
        and r.stats.ks_p < p.confidence_ks_p
        and (r.stats.psi >= p.severe_drift_psi or r.stats.wasserstein >= p.severe_drift_wasserstein)
    ]
    value = (
        ", ".join(
            f"{r.signal} of {r.kind} {r.name} (PSI {r.stats.psi:.2f}, W {r.stats.wasserstein:.2f})"
            for r in hits
        )
        or "none"
    )
    why = "a major shift on a slice" if hits else "no slice shifted that much"
    return TriggerResult(name, bool(hits), value, threshold, why, [_slice(r) for r in hits])


def _slice(r: SliceDrift) -> dict:
    return {
        "kind": r.kind,
        "name": r.name,
        "signal": r.signal,
        "ks_p": r.stats.ks_p,
        "ks_stat": r.stats.ks_stat,
        "psi": r.stats.psi,
        "wasserstein": r.stats.wasserstein,
    }


def drift_slices(results: list[TriggerResult]) -> list[dict]:
    """The drift-flagged slices of the fired rules (deduplicated)."""
    seen, out = set(), []
    for r in results:
        if not r.fired:
            continue
        for s in r.slices:
            key = (s["kind"], s["name"])
            if key not in seen:
                seen.add(key)
                out.append(s)
    return out
