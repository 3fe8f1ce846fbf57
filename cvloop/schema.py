"""The class schema as a versioned object, and the label migrations between versions.

A schema version is the ordered class list (ids are positions) plus the label-policy
version (how boxes are drawn; reviewers' guide). Every change makes a new schema version
and says how each old class id maps into it:

* ``add NAME`` — a new id at the end; existing labels keep their ids;
* ``rename OLD NEW`` — same id, new name (labels unchanged, names change);
* ``retire NAME`` — boxes of that class are dropped, or merged into another class
  (``merge_into``); the ids after it shift down by one.

``migrate_label_text`` applies a mapping to a YOLO label file and counts what happened, so
a migration reports its counts. Applying a change whose result is already the current
schema is refused by ``apply`` (the caller then knows the migration already ran: a re-run is
a no-op, not a second migration).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field

from cvloop.errors import CvloopError

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class SchemaChange:
    op: str  # add | rename | retire
    name: str
    new_name: str | None = None  # rename
    merge_into: str | None = None  # retire
    why: str = ""
    who: str = ""
    when: str = ""


@dataclass(frozen=True)
class ClassSchema:
    version: int
    classes: tuple[str, ...]
    label_policy_version: int = 1
    history: tuple[SchemaChange, ...] = field(default_factory=tuple)

    @property
    def tag(self) -> str:
        return f"schema-v{self.version}"

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "classes": list(self.classes),
            "label_policy_version": self.label_policy_version,
            "history": [asdict(c) for c in self.history],
        }

    @classmethod
    def from_dict(cls, d: dict) -> ClassSchema:
        return cls(
            int(d["version"]),
            tuple(d["classes"]),
            int(d.get("label_policy_version", 1)),
            tuple(SchemaChange(**c) for c in d.get("history", [])),
        )


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise CvloopError(
            f"invalid class name {name!r}",
            fix="lower case letters, digits, '-' or '_', starting with a letter, at most 40",
        )


def apply(schema: ClassSchema, change: SchemaChange) -> tuple[ClassSchema, dict[int, int | None]]:
    """The next schema version and the id mapping old id -> new id (None: box dropped)."""
    classes = list(schema.classes)
    if change.op == "add":
        _check_name(change.name)
        if change.name in classes:
            raise CvloopError(
                f"class '{change.name}' already exists in {schema.tag} ({classes})",
                fix="nothing to do (a migration that already ran), or choose another name",
            )
        new = [*classes, change.name]
        mapping: dict[int, int | None] = {i: i for i in range(len(classes))}
    elif change.op == "rename":
        if change.name not in classes:
            raise CvloopError(
                f"cannot rename '{change.name}': not a class of {schema.tag} ({classes})",
                fix="name an existing class (a rename that already ran is done)",
            )
        if not change.new_name:
            raise CvloopError("rename needs the new name")
        _check_name(change.new_name)
        if change.new_name in classes:
            raise CvloopError(
                f"cannot rename '{change.name}' to '{change.new_name}': '{change.new_name}' "
                f"is already a class of {schema.tag}",
                fix=f"to combine the two classes, retire '{change.name}' with "
                f"--merge-into {change.new_name}",
            )
        new = [change.new_name if c == change.name else c for c in classes]
        mapping = {i: i for i in range(len(classes))}
    elif change.op == "retire":
        if change.name not in classes:
            raise CvloopError(
                f"cannot retire '{change.name}': not a class of {schema.tag} ({classes})",
                fix="name an existing class (a retirement that already ran is done)",
            )
        if change.merge_into is not None and (
            change.merge_into not in classes or change.merge_into == change.name
        ):
            raise CvloopError(
                f"cannot merge '{change.name}' into '{change.merge_into}': not another class "
                f"of {schema.tag}",
                fix=f"merge into one of {[c for c in classes if c != change.name]}",
            )
        if len(classes) == 1:
            raise CvloopError("cannot retire the last class of the schema")
        new = [c for c in classes if c != change.name]
        gone = classes.index(change.name)
        mapping = {}
        for i, c in enumerate(classes):
            if i == gone:
                mapping[i] = new.index(change.merge_into) if change.merge_into else None
            else:
                mapping[i] = new.index(c)
    else:
        raise CvloopError(f"unknown schema change {change.op!r}", fix="add, rename or retire")
    stamped = SchemaChange(
        change.op,
        change.name,
        change.new_name,
        change.merge_into,
        change.why,
        change.who,
        change.when or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    # a label policy change: renames keep the policy; adding, retiring or merging changes
    # what reviewers draw
    policy = schema.label_policy_version + (0 if change.op == "rename" else 1)
    return (
        ClassSchema(schema.version + 1, tuple(new), policy, (*schema.history, stamped)),
        mapping,
    )


@dataclass
class MigrationCounts:
    kept: dict[str, int] = field(default_factory=dict)  # new class name -> boxes
    dropped: dict[str, int] = field(default_factory=dict)  # old class name -> boxes
    merged: dict[str, int] = field(default_factory=dict)  # old class name -> boxes

    def add(self, other: MigrationCounts) -> None:
        for mine, theirs in (
            (self.kept, other.kept),
            (self.dropped, other.dropped),
            (self.merged, other.merged),
        ):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v


def migrate_label_text(
    text: str,
    mapping: dict[int, int | None],
    old: ClassSchema,
    new: ClassSchema,
    source: str = "label file",
) -> tuple[str, MigrationCounts]:
    """A YOLO label file (``class cx cy w h`` per line) under ``mapping``, with counts."""
    counts = MigrationCounts()
    last = new.history[-1] if new.history else None
    merged_from = last.name if last and last.op == "retire" and last.merge_into else None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cid = int(parts[0])
        except ValueError as exc:
            raise CvloopError(
                f"{source}:{n}: class id {parts[0]!r} is not an integer",
                fix="repair the label file (validation quarantines such frames)",
            ) from exc
        if cid not in mapping:
            raise CvloopError(
                f"{source}:{n}: class id {cid} is not in {old.tag} ({list(old.classes)})",
                fix="the file does not belong to this schema version; migrate it from its own",
            )
        to = mapping[cid]
        if to is None:
            counts.dropped[old.classes[cid]] = counts.dropped.get(old.classes[cid], 0) + 1
            continue
        if merged_from == old.classes[cid]:
            counts.merged[merged_from] = counts.merged.get(merged_from, 0) + 1
        name = new.classes[to]
        counts.kept[name] = counts.kept.get(name, 0) + 1
        out.append(" ".join([str(to), *parts[1:]]))
    return ("\n".join(out) + "\n") if out else "", counts
