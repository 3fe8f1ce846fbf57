"""Monitor stage: drift signals, holdout trend, triggers, reports, the drift event.

Plain functions (testable without Prefect); ``tasks/monitor.py`` wraps them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cvloop.config.params import MonitorParams, Params
from cvloop.core.signals import SliceDrift, Window, most_drifted, windows
from cvloop.core.triggers import (
    TriggerResult,
    days_since_training,
    drift_slices,
    holdout_map_drop,
    ks_with_ap_regression,
    new_labels,
    severe_drift,
)
from cvloop.stages.signals import compute_drift_by_group
from registry.names import (
    CHAMPION_VERSION,
    HOLDOUT_MAP50_95,
    HOLDOUT_PER_CLASS,
    HOLDOUT_REFERENCE_MAP50_95,
    HOLDOUT_REFERENCE_PER_CLASS,
    HOLDOUT_REFERENCE_VERSION,
    HOLDOUT_VERSION,
    TRIGGERS_FIRED,
    WINDOW_CURRENT,
    WINDOW_REFERENCE,
)

if TYPE_CHECKING:
    from cvloop.context import Context


def monitor_experiment(ctx: Context) -> str:
    """The MLflow experiment of the weekly checks: ``<registry.experiment>-monitor``
    (``cvloop-monitor`` by default), one per detector, so two detectors on one MLflow
    never read each other's weekly mAP series."""
    return f"{ctx.params.registry.experiment}-monitor"


@dataclass(frozen=True)
class Windows:
    ref_start: str
    ref_end: str
    cur_start: str
    cur_end: str

    def as_windows(self) -> tuple[Window, Window]:
        f = dt.datetime.fromisoformat
        return (
            Window(f(self.ref_start), f(self.ref_end)),
            Window(f(self.cur_start), f(self.cur_end)),
        )

    @property
    def dates(self) -> tuple[dt.date, dt.date]:
        """The first and last day the check reads (reference through current window)."""
        f = dt.datetime.fromisoformat
        return f(self.ref_start).date(), (f(self.cur_end) - dt.timedelta(milliseconds=1)).date()

    @property
    def iso_week(self) -> int:
        """The check's week: ISO year * 100 + ISO week of the current window's last day."""
        last = (dt.datetime.fromisoformat(self.cur_end) - dt.timedelta(milliseconds=1)).date()
        y, w, _ = last.isocalendar()
        return y * 100 + w


@dataclass
class HoldoutCheck:
    champion: str | None
    holdout_version: str | None
    map50_95: float | None
    map50: float | None
    per_class_ap50_95: dict[str, float]
    reference_map50_95: float | None
    reference_per_class: dict[str, float]
    history: list[tuple[int, float]]
    days_since_training: float | None
    note: str = ""


def first_served_day(ctx: Context, version: str, before: dt.date) -> dt.date | None:
    """The first day in the inference log on which ``version`` served frames."""
    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import log_dates, read_log

    store = ctx.store
    for day in log_dates(store):
        if day >= before:
            break
        t = read_log(store, day, day + dt.timedelta(days=1), columns=["model_version"])
        if t.num_rows and pc.any(pc.equal(t["model_version"], version)).as_py():
            return day
    return None


def resolve_windows(
    ctx: Context,
    current_end: str | None,
    current_days: int,
    reference_days: int,
    reference_start: str | None,
) -> Windows:
    """The current window ends at ``current_end`` (default today). The reference starts at
    ``reference_start``; by default it is the champion's first ``reference_days`` in
    production (its validation baseline), else the period just before the current window."""
    end = dt.date.fromisoformat(current_end) if current_end else dt.date.today()
    ref_start = dt.date.fromisoformat(reference_start) if reference_start else None
    if ref_start is None:
        from registry.names import CHAMPION

        champion = ctx.registry.alias_version(CHAMPION)
        cur_start = end - dt.timedelta(days=current_days)
        first = first_served_day(ctx, champion, cur_start) if champion else None
        if first and first + dt.timedelta(days=reference_days) <= cur_start:
            ref_start = first
    ref, cur = windows(end, current_days, reference_days, ref_start)
    return Windows(
        ref.start.isoformat(), ref.end.isoformat(), cur.start.isoformat(), cur.end.isoformat()
    )


def compute_drift_signals(
    ctx: Context, w: Windows, classes: list[str], m: MonitorParams
) -> list[dict]:
    """Every signal on every slice (rows of plain values: small, serializable)."""
    from cvloop.core.drift import signal_bins

    ref, cur = w.as_windows()
    bins = signal_bins(m.confidence_bins, m.size_bins, m.volume_max_per_frame)
    rows = compute_drift_by_group(
        ctx.store, ref, cur, classes, m.min_slice_detections, m.exact_max_detections,
        m.reference_days, bins,
    )  # fmt: skip
    return [r.row() for r in rows]


