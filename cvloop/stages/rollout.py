"""Runbook step 8, the state machine: start a rollout, act on a tick's decision (advance, ask
for approval, promote, roll back, stop), the people's levers (approve, rollback)."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cvloop.core.rollout import (
    CANARY,
    K_APPROVAL_ASKED,
    K_CHALLENGER,
    K_CHAMPION,
    K_DRIFT_CAMERAS,
    K_ROLLOUT_LOG,
    K_STAGE,
    K_STAGE_LOG,
    K_STAGE_WALL,
    SHADOW,
    STABLE,
    Canary,
    Decision,
    decide,
)
from cvloop.stages.canary import canary_tags, log_watermark, measure_canary
from registry.manifest import (
    ANY,
    ManifestConflict,
    RolloutManifest,
    read_manifest,
    single,
    write_manifest,
)
from registry.names import (
    APPROVED_AT,
    APPROVED_BY,
    APPROVED_NOTE,
    DRIFT_CAMERAS,
    GATE,
    PROMOTED_AT,
    REJECTED_AT,
    REJECTED_BY,
    REJECTED_NOTE,
    ROLLOUT_REASON,
    ROLLOUT_SHARE,
    ROLLOUT_STATUS,
)

if TYPE_CHECKING:
    from cvloop.context import Context


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def _mirror(reg, version: str, tags: dict) -> None:
    """The rollout's state as tags on the model version (what the MLflow UI shows)."""
    reg.set_tags(version, tags)


def start_rollout(
    ctx: Context,
    version: str | None = None,
    who: str | None = None,
    reason: str = "",
    force: bool = False,
) -> dict:
    """First stage: the challenger takes ``rollout.stages[0].share`` % of the traffic, or,
    with ``rollout.shadow_hours``, a copy of every frame without answering any (shadow).

    Only a version that passed every gate, and not one rolled back before (unless
    ``force``); idempotent for the version already rolling out.
    """
    from cvloop.core.errors import CvloopError
    from registry.manifest import Allocation
    from registry.names import (
        CHALLENGER,
        CHAMPION,
        DATASET_VERSION,
        PARENT_VERSION,
        REGISTRATION,
    )

    reg = ctx.registry
    store = ctx.store
    version = version or reg.alias_version(CHALLENGER)
    if version is None:
        raise CvloopError(
            "no version to roll out: no `challenger` alias",
            fix="name a version (`cvloop rollout start 4`), or let a retrain register one",
        )
    current = read_manifest(store)
    if current is not None and current.stage != STABLE:
        if current.extra.get(K_CHALLENGER) == str(version):
            return {"status": "already rolling out", "manifest": json.loads(current.to_json())}
        raise CvloopError(
            f"a rollout is in progress: v{current.extra.get(K_CHALLENGER)} at {current.stage}",
            fix="let it finish, or `cvloop rollback --reason ...` first",
        )
    tags = dict(reg.get_version(version).tags)
    if tags.get(GATE) != "passed":
        raise CvloopError(
            f"version {version} did not pass the gates (cvloop.gate = "
            f"{tags.get(GATE, 'missing')}): it is never rolled out",
            fix="see its gate report (runbooks/candidate.md)",
        )
    if tags.get(ROLLOUT_STATUS) in ("rolled-back", "stopped") and not force:
        raise CvloopError(
            f"version {version} was {tags[ROLLOUT_STATUS]} before: "
            f"{tags.get(ROLLOUT_REASON, 'no reason recorded')}",
            fix="fix the cause, then `cvloop rollout start VERSION --force`",
        )
    champion = reg.alias_version(CHAMPION)
    if champion is None or champion == str(version):
        raise CvloopError(f"version {version} is the champion already (or there is none)")
    if tags.get(REGISTRATION, "complete") != "complete":
        raise CvloopError(
            f"version {version} is registered only half ({REGISTRATION} = "
            f"{tags.get(REGISTRATION)}): a registration killed before its files and tags were "
            "all written is never rolled out",
            fix="run the candidate flow again (it finishes the registration), or delete the version",
        )
    parent = tags.get(PARENT_VERSION)
    if parent and parent != champion and not force:
        raise CvloopError(
            f"version {version} was fine-tuned from and gated against v{parent}, but the "
            f"champion is v{champion} now: its gates compared it with a model that no longer "
            "serves",
            fix=f"gate it again against v{champion} (`cvloop candidate --dataset "
            f"{tags.get(DATASET_VERSION, 'dataset-vN')}`), or `cvloop rollout start {version} "
            "--force` to canary it anyway",
        )
    p = ctx.params.rollout
    share = p.plan()[0][0]
    now, mark = _now(), log_watermark(store)
    since = _iso(mark) if mark else _iso(now)
    m = RolloutManifest(
        [Allocation(champion, 100.0 - share)]
        + ([Allocation(str(version), share)] if share else []),
        stage=CANARY.format(share=share) if share else SHADOW,
        shadow=[] if share else [str(version)],
        extra={
            K_CHALLENGER: str(version),
            K_CHAMPION: champion,
            K_STAGE: "0",
            K_STAGE_WALL: _iso(now),
            K_STAGE_LOG: since,
            K_ROLLOUT_LOG: since,
            K_APPROVAL_ASKED: "",
            K_DRIFT_CAMERAS: tags.get(DRIFT_CAMERAS, ""),
        },
    )
    first = f"{share:g}%" if share else "shadow (a copy of every frame, none answered by it)"
    # two starts (or a start and a rollback) racing: the one that read the manifest last loses
    write_manifest(store, m, who=who, reason=reason or f"rollout of v{version}: {first}",
                   based_on=current)  # fmt: skip
    reg.set_alias(CHALLENGER, str(version))
    _mirror(reg, str(version), {ROLLOUT_STATUS: "canary" if share else "shadow",
                                ROLLOUT_SHARE: f"{share:g}"})  # fmt: skip
    _mirror(reg, champion, {ROLLOUT_SHARE: f"{100 - share:g}"})
    return {"status": "started", "manifest": json.loads(m.to_json())}


