"""At most one open retrain: a trigger that finds one open is recorded on it, a run that
ended frees the record by itself, and racing claimants open exactly one."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest

from cvloop.adapters.storage import LocalStorage
from cvloop.core.errors import CvloopError
from cvloop.core.open_retrain import OPEN_KEY
from cvloop.stages.open_retrain import claim_open_retrain, open_retrain, release_open_retrain

DRIFT = {"triggers": ["severe_drift"], "cameras": ["cam-02"], "classes": []}
RULE2 = {"triggers": ["confidence_ks_and_ap"], "cameras": ["cam-07"], "classes": ["cone"]}


def _ctx(tmp_path):
    return SimpleNamespace(store=LocalStorage(tmp_path / "store"))


def test_a_second_trigger_is_recorded_on_the_open_retrain_not_started(tmp_path):
    ctx = _ctx(tmp_path)
    states = {"A": "RUNNING"}
    ask = states.get
    a = claim_open_retrain(ctx, "A", DRIFT, ask)
    assert not a.joined and a.owner == "A"
    states["A"] = "PAUSED"  # suspended for a review that lasts days
    b = claim_open_retrain(ctx, "B", RULE2, ask)
    assert b.joined and b.owner == "A" and b.owner_state == "PAUSED"
    assert "cancel that run" in b.summary()["message"]
    assert claim_open_retrain(ctx, "B", RULE2, ask).joined  # a retried B: recorded once
    again = claim_open_retrain(ctx, "A", DRIFT, ask)  # A resumed after the review
    assert not again.joined and again.owner == "A"
    rec = open_retrain(ctx)
    assert rec["run_id"] == "A" and rec["trigger"] == DRIFT
    assert [(j["run_id"], j["triggers"], j["cameras"]) for j in rec["joined"]] == [
        ("B", ["confidence_ks_and_ap"], ["cam-07"])
    ]
    # A ends: the triggers recorded on it come back for its summary, nothing is open
    assert [j["run_id"] for j in release_open_retrain(ctx, "A")] == ["B"]
    assert open_retrain(ctx) is None
    assert [j["run_id"] for j in release_open_retrain(ctx, "A")] == ["B"]  # idempotent
    c = claim_open_retrain(ctx, "C", DRIFT, ask)
    assert not c.joined and c.took_over is None


@pytest.mark.parametrize("state", ["CRASHED", "FAILED", "CANCELLED", "COMPLETED", None])
def test_a_holder_that_ended_without_freeing_the_record_is_taken_over(tmp_path, state):
    """A run killed mid-flow (its Prefect state final, or the run gone) never blocks."""
    ctx = _ctx(tmp_path)
    claim_open_retrain(ctx, "A", DRIFT, {"A": "RUNNING"}.get)
    c = claim_open_retrain(ctx, "C", RULE2, {"A": state}.get)
    assert not c.joined and c.owner == "C"
    assert c.took_over["run_id"] == "A" and c.took_over["state"] == (state or "unknown to Prefect")
    assert release_open_retrain(ctx, "A") == []  # the old holder's late release moves nothing
    assert open_retrain(ctx)["run_id"] == "C"


def test_racing_claimants_open_exactly_one_retrain(tmp_path):
    ctx = _ctx(tmp_path)
    n = 8
    barrier = threading.Barrier(n)
    claims, errors = {}, []

    def claim(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            claims[i] = claim_open_retrain(ctx, f"R{i}", DRIFT, lambda _run: "RUNNING")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    owners = {c.owner for c in claims.values()}
    assert len(owners) == 1
    [owner] = owners
    rec = open_retrain(ctx)
    assert rec["run_id"] == owner
    assert sorted(j["run_id"] for j in rec["joined"]) == sorted(
        f"R{i}" for i in range(n) if f"R{i}" != owner
    )


def test_a_malformed_record_is_named_with_the_fix(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.store.put_bytes(OPEN_KEY, b"{not json")
    with pytest.raises(CvloopError, match=r"open-retrain record .* is malformed") as info:
        claim_open_retrain(ctx, "A", DRIFT, lambda _run: None)
    assert "delete the file" in info.value.fix
    assert ctx.store.get_bytes(OPEN_KEY) == b"{not json"  # nothing overwritten
    # status and the weekly review say so instead of failing
    from cvloop.stages.status import _retrain_lines
    from cvloop.stages.weekly import review_markdown

    rec = open_retrain(ctx)
    assert _retrain_lines(rec)[0].startswith("RETRAIN     unknown: the open-retrain record")
    _md, red = review_markdown("2026-W49", {"retrain": rec, "monitor": [], "changes": [],
                                            "versions": []}, [])  # fmt: skip
    assert any("open-retrain record cannot be read" in r for r in red)


def test_status_and_weekly_review_show_the_open_retrain_and_its_recorded_triggers(tmp_path):
    from cvloop.stages.status import _retrain_lines
    from cvloop.stages.weekly import review_markdown

    ctx = _ctx(tmp_path)
    claim_open_retrain(ctx, "A", DRIFT, lambda _run: "RUNNING")
    claim_open_retrain(ctx, "B", RULE2, lambda _run: "PAUSED")
    rec = open_retrain(ctx)
    lines = _retrain_lines(rec)
    assert lines[0].startswith("RETRAIN     open: flow run A since ")
    assert "confidence_ks_and_ap (flow run B; cameras cam-07)" in lines[1]
    data = {"retrain": rec, "monitor": [], "changes": [], "versions": []}
    md, _red = review_markdown("2026-W49", data, [])
    assert "## The open retrain" in md
    assert "| confidence_ks_and_ap | cam-07 | cone | B |" in md
    json.dumps(rec)  # what status --json prints
