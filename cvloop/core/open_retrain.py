"""At most one open retrain: the record in the store and the rule that reads it.

A retrain is *open* from its first step until it ends, suspended reviews of days included
(the deployment's concurrency slot is released while a run is suspended, so it cannot say
this). The record ``runs/retrain/open.json`` names the open retrain's Prefect flow run; it
changes only by compare-and-swap, so two triggers racing cannot both open one. A trigger
that finds an open retrain is recorded on it (``joined``) instead of starting a second one
on the same dataset version and Label Studio project. The record is freed when its run ends
(released by the run, or found in a final Prefect state by the next claimant: a crashed or
cancelled run never blocks the loop).

Pure: the record in, the new record out; the stage (:mod:`cvloop.stages.open_retrain`)
does the reading, the swapping and the asking of Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN_KEY = "runs/retrain/open.json"
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})


def still_open(state_type: str | None) -> bool:
    """A flow run in this Prefect state type holds the record; ``None`` (the run is not
    known to Prefect: deleted, or another Prefect) does not."""
    return state_type is not None and state_type not in FINAL_STATES


@dataclass(frozen=True)
class Claim:
    """What a retrain run found when it asked to open.

    ``owner`` is the open retrain's run id: this run's when it opened (or had already
    opened: a resumed run), another's when this trigger was recorded there instead.
    """

    run_id: str
    owner: str
    owner_state: str | None = None
    took_over: dict | None = None  # a record whose run had ended without freeing it

    @property
    def joined(self) -> bool:
        return self.owner != self.run_id

    def summary(self) -> dict:
        """The result of a run whose trigger was recorded on the open retrain."""
        return {
            "open_retrain": self.owner,
            "joined": self.joined,
            "message": f"retrain {self.owner} is open ({self.owner_state}): this trigger is "
            "recorded on it, not started again; to start afresh, cancel that run in the "
            "Prefect UI and trigger again",
        }


def opened(
    run_id: str, now: str, trigger: dict, previous: dict | None, previous_state: str | None
) -> dict:
    """The record of ``run_id`` opening; ``previous``: a record whose run ended without
    freeing it (in ``previous_state``, None: unknown to Prefect), named as taken over."""
    rec = {"run_id": run_id, "since": now, "trigger": trigger, "joined": []}
    if previous and previous.get("run_id"):
        rec["took_over"] = {"run_id": previous["run_id"], "since": previous.get("since"),
                            "state": previous_state or "unknown to Prefect"}  # fmt: skip
    return rec


def with_joined(record: dict, run_id: str, now: str, trigger: dict) -> dict:
    """``record`` with the trigger of ``run_id`` recorded on it (once per run)."""
    if any(j.get("run_id") == run_id for j in record.get("joined", [])):
        return record
    return {**record, "joined": [*record.get("joined", []), {"run_id": run_id, "at": now,
                                                              **trigger}]}  # fmt: skip


def freed(record: dict, run_id: str, now: str) -> dict:
    """The record once ``run_id`` (its holder) has ended: no open retrain, the last one kept
    with the triggers recorded on it."""
    return {
        "run_id": None,
        "last": {"run_id": run_id, "since": record.get("since"), "ended": now,
                 "joined": record.get("joined", [])},
    }  # fmt: skip
