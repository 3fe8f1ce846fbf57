"""Runbook step 8: roll a challenger out 10 % → 50 % → 100 %, judged by canary checks.

Pure logic, no I/O: the rollout's state lives in the rollout manifest (``extra``), the
canary is computed from two samples of the inference log, and :func:`decide` says what the
next tick does. ``tasks/rollout.py`` reads and writes the real things.

Time: a stage lasts ``hours`` of **served traffic** — the span of the inference log's
frame timestamps since the stage began. On a live fleet that is wall-clock time; on the
synthetic fleet (demo, tests) serving a day of frames advances it by a day. The approval
deadline is wall-clock time: it waits for a person.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from cvloop.core.pairing import Quality

# manifest.stage values
STABLE = "stable"
CANARY = "canary-{share:g}"
SHADOW = "shadow"  # share 0: the challenger sees a copy of every frame, answers none

# manifest.extra keys
K_CHALLENGER = "challenger"
K_CHAMPION = "champion"
K_STAGE = "stage_index"
K_STAGE_WALL = "stage_started_at"  # wall clock (UTC ISO)
K_STAGE_LOG = "stage_log_since"  # inference-log time the stage began at (UTC ISO)
K_ROLLOUT_LOG = "rollout_log_since"  # inference-log time the rollout began at
K_APPROVAL_ASKED = "approval_requested_at"
K_DRIFT_CAMERAS = "drift_cameras"  # left out of the volume / confidence checks


@dataclass(frozen=True)
class Sample:
    """What one model version did in a canary window (from the inference log)."""

    frames: int
    errors: int
    latency_ms: np.ndarray  # successful frames
    confidences: np.ndarray  # every detection
    detections_per_frame: np.ndarray  # successful frames
    # successful frames of the drift cameras, left out of volume and confidences (the
    # candidate was retrained to behave differently there)
    drift_frames: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.frames if self.frames else 0.0

    @property
    def p95_ms(self) -> float | None:
        return float(np.percentile(self.latency_ms, 95)) if len(self.latency_ms) else None

    @property
    def volume(self) -> float | None:
        d = self.detections_per_frame
        return float(d.mean()) if len(d) else None


@dataclass(frozen=True)
class CanaryCheck:
    """One check of a canary. ``kind``: ``guard`` (operational: error rate, latency, volume —
    a failure is a breach), ``quality`` (the paired re-scoring or the labels — a failure is a
    breach, ``held`` means inconclusive: the stage holds) or ``signal`` (reported, never a
    breach on its own: the confidence-histogram shift)."""

    name: str
    passed: bool
    detail: str
    kind: str = "guard"
    held: bool = False


@dataclass(frozen=True)
class Canary:
    """``ok`` (every guard passed and the quality evidence says no loss), ``breach`` (a guard
    or the quality evidence failed) or ``insufficient`` (too few frames, or quality
    inconclusive: the stage holds, it never promotes).

    ``evidence`` says what decided: ``labels`` / ``pairing`` (the quality evidence),
    ``guards`` (an operational check breached), or ``none`` (nothing could judge yet)."""

    status: str
    challenger_frames: int
    champion_frames: int
    checks: list[CanaryCheck] = field(default_factory=list)
    note: str = ""
    evidence: str = "none"
    quality: dict = field(default_factory=dict)

    @property
    def reasons(self) -> list[str]:
        """The breached checks (a breach), else what holds the stage."""
        failed = [c for c in self.checks if not c.passed]
        breached = [c for c in failed if not c.held]
        return [f"{c.name}: {c.detail}" for c in (breached or failed)]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedLatency:
    """Both models timed on the same frames in one tick, one frame at a time, taking turns:
    the latency ratio free of the load each model met when it served.

    ``replaces_served``: at 100 % the champion serves nothing and its served latency is from
    other days, so the re-timing is the measure. Below 100 % the served p95s are the screen
    and the re-timing confirms a served breach (or finds it was load, not the model)."""

    challenger_ms: np.ndarray
    champion_ms: np.ndarray
    replaces_served: bool = True

    @property
    def frames(self) -> int:
        return len(self.challenger_ms)

    @property
    def ratio(self) -> float:
        # the median of the per-frame ratios: a load spike that hits one model's turn moves
        # one ratio, not the verdict (a p95 of 64 timings would follow three such spikes)
        return float(np.median(self.challenger_ms / np.maximum(self.champion_ms, 1e-6)))

    def describe(self) -> str:
        pa = float(np.percentile(self.challenger_ms, 95))
        pb = float(np.percentile(self.champion_ms, 95))
        return (f"x{self.ratio:.2f} per frame (median of the challenger/champion ratios), both "
                f"re-timed in this tick on the same {self.frames} served frames, taking turns "
                f"(p95 {pa:.2f} vs {pb:.2f} ms)")  # fmt: skip


@dataclass(frozen=True)
class PairedVolume:
    """Both models' detections per frame on the same frames: the paired re-scoring's sample
    (each frame scored by the model that served it and by the other, at
    ``rollout.canary.quality.match_conf``), drift cameras left out. At 100 % (and in shadow)
    the champion serves nothing now and its served volume is from other days and other
    scenes, so this is the measure (a challenger that fell below x0.8 of a busier day of
    the champion was rolled back while it kept 99.9 % of its boxes)."""

    challenger: np.ndarray
    champion: np.ndarray

    @property
    def frames(self) -> int:
        return len(self.challenger)

    def means(self) -> tuple[float, float]:
        return float(self.challenger.mean()), float(self.champion.mean())


def served_latency_breached(challenger: Sample, champion: Sample, c) -> bool:
    """Whether the served p95s trip the latency screen (or cannot be compared): the stage
    then re-times both models on the same frames before the guard decides."""
    a, b = challenger.p95_ms, champion.p95_ms
    return a is None or b is None or b <= 0 or a / b > c.p95_latency_ratio_max


def _latency_check(challenger: Sample, champion: Sample, c, paired: PairedLatency | None):
    a, b = challenger.p95_ms, champion.p95_ms
    mx = c.p95_latency_ratio_max
    served = a / b if a is not None and b is not None and b > 0 else None
    timed = paired is not None and paired.frames > 0
    if timed and paired.replaces_served:
        shown = (f"; served p95 {a:.2f} ms now, the champion's {b:.2f} ms on its canary days"
                 if served is not None else "")  # fmt: skip
        return CanaryCheck(
            "p95_latency",
            paired.ratio <= mx,
            f"{paired.describe()}; max x{mx}: the champion serves nothing at this share{shown}",
        )
    if served is None:
        return CanaryCheck("p95_latency", False, "no latency measured (fails closed)")
    detail = f"{a:.2f} ms vs champion {b:.2f} ms (x{served:.2f}; max x{mx})"
    if served <= mx or not timed:
        return CanaryCheck("p95_latency", served <= mx, detail)
    # the served screen tripped: the same frames through both models say whether the model
    # is slower or the challenger met a load the champion did not (a burst, another host)
    slower = paired.ratio > mx
    verdict = ("the model is slower" if slower else
               "the served gap is load or placement, not the model: see the serving hosts")  # fmt: skip
    return CanaryCheck("p95_latency", not slower,
                       f"served {detail}; {paired.describe()}: {verdict}")  # fmt: skip


def _guards(
    challenger: Sample,
    champion: Sample,
    c,
    paired: PairedLatency | None = None,
    volume: PairedVolume | None = None,
) -> list[CanaryCheck]:
    checks = []
    er = challenger.error_rate
    checks.append(
        CanaryCheck(
            "error_rate",
            er <= c.error_rate_max,
            f"{er:.4f} (champion {champion.error_rate:.4f}; max {c.error_rate_max})",
        )
    )
    checks.append(_latency_check(challenger, champion, c, paired))
    if volume is not None and volume.frames:
        checks.append(_paired_volume_check(volume, c))
        return checks
    va, vb = challenger.volume, champion.volume
    only_drift = [
        who
        for who, s in (("challenger", challenger), ("champion", champion))
        if s.volume is None and s.drift_frames
    ]
    if only_drift and all(s.volume is not None or s.drift_frames for s in (challenger, champion)):
        # every frame the volume could be judged on is on a drift camera (a small fleet where
        # the monitor flagged every camera, or a camera-routed stage whose cameras all
        # drifted): there is no steady frame to compare on, and the challenger is meant to
        # differ there; the paired quality evidence on the same frames decides (without it
        # the stage holds)
        checks.append(CanaryCheck(
            "volume", True,
            f"not judged: every frame the {' and the '.join(only_drift)} served without error "
            "is on a drift camera the candidate was retrained for; the paired quality "
            "check decides",
        ))  # fmt: skip
    elif va is None or vb is None:
        checks.append(CanaryCheck("volume", False, "no frame served without error (fails closed)"))
    elif vb == 0:
        checks.append(
            CanaryCheck(
                "volume",
                va == 0,
                f"{va:.2f} vs champion 0 detections per frame"
                + ("" if va == 0 else " (the champion saw nothing here)"),
            )
        )
    else:
        r = va / vb
        checks.append(
            CanaryCheck(
                "volume",
                c.volume_ratio_min <= r <= c.volume_ratio_max,
                f"{va:.2f} vs champion {vb:.2f} detections per frame (x{r:.2f}; allowed "
                f"x{c.volume_ratio_min}-x{c.volume_ratio_max})",
            )
        )
    return checks


def _paired_volume_check(volume: PairedVolume, c) -> CanaryCheck:
    va, vb = volume.means()
    same = (f"both models on the same {volume.frames} frames (the paired re-scoring: they "
            "did not serve the same period)")  # fmt: skip
    if vb == 0:
        return CanaryCheck("volume", va == 0, f"{va:.2f} vs champion 0 detections per frame, "
                           f"{same}")  # fmt: skip
    r = va / vb
    return CanaryCheck(
        "volume",
        c.volume_ratio_min <= r <= c.volume_ratio_max,
        f"{va:.2f} vs champion {vb:.2f} detections per frame (x{r:.2f}; allowed "
        f"x{c.volume_ratio_min:g}-x{c.volume_ratio_max:g}), {same}",
    )


def _confidence_signal(challenger: Sample, champion: Sample, c) -> CanaryCheck:
    """The confidence-histogram shift: reported, never a breach (a retrained model is meant
    to move it; only the paired evidence tells better from worse)."""
    ca, cb = np.sort(challenger.confidences), np.sort(champion.confidences)
    if len(ca) < 2 or len(cb) < 2:
        return CanaryCheck("confidence", True,
                           f"{len(ca)} vs champion {len(cb)} detections: too few to compare",
                           kind="signal")  # fmt: skip
    from cvloop.core.drift import ks_2samp

    d, p = ks_2samp(cb, ca)
    shifted = p < c.confidence_ks_p_min and d > c.confidence_ks_stat_max
    return CanaryCheck(
        "confidence",
        True,
        f"KS D {d:.3f}, p {p:.2g}: "
        + ("shifted" if shifted else "no marked shift")
        + f" (p < {c.confidence_ks_p_min} and D > {c.confidence_ks_stat_max}); "
        "signal only, never a breach on its own",
        kind="signal",
    )


def _quality_checks(quality: Quality | None) -> list[CanaryCheck]:
    if quality is None:
        return [CanaryCheck("quality", False, "no paired re-scoring or labels for this window "
                            "(fails closed: the stage holds)", kind="quality", held=True)]  # fmt: skip
    deciding = [
        CanaryCheck(
            q.name, q.status == "ok", q.detail, kind="quality", held=q.status == "inconclusive"
        )
        for q in quality.checks
    ]
    shown = [
        CanaryCheck(q.name, True, f"{q.detail} (reported: the labels decide)", kind="signal")
        for q in quality.reported
    ]
    return deciding + shown


def _slo_guard(challenger: Sample, champion: Sample, slo) -> CanaryCheck:
    from cvloop.core.slo import slo_check, slo_report

    passed, detail = slo_check(
        slo_report(challenger.latency_ms, challenger.frames, challenger.errors, slo),
        slo_report(champion.latency_ms, champion.frames, champion.errors, slo),
    )
    return CanaryCheck("slo", passed, detail)


def canary(
    challenger: Sample,
    champion: Sample,
    c,
    quality: Quality | None = None,
    latency: PairedLatency | None = None,
    slo=None,
    volume: PairedVolume | None = None,
) -> Canary:
    """Challenger vs champion over the same period; ``c`` is params.yaml's
    ``rollout.canary``, ``quality`` the paired evidence (:mod:`cvloop.core.pairing`) of the same
    window (None fails closed: the stage holds); ``latency``: both models re-timed on the
    same frames (:class:`PairedLatency`: the measure at 100 %, the confirmation of a served
    breach below); ``slo``: params.yaml's ``slo`` (the absolute objectives, a guard beside
    the comparison: :mod:`cvloop.core.slo`); ``volume``: both models' detections on the same
    frames (:class:`PairedVolume`: the measure when the champion serves nothing now)."""
    if challenger.frames < c.min_frames or champion.frames < c.min_frames:
        return Canary(
            "insufficient",
            challenger.frames,
            champion.frames,
            [
                CanaryCheck(
                    "sample",
                    False,
                    f"challenger {challenger.frames} / champion {champion.frames} frames; "
                    f"{c.min_frames} each needed to judge",
                    held=True,
                )
            ],
        )
    guards = _guards(challenger, champion, c, latency, volume)
    if slo is not None:
        guards.append(_slo_guard(challenger, champion, slo))
    checks = [*guards, *_quality_checks(quality), _confidence_signal(challenger, champion, c)]
    breached = [x for x in checks if not x.passed and not x.held]
    held = [x for x in checks if not x.passed and x.held]
    if breached:
        status = "breach"
        kinds = {"guard" if x.kind == "guard" else (quality.evidence if quality else "quality")
                 for x in breached}  # fmt: skip
        evidence = " + ".join(sorted(k.replace("guard", "guards") for k in kinds))
    elif held:
        status, evidence = "insufficient", "none"
    else:
        status, evidence = "ok", quality.evidence
    return Canary(status, challenger.frames, champion.frames, checks, evidence=evidence,
                  quality=quality.as_dict() if quality else {})  # fmt: skip


def with_groups(fleet: Canary, groups: dict[str, Canary]) -> Canary:
    """The fleet-wide canary plus each camera group's own (``groups``: group -> its canary).

    A breach in any one group is a breach (a region where the challenger is slow, blind or
    loses boxes is not averaged away by the others); a group with too few frames or boxes
    to judge alone is judged inside the fleet-wide sample and does not hold the stage."""
    if len(groups) < 2:
        return fleet
    checks = list(fleet.checks)
    kinds = set()
    for g, r in sorted(groups.items()):
        failed = [x for x in r.checks if not x.passed and not x.held]
        if r.status == "insufficient" and not failed:
            checks.append(CanaryCheck(f"group {g}", True,
                                      f"{r.challenger_frames} / {r.champion_frames} frames: "
                                      "too few to judge alone; judged in the fleet-wide sample"))  # fmt: skip
            continue
        checks += [CanaryCheck(f"group {g}: {x.name}", False, x.detail, x.kind) for x in failed]
        kinds |= {"guards" if x.kind == "guard" else r.evidence for x in failed}
        if not failed:
            checks.append(CanaryCheck(f"group {g}", True, "every check passed"))
    status, evidence = fleet.status, fleet.evidence
    if status != "insufficient" and any(not x.passed and not x.held for x in checks):
        if status != "breach":
            evidence = " + ".join(sorted(kinds))
        status = "breach"
    return replace(fleet, status=status, checks=checks, evidence=evidence)


def with_lost_parts(result: Canary, lost: list[str]) -> Canary:
    """The canary of a window some of whose inference-log parts were quarantined
    (unreadable, or rows of another day): the evidence is incomplete, so an ``ok`` becomes
    ``insufficient`` (the stage holds, it never promotes on it); a breach stays a breach (a
    rollback never waits for a clean log)."""
    if not lost:
        return result
    shown = ", ".join(lost[:3]) + (f" and {len(lost) - 3} more" if len(lost) > 3 else "")
    check = CanaryCheck("log parts", False,
                        f"{len(lost)} part(s) of this window quarantined, judged without "
                        f"them: {shown}. The stage holds until they are repaired and moved "
                        "back, or their quarantine files deleted (judged without them)",
                        kind="guard", held=True)  # fmt: skip
    status = "insufficient" if result.status == "ok" else result.status
    return replace(result, status=status, checks=[*result.checks, check])


@dataclass(frozen=True)
class Decision:
    """What a tick does: ``hold`` | ``advance`` | ``await_approval`` | ``promote`` |
    ``rollback`` | ``stop`` (approval deadline passed: back to the champion)."""

    action: str
    reason: str
    next_share: float | None = None


def decide(
    stage_index: int,
    shares: list[float],
    hours: list[float],
    served_hours: float,
    result: Canary,
    *,
    approval_before_share: float,
    approved: bool,
    rejected: bool,
    approval_asked_at: dt.datetime | None,
    deadline_hours: float,
    now: dt.datetime,
) -> Decision:
    """The next step of a rollout at ``stage_index`` (its share ``shares[stage_index]``)."""
    share = shares[stage_index]
    at = f"at {share:g}%" if share else "in shadow"
    if result.status == "breach":
        return Decision("rollback", f"canary breach {at}: " + "; ".join(result.reasons))
    if rejected:
        return Decision("rollback", f"rejected by the ML lead {at}")
    if result.status != "ok":
        return Decision("hold", f"{at}: " + "; ".join(result.reasons))
    if served_hours < hours[stage_index]:
        return Decision(
            "hold",
            f"{at}: canary ok; {served_hours:.1f} of {hours[stage_index]:g} h of traffic served",
        )
    if stage_index == len(shares) - 1:
        return Decision("promote", f"canary ok {at} for {hours[stage_index]:g} h")
    nxt = shares[stage_index + 1]
    if nxt >= approval_before_share and not approved:
        if approval_asked_at is not None and now - approval_asked_at > dt.timedelta(
            hours=deadline_hours
        ):
            return Decision(
                "stop",
                f"no approval within {deadline_hours:g} h: stopped at {share:g}%, traffic back "
                "to the champion (no auto-promotion)",
            )
        return Decision("await_approval", f"canary ok {at}; {nxt:g}% needs approval")
    return Decision("advance", f"canary ok {at} for {hours[stage_index]:g} h", nxt)
