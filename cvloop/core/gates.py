"""Runbook step 7: may the challenger go to production? Every gate fails closed.

Champion and challenger are scored on the same frames in the same run; the gates read
those metrics as plain mappings (``{"map50_95": 0.61, "ap50_95.cone": 0.55, ...}`` per
evaluation set: ``holdout`` and ``slice:<name>`` for each drift slice) so that a missing
number is visible as missing — and a missing number fails its gate.

Gates (thresholds in ``params.yaml`` → ``gate``, in mAP *points*, i.e. x100):

* ``holdout_map``: challenger holdout mAP50-95 not below the champion's by more than
  ``holdout_map_tolerance_points``;
* ``class_ap:<class>``: per class on the holdout, AP50-95 not below the champion's by more
  than ``class_ap_tolerance_points``; a class the champion has no AP for (new: added to the
  schema since, "no champion baseline") must reach ``new_class_min_ap`` AP50; when the class
  lists differ, the mAP gates compare the mean AP over the classes both models know;
* ``group_map:<group>``: when the holdout spans several camera groups (the camera
  registry), each group's mAP50-95 not below the champion's by more than
  ``holdout_map_tolerance_points`` (a group under ``min_slice_frames`` frames is reported);
* ``drift_slice:<slice>``: each drift slice's mAP50-95 improves by at least
  ``drift_slice_min_gain_points``; a slice with fewer than ``min_slice_frames`` holdout
  frames is reported but judged only inside the pooled ``drift:all`` slice (a dozen frames
  make a noisy mAP), which always gates;
  a run with no drift slice at all (nothing flagged anywhere) says so in a ``drift_slice``
  row and in the report's notes, rather than passing silently;
* ``clean_map``: the clean part of the holdout (frames no drift touched) may not regress
  beyond ``holdout_map_tolerance_points`` (a drift gain must not be paid for elsewhere); it
  is judged within the whole holdout when it is the whole holdout or under
  ``min_slice_frames`` frames;
* ``calibration``: the challenger's expected calibration error on the holdout (at the
  serving threshold) not above the champion's by more than ``calibration_tolerance``;
* ``robustness:<corruption>``: on the holdout as a worse camera gives it (noise, blur,
  heavy JPEG, dim; seed 002), the challenger's mAP50-95 not below the champion's by more
  than ``robustness_tolerance_points``;
* ``export_parity:<format>``: an exported artifact's own holdout mAP50-95 within
  ``export_parity_points`` of the .pt's (``int8_parity_points`` for INT8); an export that was
  skipped (no CUDA for TensorRT) is recorded with its reason and does not gate, an export
  that failed does.

All checks run; the report lists every failing reason at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from cvloop.core import slices

ALL = str(slices.DRIFT_ALL)

Metrics = Mapping[str, float]


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    detail: str
    skipped: bool = False


@dataclass(frozen=True)
class GateReport:
    checks: list[GateCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. where the drift slices came from

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]

    def as_dict(self) -> dict:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks],
                "notes": list(self.notes)}  # fmt: skip

    def markdown(self) -> str:
        lines = [f"# Gate: {'PASSED' if self.passed else 'REJECTED'}", ""]
        lines += [f"- {n}" for n in self.notes] + ([""] if self.notes else [])
        lines += ["| gate | result | detail |", "|---|---|---|"]
        for c in self.checks:
            mark = "skipped" if c.skipped else ("pass" if c.passed else "**FAIL**")
            lines.append(f"| {c.name} | {mark} | {c.detail} |")
        return "\n".join(lines) + "\n"


def _get(metrics: Mapping[str, Metrics] | None, dataset: str, key: str) -> float | None:
    if not metrics or dataset not in metrics or metrics[dataset] is None:
        return None
    value = metrics[dataset].get(key)
    return None if value is None or value != value else float(value)  # NaN is missing


def _map(
    metrics: Mapping[str, Metrics] | None, dataset: str, common: Sequence[str] | None
) -> float | None:
    """mAP50-95 of an evaluation set; over ``common`` classes only (the mean of their APs,
    each present) when the two models' class lists differ."""
    if common is None:
        return _get(metrics, dataset, "map50_95")
    aps = [_get(metrics, dataset, f"ap50_95.{c}") for c in common]
    aps = [a for a in aps if a is not None]
    return sum(aps) / len(aps) if aps else None