def _approval(tags: dict) -> tuple[bool, bool]:
    return bool(tags.get(APPROVED_BY, "").strip()), bool(tags.get(REJECTED_BY, "").strip())


@dataclass(frozen=True)
class TickMeasure:
    """What a tick measured: the manifest it read (JSON), the inference log's watermark, the
    canary; ``done`` is set when reconciling alone finished the tick (no rollout in
    progress, or an interrupted promotion completed)."""

    manifest: str | None
    mark: str | None = None
    canary: Canary | None = None
    done: dict | None = None


def measure_tick(ctx: Context, who: str = "cvloop rollout") -> TickMeasure:
    """Step 1 of a tick: reconcile the manifest and the aliases (a crash between two writes
    is finished first), then measure the canary up to the inference log's watermark."""
    from registry.names import CHAMPION

    store, reg = ctx.store, ctx.registry
    m = read_manifest(store)
    if m is None or m.stage == STABLE:
        return TickMeasure(m.to_json() if m else None, done={"status": "idle",
                                                              **_reconcile_stable(reg, m)})  # fmt: skip
    chall = m.extra[K_CHALLENGER]
    if reg.alias_version(CHAMPION) == chall:  # promoted, then the manifest write was lost
        return TickMeasure(m.to_json(), done=_promote(store, reg, m, who,
                                                      "promotion finished after an interruption",
                                                      m))  # fmt: skip
    stage_since = dt.datetime.fromisoformat(m.extra[K_STAGE_LOG])
    mark = log_watermark(store) or stage_since
    result = measure_canary(ctx, store, reg, m, mark, ctx.params.rollout.canary)
    return TickMeasure(m.to_json(), _iso(mark), result)


