"""Rollout state: the traffic split the serving fleet reads, written atomically.

The manifest lives in the store at ``rollout/manifest.json``::

    {"allocations": [{"version": "3", "share": 90.0}, {"version": "4", "share": 10.0}],
     "stage": "canary-10", "updated_at": "...", "updated_by": "...", "reason": "...",
     "shadow": []}

``shadow`` names versions that get a copy of every frame without serving it (the shadow
stage: their detections go to ``inference-log-shadow/``, never to a client).

Every change is also appended to ``rollout/history/`` (one JSON object per change: who,
why, when, the split), so "did the deployment change, and why?" has an answer.

Routing is deterministic per frame: a frame key hashes to a bucket in [0, 100) and the
cumulative shares pick the version, so the same frame always goes to the same model and
the shares hold in expectation.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

from cvloop.adapters.storage import Storage
from cvloop.core.errors import CvloopError

MANIFEST_KEY = "rollout/manifest.json"
HISTORY_PREFIX = "rollout/history/"


@dataclass(frozen=True)
class Allocation:
    version: str
    share: float  # percent of traffic


@dataclass
class RolloutManifest:
    allocations: list[Allocation]
    stage: str = "stable"
    updated_at: str = ""
    updated_by: str = ""
    reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    #: versions that see a copy of every frame and whose detections are logged as shadow
    #: (``inference-log-shadow/``) and never returned: the shadow stage before any traffic
    shadow: list[str] = field(default_factory=list)

    def validate(self) -> RolloutManifest:
        if not self.allocations:
            raise CvloopError("rollout manifest has no allocation")
        versions = [a.version for a in self.allocations]
        if len(set(versions)) != len(versions):
            raise CvloopError(f"rollout manifest lists a version twice: {versions}")
        if set(self.shadow) & set(versions):
            raise CvloopError(f"rollout manifest: a version both serves and shadows: {self.shadow}")
        if any(not math.isfinite(a.share) for a in self.allocations):  # NaN passes < and >
            raise CvloopError(f"rollout manifest has a share that is not a number: "
                              f"{self.allocations}", fix="fix rollout/manifest.json or write "
                              "it with cvloop (`cvloop rollback` restores the champion)")  # fmt: skip
        if any(a.share < 0 for a in self.allocations):
            raise CvloopError(f"rollout manifest has a negative share: {self.allocations}")
        total = sum(a.share for a in self.allocations)
        if abs(total - 100.0) > 1e-6:
            raise CvloopError(
                f"rollout shares must add up to 100, got {total:g}",
                fix="fix rollout/manifest.json or write it with cvloop",
            )
        return self

    def share_of(self, version: str) -> float:
        return sum(a.share for a in self.allocations if a.version == version)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RolloutManifest:
        raw = json.loads(text)
        allocs = [Allocation(str(a["version"]), float(a["share"])) for a in raw["allocations"]]
        return cls(
            allocs,
            raw.get("stage", "stable"),
            raw.get("updated_at", ""),
            raw.get("updated_by", ""),
            raw.get("reason", ""),
            raw.get("extra", {}),
            [str(v) for v in raw.get("shadow", [])],
        )


def single(version: str, reason: str = "", stage: str = "stable") -> RolloutManifest:
    """All traffic to one version."""
    return RolloutManifest([Allocation(str(version), 100.0)], stage=stage, reason=reason)


def read_manifest(store: Storage) -> RolloutManifest | None:
    """The current manifest, or None when none was written (the champion takes 100 %)."""
    if not store.exists(MANIFEST_KEY):
        return None
    try:
        return RolloutManifest.from_json(store.get_text(MANIFEST_KEY)).validate()
    except (KeyError, ValueError, TypeError) as exc:
        raise CvloopError(
            f"rollout manifest {store.url(MANIFEST_KEY)} is malformed: {exc}",
            fix="restore it with `cvloop rollback` or rewrite it with cvloop",
        ) from None


class ManifestConflict(CvloopError):
    """The manifest changed after the writer read it: nothing was written."""


#: ``write_manifest(based_on=ANY)``: write whatever the manifest is now (still serialized
#: against every other writer)
ANY = object()


def write_manifest(
    store: Storage,
    manifest: RolloutManifest,
    *,
    who: str | None = None,
    reason: str | None = None,
    based_on: RolloutManifest | object | None = ANY,
) -> RolloutManifest:
    """Validate, stamp (who/when/why) and write the manifest atomically, then a history entry.

    ``based_on``: the manifest the writer decided from (``None``: there was none). The write
    happens only if the manifest is still that one, checked and written as one step
    (:meth:`Storage.compare_and_put`), so a writer that spent minutes deciding (a rollout
    tick reading the log) can never overwrite what someone wrote meanwhile (a rollback):
    it gets :class:`ManifestConflict` and nothing is written."""
    manifest.validate()
    now = dt.datetime.now(dt.UTC)
    manifest.updated_at = now.isoformat(timespec="seconds")
    manifest.updated_by = who or manifest.updated_by or _whoami()
    if reason is not None:
        manifest.reason = reason
    text = manifest.to_json()
    basis = None if based_on is None or based_on is ANY else based_on.to_json()  # type: ignore[union-attr]

    def still_based_on(current: bytes | None) -> bool:
        if based_on is ANY:
            return True
        if current is None:
            return basis is None
        try:
            return RolloutManifest.from_json(current.decode("utf-8")).to_json() == basis
        except (KeyError, ValueError, TypeError):
            return False  # a malformed manifest is not what anyone decided from

    if not store.compare_and_put(MANIFEST_KEY, text.encode("utf-8"), still_based_on):
        now_m = read_manifest(store)
        raise ManifestConflict(
            "the rollout manifest changed after this writer read it"
            + (f" (now {now_m.stage} by {now_m.updated_by} at {now_m.updated_at}: "
               f"{now_m.reason})" if now_m else " (it is gone)")
            + f"; nothing written (was going to: {manifest.reason})",
            fix="nothing to do: the next step reads the new manifest and decides again",
        )  # fmt: skip
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    store.put_text(f"{HISTORY_PREFIX}{stamp}-{digest}.json", text)
    return manifest


def history(store: Storage, since: dt.datetime | None = None) -> list[RolloutManifest]:
    """Past manifests, oldest first."""
    out = []
    for key in store.keys(HISTORY_PREFIX):
        m = RolloutManifest.from_json(store.get_text(key))
        if since is None or dt.datetime.fromisoformat(m.updated_at) >= since:
            out.append(m)
    return out


def bucket(frame_key: str) -> float:
    """A frame's position in [0, 100), stable across runs and machines."""
    h = int.from_bytes(hashlib.sha256(frame_key.encode()).digest()[:8], "big")
    return (h % 1_000_000) / 10_000.0


def route(frame_key: str, manifest: RolloutManifest) -> str:
    """The model version that serves ``frame_key`` under ``manifest``."""
    b = bucket(frame_key)
    edge = 0.0
    for alloc in manifest.allocations:
        edge += alloc.share
        if b < edge:
            return alloc.version
    return manifest.allocations[-1].version


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
