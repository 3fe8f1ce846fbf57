"""At most one open retrain (issue: one writer at a time): a retrain opens by
compare-and-swap on ``runs/retrain/open.json`` in the frame store, and a trigger that finds
one open is recorded on it instead (the rule: :mod:`cvloop.core.open_retrain`).

Every entry point goes through the flow's first step (the drift event's deployment run,
``cvloop retrain``, the demo), so none can open a second retrain. The store's
compare-and-swap works on a folder and on S3 alike; the holder's state comes from Prefect,
so a run that crashed, failed or was cancelled frees the record by itself.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from cvloop.core.errors import CvloopError, StorageError
from cvloop.core.open_retrain import OPEN_KEY, Claim, freed, opened, still_open, with_joined

if TYPE_CHECKING:
    from cvloop.adapters.storage import Storage
    from cvloop.context import Context

StateOf = Callable[[str], "str | None"]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _read(store: Storage) -> tuple[bytes | None, dict | None]:
    for attempt in range(3):
        try:
            raw = store.get_bytes(OPEN_KEY)
            break
        except StorageError:
            if not store.exists(OPEN_KEY):
                return None, None
            if attempt == 2:  # there, yet unreadable: not a race
                raise
            # made by another claimant between the read and the look: read it again
    try:
        rec = json.loads(raw)
        if not isinstance(rec, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise CvloopError(
            f"the open-retrain record {store.url(OPEN_KEY)} is malformed ({exc})",
            fix="check that no retrain is running in the Prefect UI, then delete the file",
        ) from None
    return raw, rec


def prefect_state_of(api_url: str) -> StateOf:
    """The state type of a flow run on the Prefect API (None: no such run)."""

    def state_of(run_id: str) -> str | None:
        from cvloop.adapters.prefect_rest import PrefectRest

        with PrefectRest(api_url) as api:
            resp = api.request("GET", f"/flow_runs/{run_id}")
            if resp.status_code == 404:
                return None
            if resp.status_code >= 400:
                raise CvloopError(
                    f"cannot tell whether retrain {run_id} is still open: the Prefect API "
                    f"answered {resp.status_code} {resp.text[:200]}",
                    fix="check the Prefect server (`cvloop services status prefect`) and "
                    "trigger again",
                    transient=resp.status_code >= 500,
                )
            return resp.json().get("state_type")

    return state_of


def _swap(store: Storage, raw: bytes | None, rec: dict) -> bool:
    data = json.dumps(rec, indent=1, sort_keys=True).encode()
    return store.compare_and_put(OPEN_KEY, data, lambda cur: cur == raw)


def claim_open_retrain(
    ctx: Context, run_id: str, trigger: dict, state_of: StateOf | None = None
) -> Claim:
    """Open the retrain of flow run ``run_id``, or record its ``trigger`` (what started it:
    triggers, cameras, classes) on the retrain that is open. Idempotent: a resumed run
    finds itself the holder; a run already recorded is not recorded twice."""
    store = ctx.store
    ask = state_of or prefect_state_of(ctx.settings.prefect_api_url)
    for _ in range(50):  # each lost swap means another writer moved; read again
        raw, rec = _read(store)
        holder = (rec or {}).get("run_id")
        if holder == run_id:
            return Claim(run_id, run_id)
        state = ask(holder) if holder else None
        if holder and still_open(state):
            new = with_joined(rec, run_id, _now(), trigger)
            if new is rec or _swap(store, raw, new):
                return Claim(run_id, holder, owner_state=state)
            continue
        new = opened(run_id, _now(), trigger, rec, state)
        if _swap(store, raw, new):
            return Claim(run_id, run_id, took_over=new.get("took_over"))
    raise CvloopError(
        f"could not open retrain {run_id}: {store.url(OPEN_KEY)} kept changing",
        fix="trigger the retrain again",
        transient=True,
    )


def release_open_retrain(ctx: Context, run_id: str) -> list[dict]:
    """Free the record at the end of retrain ``run_id``; returns the triggers recorded on
    it while it was open (for its summary). A record held by another run is left alone."""
    store = ctx.store
    for _ in range(50):
        raw, rec = _read(store)
        if not rec or rec.get("run_id") != run_id:
            last = (rec or {}).get("last") or {}
            return last.get("joined", []) if last.get("run_id") == run_id else []
        if _swap(store, raw, freed(rec, run_id, _now())):
            return rec.get("joined", [])
    raise CvloopError(f"could not free {store.url(OPEN_KEY)}: it kept changing", transient=True)


def open_retrain(ctx: Context) -> dict | None:
    """The record of the open retrain (with the triggers recorded on it), or None; for
    ``cvloop status`` and the weekly review, which show a malformed record (``error``)
    rather than fail on it."""
    try:
        _raw, rec = _read(ctx.store)
    except CvloopError as exc:
        return {"run_id": "?", "error": str(exc)}
    return rec if rec and rec.get("run_id") else None
