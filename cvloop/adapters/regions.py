"""Per-region storage roots: a region's frames live in its own bucket (or endpoint).

A fleet that spans regions keeps each region's frames close to its cameras: the cameras of
``eu-west`` write to ``s3://acme-frames-eu/prod`` on the EU endpoint, the rest to the main
frame store. Which root a camera uses is configuration, not code:

* the camera's region comes from the camera registry (``cvloop fleet register-camera CAM
  --group G --region R``, :mod:`cvloop.adapters.cameras`);
* the region's root comes from the regions file (``CVLOOP_REGIONS_FILE``, default
  ``regions.yaml`` in the project folder when it exists)::

      regions:
        eu-west:
          storage_uri: s3://acme-frames-eu/prod
          endpoint_url: https://s3.eu-west-1.amazonaws.com   # optional

A region the file does not name keeps its frames in the main store.

:func:`cvloop.adapters.storage.open_storage` returns a :class:`RegionalStorage` for the frame store
when the file names at least one region, so the fleet, collect, prefilter, review and
dataset stages read and write a frame by its key without knowing where it lives. Frame and
video keys go to the camera's region, read by the store's key layout (params ``frames``:
``frames/{camera}/…`` by default, or the team's own, e.g. ``site-a/{camera}/{date}/…``);
everything else (the inference log, run records, the registry itself) stays in the main
store. A frame written before its camera moved to a region is still found: reads fall back
to the main store and listings merge both, so re-registering a camera loses nothing.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from cvloop.adapters.storage import ObjectInfo, Storage, validate_key
from cvloop.core.errors import ConfigError, CvloopError, StorageError
from cvloop.core.keylayout import KeyTemplate

REGIONS_FILE = "regions.yaml"
#: cvloop's own layout (params.yaml's default ``frames.images`` / ``frames.videos``)
DEFAULT_LAYOUT = ("frames/{camera}/{date}/{ts_ms}.{ext}", "videos/{camera}/{date}/{ts_ms}.{ext}")
REGISTRY_TTL_S = 30.0  # another process's registration is seen within this long
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_KEYS = {"storage_uri", "endpoint_url"}


@dataclass(frozen=True)
class Region:
    """One region's storage root."""

    name: str
    storage_uri: str
    endpoint_url: str | None = None


def load_regions(path: Path | None, main_uri: str | None = None) -> dict[str, Region]:
    """The regions the file at ``path`` configures (empty without a file), validated: every
    error names the file, the region and the key (the file: ``Settings.regions_path()``)."""
    if path is None:
        return {}
    fix = "see runbooks/cameras.md for the format: regions: {NAME: {storage_uri: s3://…}}"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc})", fix=fix) from None
    if not isinstance(data, dict) or not isinstance(data.get("regions", {}), dict):
        raise ConfigError(f"{path}: expected a mapping 'regions: {{NAME: …}}'", fix=fix)
    unknown_top = set(data) - {"regions"}
    if unknown_top:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown_top)}", fix=fix)
    out: dict[str, Region] = {}
    for name, body in (data.get("regions") or {}).items():
        where = f"{path}: region {name!r}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{where}: not a valid region name",
                              fix="lower case letters, digits, '.', '_' or '-', e.g. eu-west")  # fmt: skip
        if not isinstance(body, dict) or not body.get("storage_uri"):
            raise ConfigError(f"{where} has no storage_uri", fix=fix)
        unknown = set(body) - _KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} "
                              f"(allowed: {sorted(_KEYS)})", fix=fix)  # fmt: skip
        uri = str(body["storage_uri"]).rstrip("/")
        if main_uri and uri == main_uri.rstrip("/"):
            raise ConfigError(f"{where}: storage_uri is the main frame store ({uri})",
                              fix="give the region its own root, or leave it out of the file")  # fmt: skip
        if not (uri.startswith(("s3://", "file://", "/")) or Path(uri).is_absolute()):
            raise ConfigError(f"{where}: storage_uri {uri!r} must be s3://bucket[/prefix] "
                              "or an absolute path", fix=fix)  # fmt: skip
        endpoint = body.get("endpoint_url")
        out[name] = Region(name, uri, str(endpoint) if endpoint else None)
    return out


class CameraKeys:
    """Which camera a frame or video key, or a listing prefix, belongs to, by the key layout
    (the templates of params ``frames.images`` and ``frames.videos``).

    A key belongs to a camera when it fits a template, or when it starts with the template's
    literal head and the camera's folder (``frames/cam-01/…``, even a file that does not fit:
    it stays beside its camera's frames). A layout that starts with ``{camera}`` has no head,
    so only a key that fits is routed there: ``rollout/manifest.json`` is never a camera's."""

    def __init__(self, templates: tuple[str, ...] = DEFAULT_LAYOUT) -> None:
        self.templates = [KeyTemplate(t) for t in templates]
        self.heads = [t.prefix() for t in self.templates]  # the literal text before a field
        self._folders = []  # (head, regex of the start of a key up to the camera's folder)
        for t in self.templates:
            start = t.template.split("{camera}", 1)[0]
            if t.template.startswith(start + "{camera}/"):
                pattern = KeyTemplate(start + "{camera}").pattern
                self._folders.append((t.prefix(), re.compile(pattern.rstrip("$") + "/")))

    def camera(self, key: str) -> str | None:
        """The camera whose frames ``key`` is among, else None."""
        for t in self.templates:
            parsed = t.parse(key)
            if parsed is not None:
                return parsed.camera
        for head, folder in self._folders:
            m = folder.match(key) if head else None
            if m:
                return m.group("camera")
        return None

    def camera_prefix(self, prefix: str) -> str | None:
        """The one camera a listing ``prefix`` is within (it reaches past the camera's
        folder), else None."""
        for _head, folder in self._folders:
            m = folder.match(prefix)
            if m:
                return m.group("camera")
        return None

    def spans_cameras(self, prefix: str) -> bool:
        """Whether a listing ``prefix`` can reach frames of more than one camera."""
        if self.camera_prefix(prefix) is not None:
            return False
        return any(h.startswith(prefix) or prefix.startswith(h) for h in self.heads)


