"""Runbook step 8, the measurement: a rollout's canary from the inference log (guards) and
from both models on the same frames (quality: paired re-scoring, the champion's holdout
precision, reviewed labels). The rules that judge them are ``cvloop/core/rollout.py`` and
``cvloop/core/pairing.py``; ``cvloop/stages/rollout.py`` acts on the decision."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from typing import TYPE_CHECKING

from cvloop.core.rollout import (
    K_CHALLENGER,
    K_CHAMPION,
    K_DRIFT_CAMERAS,
    K_ROLLOUT_LOG,
    K_STAGE_LOG,
    K_STAGE_WALL,
    Canary,
    PairedLatency,
    PairedVolume,
    Sample,
    canary,
    served_latency_breached,
    with_groups,
)
from registry.names import ROLLOUT_CANARY, ROLLOUT_EVIDENCE, ROLLOUT_KEPT, ROLLOUT_LABELS

if TYPE_CHECKING:
    from cvloop.context import Context


#: a newest partition this many days after the one before it is not the log's clock
WATERMARK_MAX_GAP_DAYS = 31


def log_watermark(store, today: dt.date | None = None) -> dt.datetime | None:
    """The newest frame time in the inference log (its newest date partition, rows of
    another day quarantined by the read). A newest partition more than
    ``WATERMARK_MAX_GAP_DAYS`` after both the one before it and today (``today``, default
    the wall clock's UTC date) has nothing to vouch for it: a writer's clock years ahead. It
    is passed over and reported, so one bad part cannot make a stage's hours look served.
    A fleet that logs again after a month of silence is vouched for by today's date (the
    gap alone, measured from a fixed history, made every partition look bad once the
    calendar moved on: found when the rollout tests started failing on a later day)."""
    import sys

    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import log_dates, read_log

    dates = log_dates(store)
    today = today or dt.datetime.now(dt.UTC).date()

    def unvouched(day: dt.date, before: dt.date) -> bool:
        return min((day - before).days, (day - today).days) > WATERMARK_MAX_GAP_DAYS

    while len(dates) >= 2 and unvouched(dates[-1], dates[-2]):
        print(f"inference log: date={dates[-1]} is {(dates[-1] - dates[-2]).days} days after "
              f"the partition before it and {(dates[-1] - today).days} days after today: not "
              f"used as the log's clock (check the writer's clock; move the folder away once "
              f"checked)", file=sys.stderr)  # fmt: skip
        dates.pop()
    for day in reversed(dates):  # a partition whose parts were all quarantined: the one before
        t = read_log(store, day, day + dt.timedelta(days=1), columns=["ts"])
        if t.num_rows:
            return pc.max(t.column("ts")).as_py()
    return None


def log_groups(store, since: dt.datetime, until: dt.datetime) -> list[str]:
    """The camera groups that served frames with ``since < ts <= until``."""
    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import read_log

    t = read_log(store, since + dt.timedelta(milliseconds=1), until + dt.timedelta(milliseconds=1),
                 columns=["camera_group"])  # fmt: skip
    return sorted(pc.unique(t.column("camera_group")).to_pylist()) if t.num_rows else []


def window_sample(
    store,
    version: str,
    since: dt.datetime,
    until: dt.datetime,
    drift_cameras=(),
    group: str | None = None,
    prefix: str | None = None,
):
    """What ``version`` served with ``since < ts <= until``, from the inference log (or the
    shadow log: ``prefix``).

    Latency and errors count every frame; detection volume and confidences leave out the
    ``drift_cameras`` the candidate was retrained for (it is meant to behave differently
    there: a champion blind at night against a challenger that sees is not a breach).
    ``group``: only the frames of that camera group."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import detections_per_frame, flatten_detections, read_log

    t = read_log(
        store,
        since + dt.timedelta(milliseconds=1),
        until + dt.timedelta(milliseconds=1),
        model_versions=[version],
        columns=["camera", "camera_group", "latency_ms", "error", "detections"],
        **({"prefix": prefix} if prefix else {}),
    )
    if group is not None:
        t = t.filter(pc.equal(t.column("camera_group"), group))
    ok = t.filter(pc.is_null(t.column("error")))
    steady = ok
    if drift_cameras:
        keep = pc.invert(pc.is_in(ok.column("camera"), pa.array(list(drift_cameras), pa.string())))
        steady = ok.filter(keep)
    conf = flatten_detections(steady).column("conf").to_numpy() if steady.num_rows else []
    return Sample(
        t.num_rows,
        t.num_rows - ok.num_rows,
        ok.column("latency_ms").to_numpy(zero_copy_only=False).astype(float),
        np.asarray(conf, dtype=float),
        detections_per_frame(steady).to_numpy(zero_copy_only=False).astype(float),
        drift_frames=ok.num_rows - steady.num_rows,
    )


