"""Slice tags: which slice of the frames a frame belongs to, as one small typed value.

A frame of a dataset version carries slice tags (its manifest's ``slice_tags``), the
holdout is scored per slice, the gates judge each drift slice, the selection says why a
frame was picked. The written form is a data contract (manifests in DVC, flow parameters,
gate names), so it never changes:

==========================  =====================================================
``drift:camera cam-01``     a camera the drift event flagged
``drift:class pallet``      a class the drift event flagged (or a class new to the schema)
``drift:night``             a drift scenario of the synthetic fleet (``fleet evaluate``)
``drift:all``               the drift slices pooled
``group:north``             a camera group's frames
``clean``                   no drift
==========================  =====================================================

:class:`SliceTag` formats and parses it; nothing else splits these strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DRIFT = "drift"
GROUP = "group"
CLEAN = "clean"


@dataclass(frozen=True, order=True)
class SliceTag:
    """``family`` (drift | group | clean), ``kind`` (camera | class, for a drift slice of
    the event; None otherwise) and ``name``."""

    family: str
    kind: str | None = None
    name: str = ""

    def __str__(self) -> str:
        if self.family == CLEAN:
            return CLEAN
        if self.kind:
            return f"{self.family}:{self.kind} {self.name}"
        return f"{self.family}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> SliceTag:
        """The tag written as ``text``; raises ValueError for anything else."""
        if text == CLEAN:
            return cls(CLEAN)
        family, sep, rest = text.partition(":")
        if not sep or family not in (DRIFT, GROUP) or not rest:
            raise ValueError(f"not a slice tag: {text!r} (e.g. 'drift:camera cam-01', "
                             "'group:north', 'clean')")  # fmt: skip
        kind, space, name = rest.partition(" ")
        if space and family == DRIFT and kind in ("camera", "class") and name:
            return cls(family, kind, name)
        return cls(family, None, rest)

    @classmethod
    def maybe(cls, text: str) -> SliceTag | None:
        """The tag written as ``text``, or None when it is not one."""
        try:
            return cls.parse(text)
        except ValueError:
            return None

    @property
    def is_drift(self) -> bool:
        return self.family == DRIFT


def camera(name: str) -> SliceTag:
    return SliceTag(DRIFT, "camera", name)


def drift_class(name: str) -> SliceTag:
    return SliceTag(DRIFT, "class", name)


def group(name: str) -> SliceTag:
    return SliceTag(GROUP, None, name)


DRIFT_ALL = SliceTag(DRIFT, None, "all")


def is_drift(text: str) -> bool:
    """Whether a written tag names a drift slice."""
    return text.startswith(f"{DRIFT}:")


def tags_for(cameras: Iterable[str] = (), classes: Iterable[str] = ()) -> list[str]:
    """The written tags of the drift slices of ``cameras`` and ``classes``."""
    return [str(camera(c)) for c in cameras] + [str(drift_class(c)) for c in classes]


def drift_cameras(tags: Iterable[str]) -> list[str]:
    """The cameras named by ``drift:camera`` tags."""
    return [t.name for t in map(SliceTag.parse, tags) if t.kind == "camera"]


def drift_classes(tags: Iterable[str]) -> list[str]:
    """The classes named by ``drift:class`` tags."""
    return [t.name for t in map(SliceTag.parse, tags) if t.kind == "class"]
