"""Which version serves a frame: the rollout manifest, read again every few seconds.

A :class:`Routing` is an immutable snapshot (the manifest, the loaded models it names, the
camera groups); a request reads the current snapshot once, so it is routed and served by
the same, fully loaded model. :class:`ModelHost` builds the next snapshot when the manifest
changes: it loads every version the new split names first, and swaps the snapshot only
when all of them loaded (one reference assignment). A version that is refused (checksum,
runtime) leaves the old snapshot serving, and the reason is reported by ``/readyz``.

The versions of the previous snapshot stay loaded (warm) until the next change, so a
rollback to the previous champion is a swap, not a load.

Routing unit (``serve.route_by``): ``frame`` hashes the frame key (shares hold for a small
fleet), ``camera`` hashes the camera (sticky: a camera's frames go to one version within
a stage; as the challenger's share grows its cameras stay with it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cvloop.adapters.cameras import DEFAULT_GROUP
from cvloop.adapters.cameras import registry as camera_registry
from cvloop.core.errors import CvloopError
from cvloop.serving.models import ModelRefused, ServingModel, load_model
from registry.manifest import RolloutManifest, read_manifest, route, single
from registry.names import CHAMPION

#: a refused version is tried again after this long (the registry may be fixed meanwhile)
RETRY_REFUSED_S = 30.0


@dataclass(frozen=True)
class Routing:
    """One consistent view: the split, the models it names, the camera groups."""

    manifest: RolloutManifest
    source: str  # "rollout manifest" | "champion alias (no manifest)"
    models: dict[str, ServingModel]
    groups: dict[str, str]
    route_by: str

    def version_for(self, camera: str, frame_key: str) -> str:
        return route(camera if self.route_by == "camera" else frame_key, self.manifest)

    @property
    def shadow(self) -> list[str]:
        """Versions that get a copy of every frame (logged as shadow, never returned)."""
        return [v for v in self.manifest.shadow if v in self.models]

    def group_of(self, camera: str) -> str:
        return self.groups.get(camera, DEFAULT_GROUP)

    def signature(self) -> tuple:
        return _signature(self.manifest)

    def describe(self) -> dict:
        m = self.manifest
        return {
            "source": self.source,
            "stage": m.stage,
            "route_by": self.route_by,
            "allocations": [{"version": a.version, "share": a.share} for a in m.allocations],
            "shadow": list(m.shadow),
            "updated_at": m.updated_at,
            "reason": m.reason,
            "models": {v: s.describe() for v, s in sorted(self.models.items())},
        }


def _signature(m: RolloutManifest) -> tuple:
    return (m.stage, tuple((a.version, a.share) for a in m.allocations), tuple(m.shadow),
            m.updated_at)  # fmt: skip


@dataclass
class HostState:
    routing: Routing | None = None
    warm: dict[str, ServingModel] = field(default_factory=dict)
    not_ready: str | None = "starting: the rollout manifest was not read yet"
    refused: dict[str, tuple[str, float]] = field(default_factory=dict)  # version -> (why, when)
    last_error: str | None = None
    reloads: int = 0


class ModelHost:
    """Loads what the manifest names and swaps the routing (see the module docstring).

    Args:
        store: the frame store holding ``rollout/manifest.json`` and the camera registry.
        registry: the model registry (versions, the ``champion`` alias when no manifest).
        runtime, threads: how each version is loaded.
        route_by: ``frame`` or ``camera``.
        on_event: a line for each swap and each refusal (the server's log).
    """

    def __init__(self, store, registry, *, runtime: str, threads: int, route_by: str,
                 on_event: Callable[[str], None] | None = None,
                 loader: Callable[..., ServingModel] = load_model,
                 on_load: Callable[[str, str], None] | None = None) -> None:  # fmt: skip
        self.store = store
        self.registry = registry
        self.runtime = runtime
        self.threads = threads
        self.route_by = route_by
        self.on_event = on_event or (lambda _l: None)
        self.loader = loader
        self.on_load = on_load or (lambda _v, _result: None)
        self.state = HostState()
        self._mu = threading.Lock()  # one poll at a time

    @property
    def routing(self) -> Routing | None:
        return self.state.routing

    def _wanted(self) -> tuple[RolloutManifest, str]:
        manifest = read_manifest(self.store)
        if manifest is not None:
            return manifest, "rollout manifest"
        version = self.registry.alias_version(CHAMPION)
        if version is None:
            raise CvloopError(
                "no rollout manifest and no champion registered: nothing to serve yet",
                fix="register a champion (`cvloop bootstrap` or `cvloop adopt`)",
            )
        return single(version, stage="stable"), "champion alias (no manifest)"

    def poll(self) -> bool:
        """Read the manifest; load and swap if it changed. True when the routing changed."""
        with self._mu:
            return self._poll()

    def _poll(self) -> bool:
        st = self.state
        try:
            manifest, source = self._wanted()
        except CvloopError as exc:
            st.last_error = exc.message
            if st.routing is None:
                st.not_ready = exc.message
            return False
        try:
            groups = {c: r["group"] for c, r in camera_registry(self.store).items()}
        except CvloopError as exc:
            groups = st.routing.groups if st.routing else {}
            st.last_error = exc.message
        current = st.routing
        if current is not None and current.signature() == _signature(manifest):
            if groups != current.groups:
                st.routing = Routing(current.manifest, current.source, current.models, groups,
                                     self.route_by)  # fmt: skip
            return False
        loaded: dict[str, ServingModel] = {}
        for v in [a.version for a in manifest.allocations] + list(manifest.shadow):
            if v in st.warm:
                loaded[v] = st.warm[v]
                continue
            why = st.refused.get(v)
            if why and time.monotonic() - why[1] < RETRY_REFUSED_S:
                return self._refuse(v, why[0], fresh=False)
            try:
                loaded[v] = self.loader(
                    self.registry, v, runtime=self.runtime, threads=self.threads
                )
            except ModelRefused as exc:
                st.refused[v] = (str(exc), time.monotonic())
                self.on_load(v, "refused")
                return self._refuse(v, str(exc))
            except CvloopError as exc:  # the registry is down: try again next poll
                st.last_error = f"loading version {v}: {exc.message}"
                if st.routing is None:
                    st.not_ready = st.last_error
                return False
            st.refused.pop(v, None)
            self.on_load(v, "ok")
        previous = current.models if current else {}
        st.routing = Routing(manifest, source, loaded, groups, self.route_by)
        st.warm = {**previous, **loaded}  # the previous split stays warm for a rollback
        st.not_ready = None
        st.last_error = None
        st.reloads += 1
        split = ", ".join(f"v{a.version} {a.share:g}%" for a in manifest.allocations)
        split += "".join(f", v{v} in shadow" for v in manifest.shadow)
        self.on_event(f"routing: {split} ({source}, stage {manifest.stage}); warm: "
                      f"{sorted(st.warm)}")  # fmt: skip
        return True

    def _refuse(self, version: str, why: str, fresh: bool = True) -> bool:
        st = self.state
        st.last_error = why
        if st.routing is None:
            st.not_ready = why
        if fresh:
            keep = "keeps serving the previous split" if st.routing else "serves nothing yet"
            self.on_event(f"refused: {why} (the server {keep})")
        return False