def measure_canary(ctx: Context, store, reg, m, mark: dt.datetime, c) -> Canary:
    """The canary of the rollout ``m`` up to ``mark``: the guards from the inference log and
    the quality evidence from both models on the same frames, fleet-wide and per group.

    The challenger is judged on what it served since its stage began; the champion on the
    same period, or since the rollout began when it serves too little now (at 100 %).
    Log parts of the window that had to be quarantined hold the stage (never promote on
    part of the evidence) and never stop a rollback (:func:`with_lost_parts`)."""
    from cvloop.adapters.inference_log import lost_parts
    from cvloop.core.rollout import with_lost_parts

    result = _measure_canary(ctx, store, reg, m, mark, c)
    since = dt.datetime.fromisoformat(m.extra[K_STAGE_LOG]).date()
    # a part that named no date counts for the stage it was found in
    lost = lost_parts(store, since, mark.date(), found_from=m.extra.get(K_STAGE_WALL, "")[:19])
    return with_lost_parts(result, [
        f"{r.get('key', '?')} ({r.get('reason', '?')}; now {r.get('quarantined_as', '?')})"
        for r in lost
    ])  # fmt: skip


def _measure_canary(ctx: Context, store, reg, m, mark: dt.datetime, c) -> Canary:
    import numpy as np

    from cvloop.adapters.inference_log import SHADOW_PREFIX

    chall, champ = m.extra[K_CHALLENGER], m.extra[K_CHAMPION]
    stage_since = dt.datetime.fromisoformat(m.extra[K_STAGE_LOG])
    rollout_since = dt.datetime.fromisoformat(m.extra[K_ROLLOUT_LOG])
    drift = [x for x in m.extra.get(K_DRIFT_CAMERAS, "").split(",") if x]
    # in shadow the challenger's rows are in the shadow log, on the champion's own frames
    shadow = chall in m.shadow
    sp = SHADOW_PREFIX if shadow else None
    a = window_sample(store, chall, stage_since, mark, drift, prefix=sp)
    champ_since = stage_since
    b = window_sample(store, champ, stage_since, mark, drift)
    if b.frames < c.min_frames:  # the champion serves no traffic at 100 %: compare
        champ_since = rollout_since  # with its canary days
        b = window_sample(store, champ, rollout_since, mark, drift)
    if a.frames < c.min_frames or b.frames < c.min_frames:
        return canary(a, b, c)  # too few frames to judge: no model is run
    windows = {"challenger": (stage_since, mark), "champion": (champ_since, mark)}
    detectors = _detectors(reg, {"challenger": chall, "champion": champ})
    frames, labeled, counts = paired_frames(ctx, store, reg, chall, champ, windows, c.quality,
                                            detectors, {"challenger": sp} if sp else None)  # fmt: skip
    rename = _champion_names(ctx, reg, champ, chall)
    prec, where = holdout_precision(ctx, store, reg, champ, c.quality)
    prec = {rename.get(k, k): v for k, v in prec.items()}
    # at 100 % the champion's served latency is from its canary days, under another load:
    # both models are re-timed here on the same frames instead. Below, the served p95s are
    # the screen, and a tripped screen is re-timed before it rolls anything back.
    # in shadow its latency is of a background copy: the re-timing is the measure there too
    full = champ_since != stage_since or shadow
    served: list[dict] = []  # the challenger's frames of the stage, read once when needed

    def retime(ag, bg, group: str | None = None) -> PairedLatency | None:
        if not full and not served_latency_breached(ag, bg, c):
            return None
        served[:] = served or _served_frames(store, chall, stage_since, mark, sp).to_pylist()
        rows = [r for r in served if group in (None, r["camera_group"] or "default")]
        return paired_latency(store, detectors, rows, LATENCY_FRAMES, replaces_served=full)

    def volume(fs) -> PairedVolume | None:
        # at 100 % (and in shadow) the served volumes are of other days: the paired frames
        # give both models' detections on the same frames instead
        keep = [f for f in fs if f.camera not in drift] if full else []
        if not keep:
            return None
        return PairedVolume(np.array([len(f.challenger) for f in keep], dtype=float),
                            np.array([len(f.champion) for f in keep], dtype=float))  # fmt: skip

    quality = quality_of(frames, labeled, c.quality, prec, where)
    slo = None if shadow else ctx.params.slo  # no client waited on a shadow copy
    result = canary(a, b, c, quality, retime(a, b), slo, volume(frames))
    groups = log_groups(store, stage_since, mark)
    if len(groups) > 1:  # each camera group judged on its own too
        per = {}
        for g in groups:
            ag = window_sample(store, chall, stage_since, mark, drift, g, prefix=sp)
            bg = window_sample(store, champ, champ_since, mark, drift, g)
            if bg.frames < c.min_frames and champ_since != rollout_since:
                bg = window_sample(store, champ, rollout_since, mark, drift, g)
            frames_g = [f for f in frames if f.group == g]
            labeled_g = {k: v for k, v in labeled.items() if v[0].group == g}
            qg = quality_of(frames_g, labeled_g, c.quality, prec, where)
            judged = ag.frames >= c.min_frames and bg.frames >= c.min_frames
            per[g] = canary(ag, bg, c, qg, retime(ag, bg, g) if judged else None, slo,
                            volume(frames_g))  # fmt: skip
        result = with_groups(result, per)
    notes = [f"quality: {counts['sampled']} paired frames (a sample of the "
             f"{counts['challenger_served']} challenger / {counts['champion_served']} champion "
             "frames, each scored by the other model too)"]  # fmt: skip
    if counts["missing"]:
        notes.append(f"{counts['missing']} sampled frames are gone from the frame store "
                     "(not scored)")  # fmt: skip
    if drift:
        notes.append(f"volume and confidence leave out the drift cameras {', '.join(drift)} "
                     "(the candidate was retrained to change there)")  # fmt: skip
    return replace(result, note="; ".join(notes))