def _points(diff: float) -> float:
    """A difference of fractions in mAP points, rounded so that a threshold is inclusive
    (0.495 - 0.5 is -0.5 points, not -0.5000000000000004)."""
    return round(diff * 100, 6)


def _missing(name: str, what: list[str]) -> GateCheck:
    return GateCheck(name, False, f"missing metric: {', '.join(what)} (fails closed)")


def _slice_maps(champion, challenger, sl: str, common, name: str, checks: list) -> tuple | None:
    """Both models' mAP50-95 on slice ``sl``; a missing one is a failing check (None)."""
    c_m = _map(champion, f"slice:{sl}", common)
    d_m = _map(challenger, f"slice:{sl}", common)
    if c_m is None or d_m is None:
        missing = [w for w, v in (("champion", c_m), ("challenger", d_m)) if v is None]
        checks.append(_missing(name, [f"{w} mAP50-95 on slice {sl}" for w in missing]))
        return None
    return c_m, d_m


def evaluate_gates(
    champion: Mapping[str, Metrics] | None,
    challenger: Mapping[str, Metrics] | None,
    classes: Sequence[str],
    drift_slices: Sequence[str],
    exports: Mapping[str, Mapping[str, object]],
    *,
    holdout_map_tolerance_points: float,
    class_ap_tolerance_points: float,
    drift_slice_min_gain_points: float,
    new_class_min_ap: float,
    export_parity_points: float,
    int8_parity_points: float,
    slice_frames: Mapping[str, int] | None = None,
    min_slice_frames: int = 0,
    new_classes: Sequence[str] = (),
    group_slices: Mapping[str, int] | None = None,
    calibration_tolerance: float = 0.02,
    robustness_corruptions: Sequence[str] = (),
    robustness_tolerance_points: float = 2.0,
    drift_note: str = "",
    clean_frames: int | None = None,
    holdout_frames: int | None = None,
) -> GateReport:
    """Run every gate.

    Args:
        champion, challenger: evaluation set -> metrics (``holdout``, ``slice:<name>``).
        classes: the schema's classes (each gets a class-AP gate).
        drift_slices: the slice names that must improve.
        slice_frames: slice name -> holdout frames in it; with ``min_slice_frames``, a
            smaller slice (other than the pooled ``drift:all``) does not gate alone.
        exports: format -> ``{"status": "ok"|"skipped"|"failed", "map50_95": x,
            "reason": str}``; the .pt's own holdout mAP is the challenger's ``holdout``.
        new_classes: classes the champion cannot predict (added to the schema since): each
            must reach ``new_class_min_ap`` on its own; the champion-vs-challenger mAP gates
            compare the mean AP over the classes both know (apples to apples).
        group_slices: ``group:<name>`` -> holdout frames of that camera group (when the
            holdout spans several): each may not regress beyond the holdout tolerance (a
            region is not averaged away); a group under ``min_slice_frames`` is reported.
        drift_note: where the drift slices came from (the run, the latest monitor check),
            or why there are none; in the report's notes.
        clean_frames, holdout_frames: frames of the holdout's clean part and of the whole.
    """
    checks: list[GateCheck] = []
    new_set = set(new_classes)
    common = [c for c in classes if c not in new_set] if new_set else None
    # 1. the holdout must not get worse (beyond the tolerance)
    ch = _map(champion, "holdout", common)
    cd = _map(challenger, "holdout", common)
    cd_all = _get(challenger, "holdout", "map50_95")
    over = f" over the {len(common)} classes both know" if common is not None else ""
    if ch is None or cd is None:
        missing = [
            w for w, v in (("champion holdout", ch), ("challenger holdout", cd)) if v is None
        ]
        checks.append(_missing("holdout_map", missing))
    else:
        delta = _points(cd - ch)
        checks.append(
            GateCheck(
                "holdout_map",
                delta >= -holdout_map_tolerance_points,
                f"mAP50-95{over} {ch:.4f} -> {cd:.4f} ({delta:+.2f} points; tolerance "
                f"-{holdout_map_tolerance_points})",
            )
        )
    # 2. no class may regress on the holdout; new classes must reach a floor
    for cls in classes:
        name = f"class_ap:{cls}"
        c_ap = None if cls in new_set else _get(champion, "holdout", f"ap50_95.{cls}")
        d_ap = _get(challenger, "holdout", f"ap50_95.{cls}")
        if d_ap is None:
            checks.append(_missing(name, [f"challenger AP50-95 of {cls}"]))
        elif c_ap is None:
            d50 = _get(challenger, "holdout", f"ap50.{cls}")
            if d50 is None:
                checks.append(_missing(name, [f"challenger AP50 of new class {cls}"]))
            else:
                checks.append(
                    GateCheck(
                        name,
                        d50 >= new_class_min_ap,
                        f"new class (no champion baseline): AP50 {d50:.4f} (minimum "
                        f"{new_class_min_ap})",
                    )
                )
        else:
            delta = _points(d_ap - c_ap)
            checks.append(
                GateCheck(
                    name,
                    delta >= -class_ap_tolerance_points,
                    f"AP50-95 {c_ap:.4f} -> {d_ap:.4f} ({delta:+.2f} points; tolerance "
                    f"-{class_ap_tolerance_points})",
                )
            )

    # 2b. no camera group may regress on its holdout frames
    for sl, n in sorted((group_slices or {}).items()):
        _no_regression(champion, challenger, sl, f"group_map:{sl.split(':', 1)[1]}", n,
                       "frames", min_slice_frames, holdout_map_tolerance_points, common, over,
                       checks)  # fmt: skip

    # 2c. the clean part of the holdout must not pay for the drift gain
    _clean_gate(champion, challenger, common, over, clean_frames, holdout_frames,
                min_slice_frames, holdout_map_tolerance_points, checks)  # fmt: skip
    # 2d. the challenger's confidences must mean what they say, at least as the champion's
    _calibration_gate(champion, challenger, calibration_tolerance, checks, new_classes)
    # 2e. nor may it break where a worse camera would give it worse frames
    for kind in robustness_corruptions:
        name, sl = f"robustness:{kind}", f"robust:{kind}"
        c_m, d_m = _map(champion, sl, common), _map(challenger, sl, common)
        if c_m is None or d_m is None:
            missing = [w for w, v in (("champion", c_m), ("challenger", d_m)) if v is None]
            checks.append(_missing(name, [f"{w} mAP50-95 on the {kind} holdout" for w in missing]))
            continue
        delta = _points(d_m - c_m)
        checks.append(GateCheck(name, delta >= -robustness_tolerance_points,
                                f"mAP50-95{over} on the holdout with {kind} {c_m:.4f} -> "
                                f"{d_m:.4f} ({delta:+.2f} points; tolerance "
                                f"-{robustness_tolerance_points})"))  # fmt: skip

    # 3. every drift slice must improve
    if not drift_slices:
        checks.append(GateCheck("drift_slice", True, "no drift slice to gate: "
                                f"{drift_note or 'the run named none'}", True))  # fmt: skip

    def new_class_slice(sl: str) -> bool:
        tag = slices.SliceTag.maybe(sl)
        return tag is not None and tag.kind == "class" and tag.name in new_set

    only_new = bool(new_set) and all(new_class_slice(x) for x in drift_slices if x != ALL)
    for sl in drift_slices:
        name = f"drift_slice:{sl}"
        if sl == ALL and only_new:
            checks.append(
                GateCheck(
                    name,
                    True,
                    "every drift slice is a new class's: judged by its class_ap gate",
                    True,
                )
            )
            continue
        if new_class_slice(sl):
            checks.append(
                GateCheck(
                    name,
                    True,
                    f"a new class: judged by class_ap:{sl.split(' ', 1)[1]} (no champion "
                    "baseline to improve on)",
                    True,
                )
            )
            continue
        n = (slice_frames or {}).get(sl)
        if n is not None and n < min_slice_frames and sl != ALL:
            checks.append(
                GateCheck(
                    name,
                    True,
                    f"{n} holdout frames < {min_slice_frames}: judged in the pooled drift:all "
                    "slice, not alone",
                    True,
                )
            )
            continue
        if (maps := _slice_maps(champion, challenger, sl, common, name, checks)) is None:
            continue
        c_m, d_m = maps
        gain = _points(d_m - c_m)
        checks.append(
            GateCheck(
                name,
                gain >= drift_slice_min_gain_points,
                f"mAP50-95{over} {c_m:.4f} -> {d_m:.4f} ({gain:+.2f} points; minimum gain "
                f"+{drift_slice_min_gain_points})",
            )
        )
    # 4. an exported artifact must score like the .pt it came from
    for fmt, result in exports.items():
        name = f"export_parity:{fmt}"
        status = result.get("status")
        if status == "skipped":
            checks.append(GateCheck(name, True, f"skipped: {result.get('reason')}", True))
            continue
        if status != "ok":
            checks.append(GateCheck(name, False, f"export failed: {result.get('reason')}"))
            continue
        m = result.get("map50_95")
        if m is None or cd_all is None:
            missing = [w for w, v in ((fmt, m), ("challenger .pt", cd_all)) if v is None]
            checks.append(_missing(name, [f"{w} holdout mAP50-95" for w in missing]))
            continue
        limit = int8_parity_points if "int8" in fmt.lower() else export_parity_points
        delta = _points(float(m) - cd_all)
        checks.append(
            GateCheck(
                name,
                abs(delta) <= limit,
                f"mAP50-95 .pt {cd_all:.4f} vs {fmt} {float(m):.4f} ({delta:+.2f} points; "
                f"limit ±{limit})",
            )
        )
    notes = (
        [f"drift slices: {', '.join(drift_slices) or 'none'} ({drift_note})"] if drift_note else []
    )
    return GateReport(checks, notes)


