"""Schema stage: the class list as versioned data (``schema.yaml`` in the data repository)
and the operations that change it: migrate the labels of the dataset and the holdout into
new versions, update the open Label Studio projects, keep the operator's seed frames."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cvloop.core.errors import CvloopError
from cvloop.core.schema import SCHEMA_FILE, ClassSchema, SchemaChange, SchemaLog
from cvloop.stages.repo_lease import writes_data_repo

if TYPE_CHECKING:
    from cvloop.context import Context

SEEDS_PREFIX = "seeds"


def schema_log(ctx: Context) -> SchemaLog:
    """The data repository's schema log; before the first change, version 1 from
    params.yaml's ``schema`` section."""

    path = ctx.data_repo.root / SCHEMA_FILE
    if path.exists():
        return SchemaLog.from_yaml(path.read_text(), str(path))
    p = ctx.params
    return SchemaLog.initial(list(p.classes), p.schema_.label_policy_version)


def current_schema(ctx: Context) -> ClassSchema:
    return schema_log(ctx).current


def require_migrated(folder: Path, schema: ClassSchema) -> None:
    """Refuse to write labels of ``schema`` into a folder that follows another version
    (a schema change whose migration has not finished)."""
    from cvloop.adapters.datasets import folder_schema

    have = folder_schema(folder)
    if have != schema.version:
        raise CvloopError(
            f"{folder} follows schema-v{have} but the schema is {schema.tag}: its labels "
            "have not been migrated",
            fix="finish the schema change: run the same `cvloop schema ...` command again "
            "(it resumes where it stopped)",
        )


@dataclass
class SchemaChangeResult:
    change: dict
    schema: dict  # the schema after the change
    applied: bool  # False: the same request had already run (a re-run changes nothing)
    migrations: list[dict] = field(default_factory=list)
    dataset: dict | None = None  # VersionRecord as a dict
    holdout: dict | None = None
    projects: list[dict] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "change": SchemaChange(**_as_change(self.change)).describe(),
            "schema_version": self.schema["version"],
            "classes": self.schema["classes"],
            "label_policy_version": self.schema["label_policy_version"],
            "applied": self.applied,
            "dataset_version": (self.dataset or {}).get("name"),
            "holdout_version": (self.holdout or {}).get("name"),
            "migrated": {
                Path(m["folder"]).name: {
                    "frames": m["frames"],
                    "labels_rewritten": m["labels_rewritten"],
                    "kept": m["counts"]["kept"],
                    "dropped": m["counts"]["dropped"],
                    "merged": m["counts"]["merged"],
                    "already": m["already"],
                }
                for m in self.migrations
            },
            "label_studio_projects": self.projects,
            "seed_frames": len(self.seeds),
        }


def _as_change(d: dict) -> dict:
    d = dict(d)
    d["seed_keys"] = tuple(d.get("seed_keys") or ())
    d["cameras"] = tuple(d.get("cameras") or ())
    return d