def canary_tags(result: Canary) -> dict[str, str]:
    """What decided the last tick, on the challenger's model version (the MLflow UI)."""
    q = result.quality or {}
    kept = {k: v.get("kept_share") for k, v in (q.get("classes") or {}).items()}
    labels = q.get("labels") or {}
    return {
        ROLLOUT_EVIDENCE: result.evidence,
        ROLLOUT_CANARY: result.status,
        ROLLOUT_KEPT: json.dumps({k: None if v is None else round(v, 4) for k, v in kept.items()}),
        ROLLOUT_LABELS: json.dumps(
            {
                "frames": labels.get("frames", 0),
                "challenger_map50_95": (labels.get("challenger") or {}).get("map50_95"),
                "champion_map50_95": (labels.get("champion") or {}).get("map50_95"),
            }
        ),
    }


def _served_frames(store, version: str, since: dt.datetime, until: dt.datetime,
                   prefix: str | None = None):  # fmt: skip
    """The frames ``version`` served without error with ``since < ts <= until`` (in the
    shadow log with ``prefix``)."""
    import pyarrow.compute as pc

    from cvloop.adapters.inference_log import read_log

    t = read_log(store, since + dt.timedelta(milliseconds=1), until + dt.timedelta(milliseconds=1),
                 model_versions=[version],
                 columns=["ts", "camera", "camera_group", "frame_key", "error", "detections"],
                 **({"prefix": prefix} if prefix else {}))  # fmt: skip
    return t.filter(pc.is_null(t.column("error")))


def _sample_keys(keys: list[str], n: int) -> set[str]:
    """A deterministic sample of ``n`` frame keys: the same frames stay in the sample as
    the window grows, so successive ticks judge mostly the same frames."""
    import hashlib

    order = sorted(keys, key=lambda k: hashlib.sha256(f"canary|{k}".encode()).digest())
    return set(order[:n])


def _log_boxes(dets, min_conf: float, rename: dict[str, str]):
    from cvloop.core.frames import LabelBox

    return [
        (LabelBox(rename.get(d["label"], d["label"]), d["cx"], d["cy"], d["w"], d["h"]), d["conf"])
        for d in dets or ()
        if d["conf"] >= min_conf
    ]


def _image(store, key: str):
    """A served frame's pixels, or None when its image is gone or unreadable."""
    from cvloop.adapters.detector import decode_jpeg
    from cvloop.core.errors import CvloopError

    try:
        return decode_jpeg(store.get_bytes(key))
    except (CvloopError, OSError, KeyError, FileNotFoundError):
        return None


def _rescore(store, detector, rows: list[dict], conf: float, rename: dict[str, str]):
    """The other model's boxes on each frame (frame key -> boxes); frames whose image is
    gone or unreadable are left out and counted."""
    out, missing = {}, 0
    for i in range(0, len(rows), 16):
        batch, images = [], []
        for r in rows[i : i + 16]:
            if (img := _image(store, r["frame_key"])) is None:
                missing += 1
                continue
            images.append(img)
            batch.append(r)
        if not images:
            continue
        for r, det in zip(batch, detector.predict(images, conf=conf), strict=True):
            out[r["frame_key"]] = _boxes(detector, det, rename)
    return out, missing