def decide_tick(ctx: Context, measured: TickMeasure) -> Decision | None:
    """Step 2: what the canary, the stage's served hours and the ML lead's approval say
    (``cvloop/core/rollout.py``); None when the tick is done already."""
    if measured.done is not None:
        return None
    p = ctx.params.rollout
    m = RolloutManifest.from_json(measured.manifest)
    tags = dict(ctx.registry.get_version(m.extra[K_CHALLENGER]).tags)
    approved, rejected = _approval(tags)
    asked = m.extra.get(K_APPROVAL_ASKED) or ""
    stage_since = dt.datetime.fromisoformat(m.extra[K_STAGE_LOG])
    mark = dt.datetime.fromisoformat(measured.mark)
    return decide(
        int(m.extra[K_STAGE]),
        *p.plan(),
        max(0.0, (mark - stage_since).total_seconds() / 3600),
        measured.canary,
        approval_before_share=p.approval_before_share,
        approved=approved,
        rejected=rejected,
        approval_asked_at=dt.datetime.fromisoformat(asked) if asked else None,
        deadline_hours=p.approval_deadline_hours,
        now=_now(),
    )


def apply_tick(
    ctx: Context, measured: TickMeasure, d: Decision | None, who: str = "cvloop rollout"
) -> dict:
    """Step 3: act on the decision — hold, advance, ask for approval, promote, roll back or
    stop — and mirror what the canary said on the challenger's version."""
    if measured.done is not None or d is None:
        return measured.done or {"status": "idle"}
    m = RolloutManifest.from_json(measured.manifest)
    try:
        return _apply(ctx, measured, d, m, who)
    except ManifestConflict as exc:  # a rollback (or another tick) wrote while this measured
        print(f"rollout tick: {exc.message}")
        return {"status": "stale", "reason": exc.message, "version": m.extra[K_CHALLENGER]}


def _apply(ctx: Context, measured: TickMeasure, d: Decision, m, who: str) -> dict:
    store, reg = ctx.store, ctx.registry
    p = ctx.params.rollout
    basis = RolloutManifest.from_json(measured.manifest)  # what every write below is based on
    chall = m.extra[K_CHALLENGER]
    idx = int(m.extra[K_STAGE])
    shares = p.plan()[0]
    tags = dict(reg.get_version(chall).tags)
    asked = m.extra.get(K_APPROVAL_ASKED) or ""
    mark = dt.datetime.fromisoformat(measured.mark)
    now = _now()
    result = measured.canary
    out = {"status": d.action, "reason": d.reason, "canary": result.as_dict(), "version": chall}
    if d.action == "await_approval" and not asked:
        m.extra[K_APPROVAL_ASKED] = _iso(now)
        write_manifest(store, m, who=who, reason=f"v{chall}: {d.reason}", based_on=basis)
        _mirror(reg, chall, {ROLLOUT_STATUS: "awaiting-approval"})
        from cvloop.stages.notify import model_version_url, tell

        tell(ctx, "approval_waiting", f"v{chall}",
             f"{ctx.params.registry.model_name}: v{chall} waits for the ML lead's approval",
             f"{d.reason}\nApprove in MLflow (tag {APPROVED_BY} on the version) or "
             f"`cvloop approve {chall} --by NAME`; deadline rollout.approval_deadline_hours "
             f"({p.approval_deadline_hours:g} h).",
             {"approve (MLflow)": model_version_url(ctx, chall),
              "runbook": "runbooks/rollout.md"}, roles=("ml_lead",))  # fmt: skip
    elif d.action == "advance":
        why = d.reason
        if shares[idx + 1] >= p.approval_before_share:
            why += f"; approved by {tags[APPROVED_BY]}"
        _advance(store, reg, m, idx + 1, shares[idx + 1], mark, who, why, basis)
    elif d.action == "promote":
        out |= _promote(store, reg, m, who, d.reason, basis)
    elif d.action in ("rollback", "stop"):
        out |= _back_to_champion(store, reg, m, who, d.reason, d.action, basis)
        from cvloop.stages.notify import model_version_url, tell

        tell(ctx, "canary_breach", f"v{chall}-{d.action}",
             f"{ctx.params.registry.model_name}: v{chall} {'rolled back' if d.action == 'rollback' else 'stopped'}"
             f" at {shares[idx]:g}%",
             f"{d.reason}\nThe champion v{m.extra[K_CHAMPION]} serves 100 %.",
             {"challenger (MLflow)": model_version_url(ctx, chall),
              "champion (MLflow)": model_version_url(ctx, m.extra[K_CHAMPION]),
              "runbook": "runbooks/rollout.md"}, roles=("on_call", "ml_lead"))  # fmt: skip
    _mirror(reg, chall, canary_tags(result))  # after the write: a stale tick mirrors nothing
    if "manifest" in out:
        return out
    return {**out, "manifest": json.loads(read_manifest(store).to_json())}