_DEFAULT_KEYS = CameraKeys()


def routed_camera(key: str) -> str | None:
    """The camera a frame or video key of cvloop's own layout belongs to, else ``None``."""
    return _DEFAULT_KEYS.camera(key) or _DEFAULT_KEYS.camera_prefix(key)


class RegionalStorage(Storage):
    """The frame store across regions: frame and video keys go to their camera's region
    root, everything else to the main store (see the module docstring)."""

    def __init__(
        self, home: Storage, regions: dict[str, Storage], keys: CameraKeys = _DEFAULT_KEYS
    ) -> None:
        self.home = home
        self.regions = regions
        self.layout = keys
        self.uri = home.uri
        self._camera_region: dict[str, str] = {}
        self._loaded_at = -1e18

    # ---- routing --------------------------------------------------------------------
    def camera_regions(self) -> dict[str, str]:
        """camera -> region, from the registry in the main store (cached briefly)."""
        if time.monotonic() - self._loaded_at > REGISTRY_TTL_S:
            from cvloop.adapters.cameras import registry

            try:
                cams = registry(self.home)
            except StorageError:
                raise  # the main store itself failed: say so
            except CvloopError:
                cams = {}  # cvloop.adapters.cameras reports a broken registry where it is read
            self._camera_region = {c: r["region"] for c, r in cams.items() if r["region"]}
            self._loaded_at = time.monotonic()
        return self._camera_region

    def refresh(self) -> None:
        """Read the registry again on the next routed call."""
        self._loaded_at = -1e18

    def store_for(self, key: str) -> Storage:
        """The store that holds (and receives) ``key``."""
        camera = self.layout.camera(key)
        if camera is None:
            return self.home
        return self.regions.get(self.camera_regions().get(camera, ""), self.home)

    def store_holding(self, key: str) -> Storage:
        """Where ``key`` is: its region's store, else the main store (frames written before
        the camera joined its region)."""
        store = self.store_for(validate_key(key))
        if store is not self.home and not store.exists(key) and self.home.exists(key):
            return self.home
        return store

    # ---- the Storage contract -------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        self.store_for(validate_key(key)).put_bytes(key, data)
        if key.startswith("fleet/"):
            self.refresh()  # the registry may have changed

    def get_bytes(self, key: str) -> bytes:
        store = self.store_for(validate_key(key))
        try:
            return store.get_bytes(key)
        except StorageError:
            if store is not self.home and self.home.exists(key):
                return self.home.get_bytes(key)
            raise

    def exists(self, key: str) -> bool:
        store = self.store_for(validate_key(key))
        return store.exists(key) or (store is not self.home and self.home.exists(key))

    def compare_and_put(self, key: str, data: bytes, expect) -> bool:
        return self.store_for(validate_key(key)).compare_and_put(key, data, expect)

    def delete(self, key: str) -> None:
        store = self.store_for(validate_key(key))
        store.delete(key)
        if store is not self.home:
            self.home.delete(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_key(prefix, prefix=True)
        camera = self.layout.camera_prefix(prefix)
        own = self.home
        if camera is not None:
            own = self.regions.get(self.camera_regions().get(camera, ""), self.home)
        if self.layout.spans_cameras(prefix):
            sources = [
                (o for o in s.list(prefix) if self.layout.camera(o.key) is not None)
                for s in self.regions.values()
            ] + [self.home.list(prefix)]
        elif own is not self.home:  # one camera's prefix
            sources = [own.list(prefix), self.home.list(prefix)]
        else:
            yield from self.home.list(prefix)
            return
        last = None
        for obj in heapq.merge(*sources, key=lambda o: o.key):
            if obj.key != last:  # a key in both: the first (its region's) copy
                yield obj
                last = obj.key

    def put_file(self, key: str, path: Path) -> None:
        self.store_for(validate_key(key)).put_file(key, path)

    def get_file(self, key: str, path: Path) -> Path:
        return self.store_holding(key).get_file(key, path)

    def url(self, key: str) -> str:
        return self.store_holding(key).url(key)

    def local_path(self, key: str) -> Path | None:
        return self.store_holding(key).local_path(key)


def open_regional(
    home: Storage, regions: dict[str, Region], open_root, layout: tuple[str, ...] = DEFAULT_LAYOUT
) -> RegionalStorage:
    """The frame store over ``home`` and each configured region's root (``open_root(region)``
    opens one, with the deployment's credentials); frame keys are read by ``layout`` (the
    ``frames.images`` and ``frames.videos`` templates)."""
    return RegionalStorage(home, {r.name: open_root(r) for r in regions.values()},
                           CameraKeys(layout))  # fmt: skip