def _no_regression(champion, challenger, sl: str, name: str, n: int, what: str,
                   min_frames: int, tolerance: float, common, over: str, checks) -> None:  # fmt: skip
    """Slice ``sl`` (``n`` holdout ``what``) may not lose more than ``tolerance`` points;
    under ``min_frames`` frames it is only reported (judged within the whole holdout)."""
    if n < min_frames:
        checks.append(GateCheck(name, True, f"{n} holdout {what} (< {min_frames}): judged "
                                "within the whole holdout", True))  # fmt: skip
        return
    if (maps := _slice_maps(champion, challenger, sl, common, name, checks)) is None:
        return
    c_m, d_m = maps
    delta = _points(d_m - c_m)
    checks.append(GateCheck(
        name, delta >= -tolerance,
        f"mAP50-95{over} {c_m:.4f} -> {d_m:.4f} on {n} {what} ({delta:+.2f} points; "
        f"tolerance -{tolerance})"))  # fmt: skip


def _clean_gate(champion, challenger, common, over, n, total, min_frames, tolerance, checks):
    name = "clean_map"
    if not n:
        checks.append(GateCheck(name, True, "the holdout has no clean part (every frame is a "
                                "drift frame): judged by holdout_map", True))  # fmt: skip
    elif total is not None and n >= total:
        checks.append(GateCheck(name, True, "the whole holdout is clean (no drift frames): "
                                "judged by holdout_map", True))  # fmt: skip
    else:
        _no_regression(champion, challenger, slices.CLEAN, name, n, "clean frames", min_frames,
                       tolerance, common, over, checks)  # fmt: skip


def _calibration_gate(champion, challenger, tolerance: float, checks, new_classes=()) -> None:
    """Expected calibration error on the holdout: lower is better (a new class has no
    champion baseline: the challenger's ECE is over the classes both know)."""
    over = f" (over the classes both know; new: {', '.join(new_classes)})" if new_classes else ""
    c_e, d_e = _get(champion, "holdout", "ece"), _get(challenger, "holdout", "ece")
    if d_e is None:
        checks.append(_missing("calibration", ["challenger holdout ECE (no box at the "
                                               "serving threshold?)"]))  # fmt: skip
    elif c_e is None:
        checks.append(GateCheck("calibration", True, f"ECE {d_e:.4f}; the champion has none "
                                "on this holdout (no box at the serving threshold)", True))  # fmt: skip
    else:
        checks.append(GateCheck(
            "calibration", d_e <= c_e + tolerance,
            f"ECE {c_e:.4f} -> {d_e:.4f} ({d_e - c_e:+.4f}; tolerance +{tolerance}){over}"))  # fmt: skip