def rollout_tick(ctx: Context, who: str = "cvloop rollout") -> dict:
    """One step of the rollout in progress (measure, decide, apply: the ``rollout`` flow runs
    them as three tasks). Safe to run again at any time."""
    measured = measure_tick(ctx, who)
    return apply_tick(ctx, measured, decide_tick(ctx, measured), who)


def _advance(store, reg, m, idx: int, share: float, mark, who: str, reason: str,
             basis) -> None:  # fmt: skip
    from registry.manifest import Allocation

    chall, champ = m.extra[K_CHALLENGER], m.extra[K_CHAMPION]
    allocs = [Allocation(chall, 100.0)] if share >= 100 else [
        Allocation(champ, 100.0 - share), Allocation(chall, share)
    ]  # fmt: skip
    m.allocations = allocs
    m.shadow = []
    m.stage = CANARY.format(share=share)
    m.extra.update({K_STAGE: str(idx), K_STAGE_WALL: _iso(_now()), K_STAGE_LOG: _iso(mark)})
    write_manifest(store, m, who=who, reason=f"v{chall} to {share:g}%: {reason}", based_on=basis)
    _mirror(reg, chall, {ROLLOUT_STATUS: "canary", ROLLOUT_SHARE: f"{share:g}"})
    _mirror(reg, champ, {ROLLOUT_SHARE: f"{100 - share:g}"})


def _promote(store, reg, m, who: str, reason: str, basis=ANY) -> dict:
    """The manifest first (compared with what the tick decided from: a rollback written
    meanwhile wins), then the champion alias to the challenger (the old one keeps
    ``previous-champion``): a crash in between is finished by the next tick
    (:func:`_reconcile_stable`)."""
    chall, champ = m.extra[K_CHALLENGER], m.extra[K_CHAMPION]
    final = single(chall, stage="stable")
    final.extra = {"promoted": chall, "previous_champion": champ}
    write_manifest(store, final, who=who, reason=f"v{chall} is the champion: {reason}",
                   based_on=basis)  # fmt: skip
    _finish_promotion(reg, chall, champ, reason)
    return {"status": "promote", "champion": chall, "previous_champion": champ,
            "manifest": json.loads(final.to_json())}  # fmt: skip


def _finish_promotion(reg, chall: str, champ: str, reason: str) -> None:
    """The aliases and tags of a promotion whose manifest is written (idempotent)."""
    from registry.names import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION

    if reg.alias_version(CHAMPION) != chall:
        reg.set_alias(PREVIOUS_CHAMPION, champ)
        reg.set_alias(CHAMPION, chall)
    if reg.alias_version(CHALLENGER) == chall:  # a newer candidate may hold it by now
        reg.delete_alias(CHALLENGER)
    tags = dict(reg.get_version(chall).tags)
    if tags.get(ROLLOUT_STATUS) != "champion":
        _mirror(reg, chall, {ROLLOUT_STATUS: "champion", ROLLOUT_SHARE: "100",
                             PROMOTED_AT: _iso(_now()), ROLLOUT_REASON: reason})  # fmt: skip
        _mirror(reg, champ, {ROLLOUT_STATUS: "previous-champion", ROLLOUT_SHARE: "0"})


def _back_to_champion(store, reg, m, who: str, reason: str, action: str, basis=ANY) -> dict:
    """Traffic back to the champion first (the manifest), then the alias and the tags."""

    chall, champ = m.extra[K_CHALLENGER], m.extra[K_CHAMPION]
    final = single(champ, stage="stable")
    final.extra = {"rolled_back": chall} if action == "rollback" else {"stopped": chall}
    write_manifest(store, final, who=who, reason=f"v{chall} {action}: {reason}", based_on=basis)
    _reconcile_stable(reg, final, reason)
    return {"status": action, "champion": champ, "manifest": json.loads(final.to_json())}