def _slices_from_rows(rows: list[dict]) -> list[SliceDrift]:
    from cvloop.core.drift import DriftStats

    out = []
    for r in rows:
        stats = DriftStats(
            r["ks_stat"],
            r["ks_p"],
            r["psi"],
            r["wasserstein"],
            r["n_ref"],
            r["n_cur"],
            r["enough_data"],
        )
        out.append(SliceDrift(r["signal"], r["kind"], r["slice"], stats, r["path"]))
    return out


def check_holdout(ctx: Context, w: Windows, imgsz_default: int, device: str) -> HoldoutCheck:
    """Score the champion on the holdout and read the weekly history of this champion."""
    from cvloop.adapters.training import evaluate
    from registry.names import CHAMPION

    reg = ctx.registry
    version = reg.alias_version(CHAMPION)
    if version is None:
        return HoldoutCheck(None, None, None, None, {}, None, {}, [], None, "no champion")
    model = reg.fetch(version)
    tags = model.tags
    holdout_yaml = ctx.settings.data_repo / "holdout" / "data" / "data.yaml"
    stamp = holdout_yaml.parent / "VERSION"
    scored = stamp.read_text().strip() if stamp.exists() else tags.get("cvloop.holdout.version")
    # after a quarterly refresh the champion was re-scored on the new holdout: that score is
    # the reference, and only weeks measured on the same holdout version make the trend
    ref_version = tags.get(HOLDOUT_REFERENCE_VERSION)
    if ref_version:
        ref_map = float(tags[HOLDOUT_REFERENCE_MAP50_95])
        ref_cls = json.loads(tags.get(HOLDOUT_REFERENCE_PER_CLASS, "{}"))
    else:
        ref_map = float(tags[HOLDOUT_MAP50_95]) if HOLDOUT_MAP50_95 in tags else None
        ref_cls = json.loads(tags.get(HOLDOUT_PER_CLASS, "{}"))
    mv = reg.get_version(version)
    trained_ms = ctx.tracker.get_run(mv.run_id).start_time_ms
    days = (dt.datetime.now(dt.UTC).timestamp() * 1000 - trained_ms) / 86_400_000
    past = _history(ctx, version, scored, legacy=ref_version is None)
    if not holdout_yaml.exists():
        return HoldoutCheck(
            version,
            scored,
            None,
            None,
            {},
            ref_map,
            ref_cls,
            past,
            days,
            f"holdout not found at {holdout_yaml} (dvc pull holdout/data.dvc)",
        )
    r = evaluate(model.pt, holdout_yaml, imgsz=model.imgsz or imgsz_default, device=device)
    history = [h for h in past if h[0] != w.iso_week] + [(w.iso_week, r.map50_95)]
    return HoldoutCheck(
        version,
        scored,
        r.map50_95,
        r.map50,
        r.per_class_ap50_95,
        ref_map,
        ref_cls,
        sorted(history),
        days,
    )


def _history(
    ctx: Context, version: str, holdout_version: str | None, legacy: bool = True
) -> list[tuple[int, float]]:
    """Weekly holdout mAP50-95 of ``version`` logged by earlier monitor runs on the same
    holdout version (``legacy``: runs that did not record theirs count too)."""
    out = {}
    for run in ctx.tracker.find_runs(monitor_experiment(ctx), tags={CHAMPION_VERSION: version},
                                     max_results=500, oldest_first=True):  # fmt: skip
        hv = run.tags.get(HOLDOUT_VERSION)
        if hv != holdout_version and not (hv is None and legacy):
            continue
        for step, value in ctx.tracker.metric_history(run.run_id, "holdout.map50_95"):
            out[step] = value
    return sorted(out.items())


def count_new_labels(ctx: Context, since_days: float | None) -> int | None:
    """Labeled frames for training since the champion was trained: the review queues'
    (a holdout refresh's labels never reach training, so they do not count)."""
    if since_days is None:
        return None
    try:
        from label_studio_sdk import LabelStudio

        from cvloop.adapters.labelstudio import labels_for_training

        s = ctx.settings
        client = LabelStudio(
            base_url=s.label_studio_url, api_key=s.label_studio_token(), timeout=10
        )
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=since_days)
        return labels_for_training(client.projects.list(), since, ctx.params.registry.model_name)
    except Exception:
        return None


def evaluate_triggers(
    rows: list[dict], holdout: HoldoutCheck, labels: int | None, p: Params
) -> list[TriggerResult]:
    drift = _slices_from_rows(rows)
    t = p.trigger
    return [
        holdout_map_drop(holdout.history, holdout.reference_map50_95, t),
        ks_with_ap_regression(drift, holdout.per_class_ap50_95, holdout.reference_per_class, t),
        new_labels(labels, t),
        days_since_training(holdout.days_since_training, t),
        severe_drift(drift, t),
    ]


def trigger_table(results: list[TriggerResult]) -> str:
    lines = ["| rule | fired | value | threshold | why |", "|---|---|---|---|---|"]
    for r in results:
        mark = "🔴 FIRED" if r.fired else "🟢 no"
        lines.append(f"| {r.rule} | {mark} | {r.value} | {r.threshold} | {r.explanation} |")
    return "\n".join(lines)


