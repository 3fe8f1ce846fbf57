"""The rollout tick's report (artifact ``rollout-status``): the decision, which evidence
decided it, every check, the per-class pairing and the labels."""

from __future__ import annotations


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def canary_report(result: dict) -> str:
    """The rollout tick in markdown: the decision, what decided it (labels, pairing or the
    guards), the per-class pairing numbers and every check."""
    lines = [f"# Rollout: {result['status']}", ""]
    if result.get("reason"):
        lines += [result["reason"], ""]
    c = result.get("canary") or {}
    if not c.get("checks"):
        return "\n".join(lines) + "\n"
    q = c.get("quality") or {}
    lines += [
        f"**Decided by: {c.get('evidence', 'none')}** (canary {c['status']}; challenger "
        f"{c['challenger_frames']} frames, champion {c['champion_frames']} frames, same period "
        "of the inference log). " + (c.get("note") or ""),
        "",
        "| check | kind | result | detail |",
        "|---|---|---|---|",
    ]
    for x in c["checks"]:
        res = "pass" if x["passed"] else ("hold" if x.get("held") else "**FAIL**")
        if x.get("kind") == "signal":
            res = "signal"
        lines.append(f"| {x['name']} | {x.get('kind', 'guard')} | {res} | {x['detail']} |")
    classes = q.get("classes") or {}
    if classes:
        lines += [
            "",
            f"Pairing per class ({q.get('frames', 0)} frames scored by both models): the "
            "champion's confident boxes the challenger keeps, and the challenger's confident "
            "boxes the champion finds." + (f" {q['note']}." if q.get("note") else ""),
            "",
            "| class | champion confident | kept by challenger | kept share | challenger "
            "confident | found by champion | found share |",
            "|---|---|---|---|---|---|---|",
        ]
        for k, v in classes.items():
            lines.append(
                f"| {k} | {v['champion_confident']} | {v['kept_by_challenger']} | "
                f"{_pct(v['kept_share'])} | {v['challenger_confident']} | "
                f"{v['found_by_champion']} | {_pct(v['found_share'])} |"
            )
    cams = q.get("by_camera") or {}
    if cams:
        lines += ["", "| camera | champion confident | kept share |", "|---|---|---|"]
        for k, v in cams.items():
            n = v["champion_confident"]
            lines.append(f"| {k} | {n} | {_pct(v['kept_by_challenger'] / n if n else None)} |")
    lab = q.get("labels") or {}
    if lab.get("champion"):
        a, b = lab["challenger"], lab["champion"]
        lines += [
            "",
            f"Reviewed labels: {lab['frames']} frames ({lab.get('source', '')}): mAP50-95 "
            f"challenger {a.get('map50_95') or 0:.3f} vs champion {b.get('map50_95') or 0:.3f}"
            + (
                " — the labels decide."
                if c.get("evidence") == "labels"
                else " (too few to decide)."
            ),
        ]
    else:
        lines += ["", "Reviewed labels: none for frames of this window (the pairing decides)."]
    return "\n".join(lines) + "\n"