def store_seeds(ctx: Context, class_name: str, paths: list[str]) -> list[str]:
    """The operator's example frames as frame-store keys: a key of the frame store is kept
    as it is (the frame keeps its camera, time and lineage, and is not stored twice); an
    image file is stored under ``seeds/<class>/<sha>.jpg`` (idempotent: the key is the
    content hash). Every seed must decode as an image."""
    from cvloop.adapters.detector import decode_jpeg
    from cvloop.core.frames import frame_id

    store = ctx.store
    keys = []
    for p in paths:
        local = Path(p)
        in_store = not local.exists() and _is_key(p) and store.exists(p)
        if local.exists():
            data = local.read_bytes()
        elif in_store:
            data = store.get_bytes(p)
        else:
            raise CvloopError(
                f"seed frame {p!r} is neither a file here nor a key of the frame store",
                fix="give image files (JPEG/PNG) or frame-store keys, "
                "e.g. frames/cam-03/2026-11-20/1795651200000.jpg",
            )
        try:
            pixels = decode_jpeg(data)
        except Exception as exc:
            raise CvloopError(
                f"seed frame {p!r} is not a readable image ({exc})",
                fix="give JPEG or PNG images of the new class",
            ) from None
        if in_store:
            keys.append(p)
            continue
        if local.suffix.lower() not in (".jpg", ".jpeg"):
            import cv2

            _ok, buf = cv2.imencode(".jpg", pixels[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            data = buf.tobytes()
        key = f"{SEEDS_PREFIX}/{class_name}/{frame_id(data)}.jpg"
        if not store.exists(key):
            store.put_bytes(key, data)
        keys.append(key)
    return sorted(set(keys))


def _is_key(text: str) -> bool:
    from cvloop.adapters.storage import validate_key
    from cvloop.core.errors import StorageError

    try:
        validate_key(text)
        return True
    except StorageError:
        return False


def plan_change(ctx: Context, change: SchemaChange) -> tuple[SchemaLog, bool]:
    """The schema log with the change applied (refusals raise with the fix) and whether it
    is new; written to ``schema.yaml`` in the data repository's working tree (committed
    with the migrated data, so a crash before the commit is resumed by a re-run)."""

    log = schema_log(ctx)
    new_log, applied = log.applied(change)
    if applied:
        path = ctx.data_repo.root / SCHEMA_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(new_log.to_yaml())
        tmp.replace(path)
    return new_log, applied


@writes_data_repo("a schema change")
def migrate_and_version(ctx: Context, log: SchemaLog, applied: bool) -> dict:
    """Migrate the labels of the dataset and the holdout to the current schema, then commit
    ``schema.yaml`` with dataset v_n+1 and holdout v_k+1 and tag ``schema-v<n>``.
    Resumable, and a no-op for a re-run whose versions exist."""
    from cvloop.adapters.datasets import folder_schema, migrate_folder
    from cvloop.adapters.versioning import (
        DATASET_DIR,
        DATASET_POINTER,
        HOLDOUT_DIR,
        HOLDOUT_POINTER,
        next_version,
    )

    repo = ctx.data_repo
    repo.ensure()
    repo.checkout([DATASET_POINTER, HOLDOUT_POINTER])
    schema = log.current
    change = schema.history[-1] if schema.history else None
    what = change.describe() if change else "initial schema"
    message = f"cvloop {schema.tag}: {what}" + (f" ({change.why})" if change and change.why else "")
    out: dict = {"migrations": []}
    for folder, pointer, prefix in (
        (DATASET_DIR, DATASET_POINTER, "dataset"),
        (HOLDOUT_DIR, HOLDOUT_POINTER, "holdout"),
    ):
        root = repo.root / folder
        if not (root / "data.yaml").exists():
            raise CvloopError(
                f"{root} holds no dataset version", fix="run `cvloop bootstrap` first"
            )
        if folder_schema(root) == schema.version and (root / "VERSION").exists():
            name = (root / "VERSION").read_text().strip()
        else:
            name = f"{prefix}-v{next_version(repo, prefix)}"
        mig = migrate_folder(root, log, name)
        out["migrations"].append(mig.as_dict())
        current_tag = repo.tag_message(name)
        if current_tag is not None and not current_tag.startswith(f"cvloop {schema.tag}"):
            out[prefix] = None  # already versioned before this change (nothing migrated)
            continue
        repo.add(folder)
        files = (SCHEMA_FILE,) if prefix == "dataset" else ()
        rec = repo.commit_version(name, [pointer], f"{message}: {prefix} labels migrated", files)
        out[prefix] = asdict(rec)
    repo.tag_at_head(schema.tag, message)
    return out


def open_review_projects(ctx: Context, log: SchemaLog) -> list[tuple[int, str]]:
    """Label Studio projects of dataset versions not yet versioned (reviews in progress),
    as (id, title)."""
    from cvloop.adapters.labelstudio import feeds_training, project_version

    repo = ctx.data_repo
    queue = ctx.labelstudio
    model = ctx.params.registry.model_name
    out = []
    for pid, title in queue.projects(model):
        if not feeds_training(title, model):  # another model's, or a holdout refresh
            continue
        version = str(project_version(title, model))
        msg = repo.tag_message(version)
        # a version tag made by a schema migration does not close the review of that name
        if msg is None or msg.startswith("cvloop schema-v"):
            out.append((pid, title))
    return out


def update_label_studio(ctx: Context, log: SchemaLog) -> list[dict]:
    """The labeling config of every open review project follows the current schema."""

    queue = ctx.labelstudio
    out = []
    for pid, title in open_review_projects(ctx, log):
        labels = queue.set_labels(pid, list(log.current.classes))
        out.append({"id": pid, "title": title, "labels": labels, "url": queue.project_url(pid)})
    return out


@dataclass(frozen=True)
class Routes:
    """What the next retrain routes to review for classes the champion does not know yet."""

    classes: list[str]
    cameras: list[str]
    seed_keys: list[str]


def new_class_routes(ctx: Context, champion_classes: list[str]) -> Routes:
    """Classes of the current schema the champion cannot detect, with the cameras and seed
    frames their ``add`` recorded (renamed since: under today's name)."""
    log = schema_log(ctx)
    now = log.translate()
    classes, cameras, seeds = [], set(), set()
    for v in log.versions[1:]:
        c = v.history[-1]
        name = now.get(c.name) if c.op == "add" else None
        if name and name not in champion_classes and name in log.current.classes:
            classes.append(name)
            cameras.update(c.cameras)
            seeds.update(c.seed_keys)
    return Routes(sorted(set(classes)), sorted(cameras), sorted(seeds))


def data_changes(ctx: Context, start, end) -> list[dict]:
    """Data versions tagged in [start, end) (schema, dataset, holdout), with who and why:
    the weekly review's "what changed in the data, and why"."""
    import datetime as dt

    repo = ctx.data_repo
    if not (repo.root / ".git").exists():
        return []
    out = repo.git(
        "for-each-ref", "--sort=taggerdate", "--format=%(refname:short)\t%(taggerdate:iso-strict)"
        "\t%(taggername)\t%(contents:subject)", "refs/tags/schema-v*", "refs/tags/dataset-v*",
        "refs/tags/holdout-v*", check=False,
    )  # fmt: skip
    who = {f"schema-v{v.version}": v.history[-1] for v in schema_log(ctx).versions[1:]}
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 4 or not parts[1]:
            continue
        when = dt.datetime.fromisoformat(parts[1])
        if not (start <= when < end):
            continue
        change = who.get(parts[0])
        rows.append(
            {
                "when": when.isoformat(timespec="seconds"),
                "version": parts[0],
                "what": parts[3],
                "who": change.who if change else parts[2],
                "why": change.why if change else "",
            }
        )
    return rows


def schema_summary(ctx: Context) -> dict:
    """The current schema and the newest dataset and holdout versions (``cvloop status``)."""

    s = current_schema(ctx)
    repo = ctx.data_repo
    tags = {
        k: (repo.tags(f"{k}-v*") or ["none"])[-1] if (repo.root / ".git").exists() else "none"
        for k in ("dataset", "holdout")
    }
    return {
        "schema": s.tag,
        "classes": list(s.classes),
        "label_policy_version": s.label_policy_version,
        "dataset": tags["dataset"],
        "holdout": tags["holdout"],
        "last_change": s.history[-1].describe() if s.history else "none (params.yaml's list)",
    }