def _champion_names(ctx: Context, reg, champion: str, challenger: str) -> dict[str, str]:
    """Champion class name -> the challenger's name for it, when a schema change renamed a
    class between them (the log names the classes of the model that served)."""
    a = reg.fetch(champion).classes
    b = reg.fetch(challenger).classes
    if a == b:
        return {}
    from cvloop.stages.schema import schema_log

    sources = schema_log(ctx).sources(list(a)) or {c: c for c in b if c in a}
    return {old: new for new, old in sources.items() if old != new}


def _detectors(reg, versions: dict[str, str]) -> dict:
    """role -> the ONNX Runtime detector of that model version (sha256-checked by fetch)."""
    from cvloop.adapters.detector import OnnxDetector

    out = {}
    for role, v in versions.items():
        m = reg.fetch(v)
        out[role] = OnnxDetector(m.onnx, m.classes, m.imgsz, spinning=False)
    return out


LATENCY_FRAMES = 64  # frames both models are re-timed on (at 100 %, or on a served breach)


def paired_latency(
    store, detectors: dict, rows: list[dict], n: int, *, replaces_served: bool = True
) -> PairedLatency:
    """Both models timed on the same ``n`` sampled frames of ``rows``, one frame at a time
    and taking turns (which model goes first alternates), after one warm-up frame each."""
    import numpy as np

    pick = _sample_keys([r["frame_key"] for r in rows], n)
    images = [img for r in rows if r["frame_key"] in pick
              if (img := _image(store, r["frame_key"])) is not None]  # fmt: skip
    times = {"challenger": [], "champion": []}
    if images:
        for d in detectors.values():
            d.predict_timed(images[0])
    for i, img in enumerate(images):
        order = ("challenger", "champion") if i % 2 == 0 else ("champion", "challenger")
        for role in order:
            times[role].append(detectors[role].predict_timed(img)[1])
    return PairedLatency(np.asarray(times["challenger"]), np.asarray(times["champion"]),
                         replaces_served)  # fmt: skip


def paired_frames(
    ctx: Context,
    store,
    reg,
    challenger: str,
    champion: str,
    windows: dict[str, tuple],
    q,
    detectors: dict | None = None,
    prefixes: dict[str, str] | None = None,
) -> tuple[list, dict, dict]:
    """Frames each model served in its window (``windows``: role -> (since, until)), a
    sample of ``q.rescore_frames`` each plus every frame with reviewed labels, scored by
    the other model too. Returns (sampled paired frames, labeled paired frames by key,
    counts)."""
    from cvloop.adapters.label_store import read_labels
    from cvloop.core.pairing import PairedFrame

    versions = {"challenger": challenger, "champion": champion}
    rename = _champion_names(ctx, reg, champion, challenger)
    prefixes = prefixes or {}
    served = {role: _served_frames(store, versions[role], *windows[role],
                                   prefixes.get(role)).to_pylist()
              for role in versions}  # fmt: skip
    since = min(w[0] for w in windows.values())
    until = max(w[1] for w in windows.values())
    keys = [r["frame_key"] for rows in served.values() for r in rows]
    labels = read_labels(store, since, until + dt.timedelta(milliseconds=1), keys) if keys else {}
    detectors = detectors or _detectors(reg, versions)
    sampled, labeled, counts = [], {}, {"missing": 0}
    for role, rows in served.items():
        other = "champion" if role == "challenger" else "challenger"
        pick = _sample_keys([r["frame_key"] for r in rows], q.rescore_frames)
        todo = [r for r in rows if r["frame_key"] in pick or r["frame_key"] in labels]
        names_other = rename if other == "champion" else {}
        boxes, missing = _rescore(store, detectors[other], todo, q.match_conf, names_other)
        counts["missing"] += missing
        counts[f"{role}_served"] = len(rows)
        for r in todo:
            if r["frame_key"] not in boxes:
                continue
            own = _log_boxes(r["detections"], q.match_conf, rename if role == "champion" else {})
            pair = {role: own, other: boxes[r["frame_key"]]}
            f = PairedFrame(r["frame_key"], r["camera"], r["camera_group"] or "default", role,
                            pair["champion"], pair["challenger"])  # fmt: skip
            if r["frame_key"] in pick:
                sampled.append(f)
            if r["frame_key"] in labels:
                labeled[r["frame_key"]] = f
    counts["labeled"] = len(labeled)
    counts["sampled"] = len(sampled)
    return sampled, {k: (f, labels[k]) for k, f in labeled.items()}, counts


