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
from dataclasses import asdict, dataclass, field, replace

from cvloop.core.errors import CvloopError

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
    # an added class: where it is likely to appear (routed to review by the next retrain)
    seed_keys: tuple[str, ...] = ()  # frame-store keys of the operator's example frames
    cameras: tuple[str, ...] = ()  # cameras that start to show it

    def same_request(self, other: SchemaChange) -> bool:
        """The same operation (``when``/``who``/``why`` aside): a re-run of a request."""
        return (self.op, self.name, self.new_name, self.merge_into) == (
            other.op,
            other.name,
            other.new_name,
            other.merge_into,
        )

    def describe(self) -> str:
        if self.op == "add":
            return f"add class '{self.name}'"
        if self.op == "rename":
            return f"rename class '{self.name}' to '{self.new_name}'"
        if self.merge_into:
            return f"retire class '{self.name}' (boxes merged into '{self.merge_into}')"
        return f"retire class '{self.name}' (boxes dropped)"


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
            tuple(_change(c) for c in d.get("history", [])),
        )


def _change(d: dict) -> SchemaChange:
    d = dict(d)
    d["seed_keys"] = tuple(d.get("seed_keys") or ())
    d["cameras"] = tuple(d.get("cameras") or ())
    return SchemaChange(**d)


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
    stamped = replace(
        change, when=change.when or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
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
    # several old ids onto one new id: a merge; the class that owns the id (same name, else
    # the first) is kept, the others count as merged into it
    owners: dict[int, int] = {}
    for i, j in sorted(mapping.items()):
        if j is not None and (j not in owners or old.classes[i] == new.classes[j]):
            owners[j] = i
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
        if owners[to] != cid:
            what = old.classes[cid]
            counts.merged[what] = counts.merged.get(what, 0) + 1
        name = new.classes[to]
        counts.kept[name] = counts.kept.get(name, 0) + 1
        out.append(" ".join([str(to), *parts[1:]]))
    return ("\n".join(out) + "\n") if out else "", counts


# ---- the schema's versions, as stored in the data repository ------------------------------

SCHEMA_FILE = "schema.yaml"
MARKER = "SCHEMA"  # in a dataset folder: the schema version its labels follow


class SchemaLog:
    """Every version of the class schema (``schema.yaml`` in the data repository, committed
    with the dataset versions and tagged ``schema-v<n>``). Version 1 is params.yaml's
    ``schema`` section; each later version is one change applied to the one before."""

    def __init__(self, versions: list[ClassSchema]) -> None:
        if not versions:
            raise CvloopError("a schema log needs at least version 1")
        self.versions = versions

    @property
    def current(self) -> ClassSchema:
        return self.versions[-1]

    def get(self, version: int) -> ClassSchema:
        for v in self.versions:
            if v.version == version:
                return v
        raise CvloopError(
            f"schema-v{version} is not in the schema log (versions 1..{self.current.version})",
            fix="check the data repository's schema.yaml and its schema-v* tags",
        )

    def version_of(self, classes: list[str] | tuple[str, ...]) -> ClassSchema | None:
        """The latest version with exactly this class list (a model's classes -> its schema)."""
        for v in reversed(self.versions):
            if list(v.classes) == list(classes):
                return v
        return None

    def mapping(self, old: int, new: int | None = None) -> dict[int, int | None]:
        """Old id -> id in version ``new`` (default: current), composed over the changes."""
        new = self.current.version if new is None else new
        if new < old:
            raise CvloopError(f"cannot map schema-v{old} back to schema-v{new}")
        mapping: dict[int, int | None] = {i: i for i in range(len(self.get(old).classes))}
        for v in range(old + 1, new + 1):
            step = _step_mapping(self.get(v - 1), self.get(v))
            mapping = {i: (None if j is None else step[j]) for i, j in mapping.items()}
        return mapping

    def sources(self, old_classes: list[str], new: int | None = None) -> dict[str, str]:
        """New class name -> the old class whose learned head row it inherits (same class,
        renamed, or the target of a merge keeps its own row). Unknown old lists give {}."""
        old = self.version_of(old_classes)
        if old is None:
            return {}
        target = self.get(self.current.version if new is None else new)
        out: dict[str, str] = {}
        for i, j in self.mapping(old.version, target.version).items():
            if j is None:
                continue
            name = target.classes[j]
            # a merged class shares the target's id: the target keeps its own row
            if name not in out or old.classes[i] == name:
                out[name] = old.classes[i]
        return out

    def translate(self) -> dict[str, str | None]:
        """Every class name of every version -> its name now (None: retired, boxes dropped).
        A name used twice (retired, later added again) follows its latest use."""
        out: dict[str, str | None] = {}
        for v in self.versions:
            m = self.mapping(v.version)
            for i, n in enumerate(v.classes):
                out[n] = None if m[i] is None else self.current.classes[m[i]]
        return out

    def to_yaml(self) -> str:
        import yaml

        body = {
            "current": self.current.version,
            "versions": [
                {
                    "version": v.version,
                    "classes": list(v.classes),
                    "label_policy_version": v.label_policy_version,
                    "change": asdict(v.history[-1]) if v.version > 1 and v.history else None,
                }
                for v in self.versions
            ],
        }
        for v in body["versions"]:
            if v["change"]:
                v["change"]["seed_keys"] = list(v["change"]["seed_keys"])
                v["change"]["cameras"] = list(v["change"]["cameras"])
        return (
            "# cvloop class schema: every version, oldest first. Written by `cvloop schema`\n"
            "# (never by hand); committed with the dataset versions and tagged schema-v<n>.\n"
            + yaml.safe_dump(body, sort_keys=False)
        )

    @classmethod
    def from_yaml(cls, text: str, source: str = SCHEMA_FILE) -> SchemaLog:
        import yaml

        try:
            body = yaml.safe_load(text) or {}
            history: list[SchemaChange] = []
            versions = []
            for v in body["versions"]:
                if v.get("change"):
                    history.append(_change(v["change"]))
                versions.append(
                    ClassSchema(
                        int(v["version"]),
                        tuple(v["classes"]),
                        int(v.get("label_policy_version", 1)),
                        tuple(history),
                    )
                )
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
            raise CvloopError(
                f"{source} is not a cvloop schema log: {exc}",
                fix="restore it from git (`git checkout schema-v<n> -- schema.yaml`)",
            ) from None
        return cls(versions)

    @classmethod
    def initial(cls, classes: list[str], label_policy_version: int = 1) -> SchemaLog:
        return cls([ClassSchema(1, tuple(classes), label_policy_version)])

    def applied(self, change: SchemaChange) -> tuple[SchemaLog, bool]:
        """The log with ``change`` applied, and whether it was new. A request equal to the
        last change whose result is the current version (a re-run) returns the log as is."""
        last = self.current.history[-1] if self.current.history else None
        if last is not None and last.same_request(change):
            return self, False
        new, _ = apply(self.current, change)
        return SchemaLog([*self.versions, new]), True


def _step_mapping(before: ClassSchema, after: ClassSchema) -> dict[int, int | None]:
    change = after.history[-1]
    replayed, mapping = apply(before, replace(change))
    if replayed.classes != after.classes:
        raise CvloopError(
            f"schema-v{after.version} does not follow from schema-v{before.version} by "
            f"'{change.describe()}'",
            fix="the schema log was edited by hand: restore it from git",
        )
    return mapping