def _reconcile_stable(reg, m, reason: str | None = None) -> dict:
    """After a rollback (or a stop) the manifest says so: the challenger alias goes and the
    reason is tagged, idempotently (also after a crash between the two)."""
    from registry.names import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION

    if m is None:
        return {}
    out = {}
    if "rolled_back" in m.extra or "stopped" in m.extra:
        v = m.extra.get("rolled_back") or m.extra.get("stopped")
        status = "rolled-back" if "rolled_back" in m.extra else "stopped"
        if reg.alias_version(CHALLENGER) == v and status == "rolled-back":
            reg.delete_alias(CHALLENGER)
        serving = m.allocations[0].version if len(m.allocations) == 1 else None
        if (
            status == "rolled-back"
            and serving
            and serving != v
            and reg.alias_version(CHAMPION) == v
        ):
            # a manual rollback killed after its manifest: the aliases follow what serves
            reg.set_alias(CHAMPION, serving)
            if reg.alias_version(PREVIOUS_CHAMPION) == serving:
                reg.delete_alias(PREVIOUS_CHAMPION)
            _mirror(reg, serving, {ROLLOUT_STATUS: "champion", ROLLOUT_SHARE: "100"})
            out["champion"] = serving
        tags = dict(reg.get_version(v).tags)
        if tags.get(ROLLOUT_STATUS) != status:
            _mirror(reg, v, {ROLLOUT_STATUS: status, ROLLOUT_SHARE: "0",
                             ROLLOUT_REASON: (reason or m.reason)[:4900]})  # fmt: skip
        out[status] = v
    if "promoted" in m.extra and reg.alias_version(CHAMPION) != m.extra["promoted"]:
        # a promotion killed after its manifest: the aliases follow what serves
        _finish_promotion(reg, m.extra["promoted"], m.extra.get("previous_champion", ""),
                          reason or m.reason)  # fmt: skip
        out["promoted"] = m.extra["promoted"]
    return out


def approve(ctx: Context, version: str, who: str, *, reject: bool = False, note: str = "") -> dict:
    """The ML lead's decision on a version: the same tag the MLflow UI sets."""

    reg = ctx.registry
    reg.get_version(version)  # a clear error for an unknown version
    if reject:
        tags = {REJECTED_BY: who, REJECTED_AT: _iso(_now()), REJECTED_NOTE: note}
    else:
        tags = {APPROVED_BY: who, APPROVED_AT: _iso(_now()), APPROVED_NOTE: note}
    reg.set_tags(version, {k: v for k, v in tags.items() if v})
    return tags


def _tell_rollback(ctx: Context, out: dict, reason: str, who: str) -> None:
    from cvloop.stages.notify import model_version_url, tell

    serving = out.get("champion") or out.get("version") or "?"
    tell(ctx, "rollback", f"manual-{_iso(_now())}",
         f"{ctx.params.registry.model_name}: rolled back by hand by {who}",
         f"Why: {reason}\nWhat happened: {json.dumps(out, default=str)[:1500]}",
         {"serving now (MLflow)": model_version_url(ctx, str(serving)),
          "runbook": "runbooks/rollout.md"}, roles=("on_call", "ml_lead"))  # fmt: skip


