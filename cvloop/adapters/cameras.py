"""The camera registry: each camera's group (and region), in the frame store next to the
frames (``fleet/cameras.json``), with the history of who registered what and why.

The serving fleet stamps each inference-log row with the camera's group
(``camera_group``); the monitor gives a group that joins after its reference window a
reference window of its own (:func:`cvloop.stages.signals.compute_drift_by_group`). A camera that
is not registered is in the group ``default``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass

from cvloop.adapters.frame_keys import CAMERAS_KEY
from cvloop.adapters.storage import Storage
from cvloop.core.errors import CvloopError

DEFAULT_GROUP = "default"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class Registration:
    camera: str
    group: str
    region: str
    when: str
    who: str
    why: str


def _read(store: Storage) -> dict:
    if not store.exists(CAMERAS_KEY):
        return {"cameras": {}}
    try:
        return json.loads(store.get_text(CAMERAS_KEY))
    except json.JSONDecodeError as exc:
        raise CvloopError(
            f"the camera registry {store.uri}/{CAMERAS_KEY} is not valid JSON ({exc})",
            fix="restore it from the store's versioning or register the cameras again",
        ) from None


def registry(store: Storage) -> dict[str, dict]:
    """camera -> {"group", "region"}."""
    data = _read(store)
    regions = data.get("regions", {})
    return {c: {"group": g, "region": regions.get(c, "")} for c, g in data["cameras"].items()}


def register(
    store: Storage, camera: str, group: str, region: str = "", who: str = "", why: str = ""
) -> tuple[Registration, bool]:
    """Put ``camera`` in ``group`` (and ``region``); returns (registration, changed). The
    same registration again changes nothing."""
    for what, value in (("camera", camera), ("group", group)) + (
        (("region", region),) if region else ()
    ):
        if not _NAME.match(value):
            raise CvloopError(
                f"{what} name {value!r} is not valid",
                fix="use lower case letters, digits, '.', '_' or '-' (at most 63), e.g. north-dock",
            )
    data = _read(store)
    data.setdefault("regions", {})
    data.setdefault("history", [])
    same = data["cameras"].get(camera) == group and data["regions"].get(camera, "") == region
    reg = Registration(camera, group, region,
                       dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), who, why)  # fmt: skip
    if same:
        return reg, False
    data["cameras"][camera] = group
    if region:
        data["regions"][camera] = region
    else:
        data["regions"].pop(camera, None)
    data["history"].append(asdict(reg))
    store.put_text(CAMERAS_KEY, json.dumps(data, indent=2))
    return reg, True


def registrations(store: Storage, start: dt.datetime, end: dt.datetime) -> list[Registration]:
    """Registrations made in [start, end) (the weekly review's "what changed")."""
    out = []
    for h in _read(store).get("history", []):
        when = dt.datetime.fromisoformat(h["when"])
        if start <= when < end:
            out.append(Registration(**h))
    return out