def drifted_table(rows: list[dict], k: int = 10) -> str:
    top = most_drifted(_slices_from_rows(rows), k)
    lines = [
        "| signal | slice | KS | KS p | PSI | Wasserstein | n ref / cur | path |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in top:
        s = r.stats
        lines.append(
            f"| {r.signal} | {r.kind} {r.name} | {s.ks_stat:.3f} | {s.ks_p:.2e} | "
            f"{s.psi:.3f} | {s.wasserstein:.3f} | {s.n_ref} / {s.n_cur} | {r.path} |"
        )
    small = sum(1 for r in rows if not r["enough_data"])
    return "\n".join(lines) + f"\n\n{small} slice-signals had not enough data (never an alarm)."


def log_monitor_run(
    ctx: Context,
    w: Windows,
    rows: list[dict],
    holdout: HoldoutCheck,
    results: list[TriggerResult],
    report_dir: str,
) -> dict[str, str]:
    """One MLflow run per check: holdout metrics at the ISO week, drift figures, reports."""
    t = ctx.tracker
    run_id = t.start_run(
        monitor_experiment(ctx),
        f"monitor-{w.iso_week}",
        None,
        {
            CHAMPION_VERSION: str(holdout.champion),
            HOLDOUT_VERSION: str(holdout.holdout_version),
            WINDOW_CURRENT: f"{w.cur_start}..{w.cur_end}",
            WINDOW_REFERENCE: f"{w.ref_start}..{w.ref_end}",
            TRIGGERS_FIRED: ",".join(r.rule for r in results if r.fired) or "none",
        },
    )
    metrics: dict[str, float] = {}
    if holdout.map50_95 is not None:
        metrics["holdout.map50_95"] = holdout.map50_95
        metrics["holdout.map50"] = holdout.map50 or 0.0
        metrics |= {f"holdout.ap50_95.{c}": v for c, v in holdout.per_class_ap50_95.items()}
    for r in rows:
        if r["enough_data"] and r["kind"] in ("overall", "camera", "class", "group"):
            base = f"drift.{r['signal']}.{r['kind']}.{r['slice'].replace('*', 'all')}"
            for stat in ("ks_p", "psi", "wasserstein"):
                metrics[f"{base}.{stat}"] = float(r[stat])
    t.log_metrics(run_id, metrics, step=w.iso_week)
    t.log_folder(run_id, report_dir, "drift-report")
    # the slices this check flagged, for a retrain that names none (a manual one, a rule-1
    # trigger): it is gated on the drift the latest check saw
    t.log_dict(run_id, {"drift_slices": drift_slices(results),
                        "fired": [r.rule for r in results if r.fired]}, FLAGGED_ARTIFACT)  # fmt: skip
    t.finish(run_id)
    base = ctx.settings.mlflow_tracking_uri
    return {
        "run_id": run_id,
        "run_url": t.run_url(run_id),
        "artifact_url": f"{base}/get-artifact?path=drift-report/{{name}}&run_uuid={run_id}",
    }


FLAGGED_ARTIFACT = "drift/flagged.json"


def latest_flagged(ctx: Context, max_age_days: float) -> dict:
    """The drift slices of the newest monitor check of the last ``max_age_days`` (for a
    retrain that names none: a manual one, a rule-1 trigger), with a sentence saying where
    they came from (the run's log, its MLflow tags and its gate report):
    ``{"drift_slices": [...], "cameras": [...], "classes": [...], "note": str}``."""
    end = dt.datetime.now(dt.UTC)
    since = end - dt.timedelta(days=max_age_days)
    exp = monitor_experiment(ctx)
    for run in ctx.tracker.find_runs(exp, started=(since, end), max_results=20):  # newest first
        if FLAGGED_ARTIFACT not in ctx.tracker.artifacts(run.run_id, "drift"):
            continue  # a check made before checks recorded their slices
        data = json.loads(ctx.tracker.download(run.run_id, FLAGGED_ARTIFACT).read_text())
        found = list(data.get("drift_slices") or [])
        check = (
            f"{run.name} ({dt.datetime.fromtimestamp(run.start_time_ms / 1000, dt.UTC):%Y-%m-%d})"
        )
        return {
            "drift_slices": found,
            "cameras": sorted({s["name"] for s in found if s["kind"] == "camera"}),
            "classes": sorted({s["name"] for s in found if s["kind"] == "class"}),
            "note": (f"the latest monitor check, {check}, flagged them" if found else
                     f"no drift anywhere: the latest monitor check, {check}, flagged no slice"),
        }  # fmt: skip
    return {"drift_slices": [], "cameras": [], "classes": [],
            "note": f"no drift slice known: no monitor check in the last {max_age_days:g} days "
                    f"(MLflow experiment {exp})"}  # fmt: skip


def report_dir(ctx: Context, w: Windows) -> Path:
    d = ctx.settings.home / "reports" / "monitor" / str(w.iso_week)
    d.mkdir(parents=True, exist_ok=True)
    return d