def rollback_now(ctx: Context, reason: str, who: str | None = None) -> dict:
    """Immediate manual rollback: a rollout in progress goes back to its champion; with no
    rollout in progress, the champion goes back to ``previous-champion``.

    It wins over any rollout tick in flight: every write is compared with the manifest it
    decided from, and when a tick wrote in between (a stage advanced, a promotion) the
    rollback reads the manifest again and rolls back from there."""
    for attempt in range(5):
        try:
            out = _rollback_once(ctx, reason, who or "operator")
            _tell_rollback(ctx, out, reason, who or "operator")
            return out
        except ManifestConflict:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _rollback_once(ctx: Context, reason: str, who: str) -> dict:
    from cvloop.core.errors import CvloopError
    from cvloop.core.faults import crash_point
    from registry.names import CHAMPION, PREVIOUS_CHAMPION

    store = ctx.store
    reg = ctx.registry
    m = read_manifest(store)
    if m is not None and m.stage != STABLE:
        return _back_to_champion(store, reg, m, who, f"manual rollback: {reason}", "rollback",
                                 m)  # fmt: skip
    current, previous = reg.alias_version(CHAMPION), reg.alias_version(PREVIOUS_CHAMPION)
    if m is not None and (bad := _interrupted_rollback(m, current, previous)) is not None:
        previous, current = current, bad  # the aliases moved, the clean-up did not: finish it
    elif previous is None or previous == current:
        raise CvloopError(
            f"nothing to roll back to: champion v{current}, no `previous-champion` alias",
            fix="set the alias `previous-champion` on the version to serve in MLflow first",
        )
    # the order makes every crash recoverable by running the same command again:
    # 1. the manifest (what serves traffic): the bad version stops serving first;
    # 2. the champion alias; 3. previous-champion goes (its version is the champion now)
    if not (
        m is not None and m.extra.get("rolled_back") == current and m.share_of(previous) == 100
    ):
        final = single(previous, stage="stable")
        final.extra = {"rolled_back": current}
        write_manifest(store, final, who=who, reason=f"manual rollback of v{current}: {reason}",
                       based_on=m)  # fmt: skip
    crash_point("rollback:manifest-written")
    if reg.alias_version(CHAMPION) != previous:
        reg.set_alias(CHAMPION, previous)
    crash_point("rollback:champion-moved")
    if reg.alias_version(PREVIOUS_CHAMPION) == previous:
        reg.delete_alias(PREVIOUS_CHAMPION)
    _mirror(reg, current, {ROLLOUT_STATUS: "rolled-back", ROLLOUT_SHARE: "0",
                           ROLLOUT_REASON: f"manual rollback: {reason}"})  # fmt: skip
    _mirror(reg, previous, {ROLLOUT_STATUS: "champion", ROLLOUT_SHARE: "100"})
    return {"status": "rollback", "champion": previous, "rolled_back": current}


def _interrupted_rollback(m, champion: str | None, previous: str | None) -> str | None:
    """The version a manual rollback was taking out of service when it was killed after
    moving the champion alias (the stable manifest names it, the champion alias already
    points at the version it serves, ``previous-champion`` is not cleaned up yet); None when
    no rollback is half done."""
    bad = m.extra.get("rolled_back") if m.stage == STABLE else None
    if bad and champion and bad != champion and previous == champion:
        return str(bad) if m.share_of(champion) == 100 else None
    return None


def start_if_passed(ctx: Context, version: str, passed: bool, who: str) -> str:
    """Begin the rollout of a candidate that passed every gate (``rollout.auto_start``); a
    rollout already in progress is not disturbed (this candidate keeps its `challenger`
    alias; start it with `cvloop rollout start VERSION` once the other has ended)."""
    from cvloop.core.errors import CvloopError

    if not passed:
        return "not started (gate rejected)"
    if not ctx.params.rollout.auto_start:
        return "not started (rollout.auto_start is false): cvloop rollout start " + version
    try:
        out = start_rollout(ctx, version, who, f"v{version} passed every gate")
    except CvloopError as exc:
        return f"not started: {exc}"
    allocs = out["manifest"]["allocations"]
    return f"{out['status']}: " + ", ".join(f"v{a['version']} {a['share']:g}%" for a in allocs)


def write_initial_manifest(ctx: Context, version: str, who: str = "cvloop bootstrap") -> str:
    """Point 100 % of traffic at the first champion, unless a manifest exists already."""
    store = ctx.frame_store(create_bucket=True)
    current = read_manifest(store)
    if current is not None:
        return current.to_json()
    try:
        manifest = write_manifest(
            store,
            single(version, stage="stable"),
            who=who,
            reason=f"{who.split()[-1]}: version {version} is the first champion",
            based_on=None,  # only if there is still none (two bootstraps racing: the first wins)
        )
    except ManifestConflict:
        return read_manifest(store).to_json()
    return manifest.to_json()