def holdout_precision(
    ctx: Context, store, reg, champion: str, q
) -> tuple[dict[str, tuple[int, int]], str]:
    """The champion's (right, confident) boxes per class at ``q.confident_floor`` on the
    current holdout of the data repo, and the holdout's name: what its own false positives
    explain of a challenger's lost boxes (cvloop/core/pairing.py). Cached in the store per
    champion version and holdout content; ``({}, reason)`` when no holdout is at hand (the
    canary then takes the champion's confident boxes as right)."""
    import hashlib

    from cvloop.adapters.datasets import read_yolo_labels, yolo_split_frames
    from cvloop.adapters.detector import OnnxDetector, decode_jpeg
    from cvloop.adapters.versioning import HOLDOUT_DIR
    from cvloop.core.pairing import champion_precision

    try:
        root = ctx.data_repo.root / HOLDOUT_DIR
        pairs = yolo_split_frames(root / "data.yaml", "val")
    except Exception as exc:  # no data repo here (a team's serving-side host): say so
        return {}, f"no holdout ({type(exc).__name__}: {str(exc)[:80]})"
    if not pairs:
        return {}, f"no holdout frames in {root}"
    name = (root / "VERSION").read_text().strip() if (root / "VERSION").exists() else "holdout"
    digest = hashlib.sha256()
    for img, lab in pairs:
        digest.update(img.name.encode())
        digest.update(lab.read_bytes() if lab.exists() else b"")
    key = (f"rollout/reference/champion-v{champion}-{name}-{digest.hexdigest()[:12]}-"
           f"{q.confident_floor:g}-{q.match_iou:g}.json")  # fmt: skip
    if store.exists(key):
        cached = json.loads(store.get_text(key))
        return {k: tuple(v) for k, v in cached["precision"].items()}, name
    m = reg.fetch(champion)
    det = OnnxDetector(m.onnx, m.classes, m.imgsz, spinning=False)
    frames = []
    for img, lab in pairs:
        (d,) = det.predict([decode_jpeg(img.read_bytes())], conf=q.confident_floor)
        frames.append((_boxes(det, d, {}), read_yolo_labels(lab, m.classes)))
    prec = champion_precision(frames, q.confident_floor, q.match_iou)
    store.put_text(key, json.dumps({"champion": champion, "holdout": name, "frames": len(pairs),
                                    "precision": prec}, indent=1))  # fmt: skip
    return prec, name


def _boxes(detector, det, rename: dict[str, str]):
    """A detector's output as (LabelBox, confidence) pairs, names mapped by ``rename``."""
    from cvloop.core.frames import LabelBox

    names = [detector.class_names[int(c)] for c in det.classes]
    return [
        (LabelBox(rename.get(n, n), *map(float, b)), float(s))
        for n, s, b in zip(names, det.scores, det.cxcywh(), strict=True)
    ]


def quality_of(
    frames: list,
    labeled: dict,
    q,
    precision: dict[str, tuple[int, int]] | None = None,
    where: str = "the holdout",
):
    """What the paired frames and the labeled ones say (the labels decide where there are
    enough of them; the pairing is reported either way)."""
    from cvloop.core.pairing import (
        decide_quality,
        judge_labels,
        judge_pairing,
        kept_by_camera,
        mean_ap,
        pair_classes,
    )

    match = {"confident_floor": q.confident_floor, "match_conf": q.match_conf,
             "match_iou": q.match_iou}  # fmt: skip
    pairing = judge_pairing(pair_classes(frames, **match), len(frames), q, precision, where)
    pairing.by_camera = kept_by_camera(frames, **match)
    labels = None
    if labeled:
        pairs = list(labeled.values())
        sources = ", ".join(sorted({lab.source for _, lab in pairs}))
        champ = mean_ap([(f.champion, lab.boxes) for f, lab in pairs])
        chall = mean_ap([(f.challenger, lab.boxes) for f, lab in pairs])
        labels = judge_labels(chall, champ, q, source=f"reviewed labels ({sources})")
        if labels is None:
            pairing.note = "; ".join(x for x in (pairing.note, (
                f"{len(pairs)} frames with reviewed labels in the window: "
                f"{q.labels_min_frames} needed for the labels to decide")) if x)  # fmt: skip
            pairing.labels = {"frames": len(pairs), "source": sources, "champion": champ,
                              "challenger": chall}  # fmt: skip
    return decide_quality(pairing, labels)
