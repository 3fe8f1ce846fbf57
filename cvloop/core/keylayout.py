"""A frame store's key layout as a template: where a team's frames already are, read as
they are (params.yaml ``frames``; runbooks/adopt.md).

A template is a key with fields in braces, each one path segment or a part of one::

    frames/{camera}/{date}/{ts_ms}.{ext}     cvloop's own layout (the default)
    {camera}/{date}/{name}.{ext}             a bucket by camera and day, any file name
    site-a/{camera}/{ts_s}.{ext}             seconds in the name

Fields: ``{camera}`` (required), ``{date}`` (YYYY-MM-DD), ``{ts_ms}`` / ``{ts_s}`` (epoch
milliseconds / seconds), ``{name}`` (any file name stem), ``{ext}`` (jpg, jpeg, png; any
case), ``{any}`` (one segment, ignored). Where a frame's capture time comes from is the
``timestamp`` rule: ``key`` (``{ts_ms}`` / ``{ts_s}`` in the key), ``exif`` (the image's
DateTimeOriginal, with its OffsetTimeOriginal, UTC when it has none) or ``object`` (the
store's last-modified time of the object).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from cvloop.core.errors import CvloopError

_FIELDS = {
    "camera": r"(?P<camera>[^/]+?)",
    "date": r"(?P<date>\d{4}-\d{2}-\d{2})",
    "ts_ms": r"(?P<ts_ms>\d{11,16})",
    "ts_s": r"(?P<ts_s>\d{9,11})",
    "name": r"(?P<name>[^/]+?)",
    "ext": r"(?P<ext>(?i:jpe?g|png|mp4|avi|mov|mkv))",
    "any": r"[^/]+?",
}
TIMESTAMPS = ("key", "exif", "object")
_FIELD = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class ParsedKey:
    camera: str
    day: dt.date | None  # from {date}, or the key's time
    ts_ms: int | None  # from {ts_ms} / {ts_s}; None: the timestamp rule reads it elsewhere


#: capture times a key may name: 1970 up to 2200 (a larger number is a bad name, not a time)
MAX_TS_MS = 7_258_118_400_000


def time_out_of_range(key: str, template: KeyTemplate) -> int | None:
    """The epoch-ms (or s) time ``key`` names when it fits ``template`` but that time is out
    of range (1970 .. 2200); None otherwise."""
    m = template._re.match(key)
    ts = _ts_ms(m.groupdict()) if m else None
    return ts if ts is not None and not (0 <= ts < MAX_TS_MS) else None


def _ts_ms(g: dict) -> int | None:
    """The epoch-ms time a parsed key names ({ts_ms}, or {ts_s} x 1000), if any."""
    if g.get("ts_ms"):
        return int(g["ts_ms"])
    return int(g["ts_s"]) * 1000 if g.get("ts_s") else None


class KeyTemplate:
    """One template, compiled: parse a key, or the listing prefix for a camera and day."""

    def __init__(self, template: str, what: str = "frames.images") -> None:
        self.template = template
        self.fields = _FIELD.findall(template)
        unknown = sorted(set(self.fields) - set(_FIELDS))
        if unknown:
            raise CvloopError(f"{what} {template!r}: unknown fields {unknown}",
                              fix=f"use {', '.join('{' + f + '}' for f in _FIELDS)}")  # fmt: skip
        dup = sorted({f for f in self.fields if f != "any" and self.fields.count(f) > 1})
        if "camera" not in self.fields or dup or template.startswith("/"):
            raise CvloopError(f"{what} {template!r}: needs {{camera}} once (and no field "
                              f"twice: {dup}), and no leading /",
                              fix="e.g. frames/{camera}/{date}/{ts_ms}.{ext}")  # fmt: skip
        parts, pos = [], 0
        for m in _FIELD.finditer(template):
            parts += [re.escape(template[pos : m.start()]), _FIELDS[m.group(1)]]
            pos = m.end()
        parts.append(re.escape(template[pos:]))
        self._re = re.compile("^" + "".join(parts) + "$")

    @property
    def pattern(self) -> str:
        """The regular expression a key of this template matches (anchored at both ends)."""
        return self._re.pattern

    @property
    def has_time(self) -> bool:
        return "ts_ms" in self.fields or "ts_s" in self.fields

    def parse(self, key: str) -> ParsedKey | None:
        m = self._re.match(key)
        if m is None:
            return None
        g = m.groupdict()
        ts = _ts_ms(g)
        if ts is not None and not (0 <= ts < MAX_TS_MS):  # a year beyond any clock
            return None
        try:
            day = dt.date.fromisoformat(g["date"]) if g.get("date") else None
        except ValueError:
            return None
        if day is None and ts is not None:
            day = dt.datetime.fromtimestamp(ts / 1000, dt.UTC).date()
        return ParsedKey(g["camera"], day, ts)

    def prefix(self, camera: str | None = None, day: dt.date | None = None) -> str:
        """The literal start of every key of ``camera`` on ``day``: the template up to the
        first field these do not fill (what the store is listed by)."""
        out, pos = [], 0
        for m in _FIELD.finditer(self.template):
            out.append(self.template[pos : m.start()])
            name = m.group(1)
            if name == "camera" and camera is not None:
                out.append(camera)
            elif name == "date" and day is not None:
                out.append(day.isoformat())
            else:
                return "".join(out)
            pos = m.end()
        return "".join(out) + self.template[pos:]

    def lists_by_day(self) -> bool:
        """Whether a camera's day can be listed alone ({date} before any other free field)."""
        for f in self.fields:
            if f == "date":
                return True
            if f != "camera":
                return False
        return False

    def format(self, camera: str, ts_ms: int, ext: str = "jpg") -> str:
        """A key in this layout (writers that choose their keys: the demo's fleet, tests)."""
        values = {"camera": camera, "ts_ms": str(ts_ms), "ts_s": str(ts_ms // 1000),
                  "date": dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).date().isoformat(),
                  "name": str(ts_ms), "ext": ext, "any": "x"}  # fmt: skip
        return _FIELD.sub(lambda m: values[m.group(1)], self.template)


def check_layout(images: str, videos: str, timestamp: str) -> None:
    """Refuse a layout that cannot say a frame's camera or time."""
    if timestamp not in TIMESTAMPS:
        raise CvloopError(f"frames.timestamp {timestamp!r} is not one of {TIMESTAMPS}",
                          fix="key (a time in the key), exif or object (last-modified)")  # fmt: skip
    for what, t in (("frames.images", images), ("frames.videos", videos)):
        tmpl = KeyTemplate(t, what)
        if timestamp == "key" and not tmpl.has_time:
            raise CvloopError(f"{what} {t!r} has no {{ts_ms}} or {{ts_s}}, and frames.timestamp "
                              "is key: a frame's capture time cannot be read",
                              fix="put the time in the template, or set frames.timestamp to "
                              "exif or object")  # fmt: skip
