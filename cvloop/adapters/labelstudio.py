"""Label Studio: the reviewers' workplace, behind one small interface.

A review queue is a Label Studio project per dataset version, named after the registered
model (``cvloop-detector dataset-v3``: one Label Studio can serve several detectors' teams),
whose labeling config is built from the class list. Images are served from the frame store:

* a local store through Label Studio's *local files* storage, task image
  ``/data/local-files/?d=<store folder name>/<key>``. The server's document root holds links
  to the local frame roots and nothing else (:func:`link_frame_roots`, made by ``cvloop
  services up``): any Label Studio user may connect a storage anywhere below the root, so
  the root must not be a folder that also holds databases or secrets;
* an S3 store through an S3 import storage with presigned URLs, task image ``s3://bucket/key``.

A task's identity is the frame's content hash (``data.sha256``): importing the same frame
again is skipped, so a re-run adds no duplicate. Pre-annotations are Label Studio
*predictions* carrying the model version and scores; reviewers correct them and submit.

Boxes cross the boundary as :class:`cvloop.adapters.datasets.LabelBox` (normalized centre/size);
Label Studio stores top-left + size in percent of the image.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

from cvloop.core.errors import CvloopError
from cvloop.core.frames import LabelBox

FROM_NAME = "label"
TO_NAME = "image"
PROJECT_PREFIX = "cvloop"
LOCAL_FILES_URL = "/data/local-files/?d="


class LabelStudioError(CvloopError):
    """Label Studio is down, refuses the token, or refuses a request."""


def project_title(version: str, model: str) -> str:
    """The Label Studio project of ``version`` (``dataset-v3``, ``holdout-v2``) of the
    registered ``model`` (params: ``registry.model_name``): ``cvloop-detector dataset-v3``."""
    return f"{model} {version}"


#: before projects were named after the model, every project was ``cvloop <version>``; those
#: belong to the default model (a team that upgrades keeps its open reviews)
LEGACY_MODEL, LEGACY_PREFIX = "cvloop-detector", PROJECT_PREFIX


def project_version(title: str | None, model: str) -> str | None:
    """The version a project title of ``model`` names (``dataset-v3``), None for a project
    of another model or not cvloop's."""
    title = title or ""
    for prefix in (model, *((LEGACY_PREFIX,) if model == LEGACY_MODEL else ())):
        if title.startswith(f"{prefix} "):
            return title[len(prefix) + 1 :]
    return None


def feeds_training(title: str | None, model: str) -> bool:
    """A project whose labels become ``model``'s training data: a retrain's review queue
    (``<model> dataset-vN``). A holdout refresh's (``<model> holdout-vN``) never does, nor
    another model's project."""
    return (project_version(title, model) or "").startswith("dataset-v")


def labels_for_training(projects, since: dt.datetime, model: str) -> int:
    """Tasks with annotations in the review queues made since ``since``: the labels the
    champion was not trained on (the ``new_labels`` trigger)."""
    return sum(
        int(getattr(p, "num_tasks_with_annotations", 0) or 0)
        for p in projects
        if feeds_training(p.title, model)
        and (getattr(p, "created_at", None) is None or p.created_at >= since)
    )


def label_config(classes: Sequence[str]) -> str:
    """The labeling interface: one image, one rectangle tool with a label per class."""
    labels = "".join(f"<Label value={quoteattr(c)}/>" for c in classes)
    return (
        f'<View><Image name="{TO_NAME}" value="$image" zoom="true"/>'
        f'<RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</RectangleLabels>'
        "</View>"
    )


def box_to_result(box: LabelBox, width: int, height: int, score: float | None = None) -> dict:
    """A normalized centre/size box as a Label Studio rectangle result (percent, top-left)."""
    result = {
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": round((box.cx - box.w / 2) * 100, 4),
            "y": round((box.cy - box.h / 2) * 100, 4),
            "width": round(box.w * 100, 4),
            "height": round(box.h * 100, 4),
            "rotation": 0,
            "rectanglelabels": [box.label],
        },
    }
    if score is not None:
        result["score"] = round(float(score), 4)
    return result


def result_to_box(result: dict) -> LabelBox | None:
    """A Label Studio rectangle result as a normalized box (``None`` for other result types).

    Coordinates are kept as drawn (a box dragged past the edge stays out of bounds) so that
    validation, not conversion, decides what is wrong with it.
    """
    if result.get("type") != "rectanglelabels":
        return None
    v = result.get("value") or {}
    labels = v.get("rectanglelabels") or [""]
    w, h = _coordinate(v, "width") / 100, _coordinate(v, "height") / 100
    x, y = _coordinate(v, "x") / 100, _coordinate(v, "y") / 100
    return LabelBox(str(labels[0]), x + w / 2, y + h / 2, w, h)


def _coordinate(value: dict, name: str) -> float:
    """A rectangle coordinate as drawn; a missing, null or non-numeric one is NaN, which the
    ``coordinates_finite`` rule quarantines (never a crash of the whole export, never a
    ``nan`` in a label file)."""
    raw = value.get(name)
    if isinstance(raw, bool):
        return float("nan")
    try:
        return float(raw)
    except (TypeError, ValueError):
        return float("nan")


@dataclass(frozen=True)
class TaskSpec:
    """A frame to review: its identity, where the image is, and the pre-annotation."""

    sha256: str
    image: str  # the URL Label Studio loads
    width: int
    height: int
    boxes: list[LabelBox]
    scores: list[float]
    meta: dict = field(default_factory=dict)  # key, camera, ts_ms, why ... (shown in the UI)

    def to_task(self, model_version: str) -> dict:
        results = [
            box_to_result(b, self.width, self.height, s)
            for b, s in zip(self.boxes, self.scores, strict=True)
        ]
        score = min(self.scores) if self.scores else 1.0
        return {
            "data": {"image": self.image, "sha256": self.sha256, **self.meta},
            "predictions": [{"model_version": model_version, "score": score, "result": results}],
        }


@dataclass(frozen=True)
class ReviewedTask:
    """A task with a submitted annotation: the pre-annotation and what the reviewer made."""

    task_id: int
    sha256: str
    data: dict
    predicted: list[LabelBox]
    final: list[LabelBox]
    completed_at: str  # ISO time of the (latest) submitted annotation
    annotator: int | None
    # two reviewers annotated it (the project's double-labeled share): the first annotation of
    # each, in time order; ``final`` is the one marked ground truth, else the latest
    double: tuple[list[LabelBox], list[LabelBox]] | None = None
    resolved: bool = False  # an annotation is marked ground truth


@dataclass(frozen=True)
class ImportResult:
    imported: int
    skipped: int
    total: int


class LabelStudioQueue:
    """The review queue on a Label Studio server (SDK 2.x)."""

    def __init__(self, url: str, token: str, client=None, files_root: Path | None = None) -> None:
        """Args:
        files_root: the server's local-files document root, where a local store is reached
            as ``<files_root>/<store folder name>`` (:func:`link_frame_roots`); None, or a
            folder that does not exist here: the store's own path (a server whose root is
            the store's parent folder)."""
        from label_studio_sdk import LabelStudio

        self.url = url.rstrip("/")
        self.files_root = files_root
        self.client = client or LabelStudio(base_url=self.url, api_key=token, timeout=120)

    # ---- errors -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            yield
        except httpx.TransportError as exc:
            raise LabelStudioError(
                f"Label Studio at {self.url} is not reachable ({what}): {exc}",
                fix="start it with `cvloop services up`, or set LABEL_STUDIO_URL",
                transient=True,
            ) from None
        except ApiError as exc:
            if exc.status_code == 401:
                raise LabelStudioError(
                    f"Label Studio at {self.url} refuses the API token ({what}: "
                    f"HTTP {exc.status_code})",
                    fix="set LABEL_STUDIO_API_KEY to a valid token (Account & Settings)",
                ) from None
            raise LabelStudioError(
                f"Label Studio refused {what}: HTTP {exc.status_code} {str(exc.body)[:300]}",
                transient=(exc.status_code or 0) >= 500 or exc.status_code == 429,
            ) from None

    def check(self) -> None:
        """Fail with a clear message if the server is down or refuses the token."""
        with self._call("checking the connection"):
            self.client.users.whoami()

    def project_url(self, project_id: int) -> str:
        return f"{self.url}/projects/{project_id}/data"

    # ---- projects and storage -----------------------------------------------------------
    def ensure_project(
        self,
        title: str,
        classes: Sequence[str],
        description: str = "",
        double_share: float | None = None,
    ) -> int:
        """The project called ``title`` (created with the class list's config if missing).

        ``double_share``: the share of its tasks Label Studio gives to two reviewers (its
        overlap cohort, ``maximum_annotations`` 2), set on a new project and brought to this
        value on an existing one; None leaves an existing project's setting alone."""
        config = label_config(classes)
        with self._call(f"finding project {title!r}"):
            found = [p for p in self.client.projects.list(title=title) if p.title == title]
        if found:
            project = found[0]
            have = _labels_of(project.label_config or "")
            if project.label_config and have[: len(classes)] != list(classes):
                raise LabelStudioError(
                    f"Label Studio project {title!r} (id {project.id}) has labels "
                    f"{have}, the schema has {list(classes)}",
                    fix="change classes with `cvloop schema add-class/rename-class/"
                    "retire-class` (it updates open projects), never by editing params.yaml",
                )
            if double_share is not None:
                want = _overlap(double_share)
                have_ = (_get(project, "maximum_annotations"),
                         _get(project, "overlap_cohort_percentage"))  # fmt: skip
                if (want["maximum_annotations"], want["overlap_cohort_percentage"]) != have_:
                    with self._call(f"setting the double-labeled share of project {title!r}"):
                        self.client.projects.update(id=project.id, **want)
            return int(project.id)
        with self._call(f"creating project {title!r}"):
            project = self.client.projects.create(
                title=title,
                description=description,
                label_config=config,
                show_collab_predictions=True,
                **_overlap(double_share or 0.0),
            )
        return int(project.id)

    def projects(self, model: str) -> list[tuple[int, str]]:
        """(id, title) of the projects of ``model`` (:func:`project_title`)."""
        with self._call("listing projects"):
            return [
                (int(p.id), str(p.title))
                for p in self.client.projects.list()
                if project_version(p.title, model) is not None
            ]

    def labels(self, project_id: int) -> list[str]:
        """The labels the project's labeling interface offers."""
        with self._call(f"reading project {project_id}"):
            project = self.client.projects.get(id=project_id)
        return _labels_of(project.label_config or "")

    def set_labels(self, project_id: int, classes: Sequence[str]) -> list[str]:
        """Make the project's labels the schema's classes; returns the labels it now has.

        Label Studio refuses to drop a label that submitted annotations use; such labels
        (a renamed or retired class) are kept after the schema's, so reviewers see the new
        names while the old boxes stay valid (the export translates them through the
        schema log)."""
        have = self.labels(project_id)
        if have == list(classes):
            return have
        used = set()
        for t in self._tasks(project_id, "all"):
            for a in t.annotations or []:
                for r in _get(a, "result") or []:
                    used.update((r.get("value") or {}).get("rectanglelabels") or [])
        labels = [*classes, *sorted(used - set(classes))]
        with self._call(f"updating the labels of project {project_id} to {labels}"):
            self.client.projects.update(id=project_id, label_config=label_config(labels))
        return labels

    def connect_storage(self, project_id: int, store) -> None:
        """Let the project load images from the frame store (idempotent); a regional store
        connects the main store and every region's root."""
        from cvloop.adapters.regions import RegionalStorage
        from cvloop.adapters.storage import LocalStorage

        if isinstance(store, RegionalStorage):
            linked = self.files_root is not None and self.files_root.is_dir()
            for part in (store.home, *store.regions.values()):
                if not linked:  # a server whose root is the main store's parent
                    _check_served(store.home, part)
                self.connect_storage(project_id, part)
            return
        if isinstance(store, LocalStorage):
            path = str(store.root)
            if self.files_root is not None and self.files_root.is_dir():
                at = self.files_root / store.root.name
                if not (at.exists() and at.resolve() == store.root):
                    # a store made after the services started: link it too
                    link_frame_roots(self.files_root, [store.root], prune=False)
                path = str(at)
            with self._call("listing local storages"):
                existing = self.client.import_storage.local.list(project=project_id)
            if any(st.path == path for st in existing):
                return
            with self._call(f"connecting the frame store (local files at {path})"):
                self.client.import_storage.local.create(
                    project=project_id,
                    path=path,
                    use_blob_urls=True,
                    title="cvloop frame store",
                )
            return
        with self._call("listing S3 storages"):
            existing = self.client.import_storage.s3.list(project=project_id)
        if any(st.bucket == store.bucket for st in existing):
            return
        kw = store.client_kwargs  # the credentials the store itself was opened with
        with self._call(f"connecting the frame store (S3 bucket {store.bucket})"):
            self.client.import_storage.s3.create(
                project=project_id,
                bucket=store.bucket,
                prefix=store.prefix,
                presign=True,
                presign_ttl=60,
                use_blob_urls=True,
                s3endpoint=kw.get("endpoint_url"),
                region_name=str(kw.get("region_name")),
                aws_access_key_id=str(kw.get("aws_access_key_id")),
                aws_secret_access_key=str(kw.get("aws_secret_access_key")),
                title="cvloop frame store",
            )

    # ---- tasks --------------------------------------------------------------------------
    def _tasks(self, project_id: int, fields: str) -> Iterator:
        with self._call(f"listing the tasks of project {project_id}"):
            yield from self.client.tasks.list(project=project_id, fields=fields, page_size=500)

    def task_hashes(self, project_id: int) -> dict[str, int]:
        """Content hash -> task id of the project's tasks."""
        return {d["sha256"]: tid for tid, d, _ in self.tasks(project_id) if d.get("sha256")}

    def import_tasks(
        self,
        project_id: int,
        specs: Iterable[TaskSpec],
        model_version: str,
        batch_size: int,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> ImportResult:
        """Import frames with their pre-annotations, ``batch_size`` per request, skipping
        frames the project already has (same content hash)."""
        known = set(self.task_hashes(project_id))
        todo = []
        skipped = 0
        for spec in specs:
            if spec.sha256 in known:
                skipped += 1
                continue
            known.add(spec.sha256)
            todo.append(spec.to_task(model_version))
        done = 0
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            with self._call(f"importing {len(chunk)} tasks into project {project_id}"):
                self.client.projects.import_tasks(id=project_id, request=chunk)
            done += len(chunk)
            if on_progress:
                on_progress(done, len(todo))
        return ImportResult(done, skipped, done + skipped)

    def reviewed(self, project_id: int) -> tuple[int, list[ReviewedTask]]:
        """(number of tasks, tasks with a submitted, not cancelled annotation)."""
        total = 0
        out = []
        for t in self._tasks(project_id, "all"):
            total += 1
            anns = [a for a in (t.annotations or []) if not _get(a, "was_cancelled")]
            if not anns:
                continue
            anns.sort(key=lambda a: (str(_get(a, "created_at")), int(_get(a, "id") or 0)))
            marked = [a for a in anns if _get(a, "ground_truth")]
            ann = marked[-1] if marked else max(
                anns, key=lambda a: str(_get(a, "updated_at") or _get(a, "created_at"))
            )  # fmt: skip
            preds = t.predictions or []
            predicted = [
                b for r in (_get(preds[-1], "result") if preds else []) if (b := result_to_box(r))
            ]
            final = _boxes(ann)
            by: dict = {}  # the first annotation of each reviewer
            for a in anns:
                by.setdefault(_get(a, "completed_by"), a)
            firsts = list(by.values())
            double = (_boxes(firsts[0]), _boxes(firsts[1])) if len(firsts) >= 2 else None
            out.append(
                ReviewedTask(
                    int(t.id),
                    str((t.data or {}).get("sha256", "")),
                    dict(t.data or {}),
                    predicted,
                    final,
                    str(_get(ann, "updated_at") or _get(ann, "created_at")),
                    _get(ann, "completed_by"),
                    double,
                    bool(marked),
                )
            )
        out.sort(key=lambda r: (r.completed_at, r.task_id))
        return total, out

    def submit(
        self,
        task_id: int,
        boxes: list[LabelBox],
        width: int,
        height: int,
        completed_by: int | None = None,
        lead_time: float | None = None,
    ) -> None:
        """Submit an annotation for a task (what a reviewer's *Submit* does); by the token's
        user unless ``completed_by`` names another member of the organization."""
        extra = {} if completed_by is None else {"completed_by": completed_by}
        if lead_time is not None:
            extra["lead_time"] = lead_time
        with self._call(f"submitting an annotation for task {task_id}"):
            self.client.annotations.create(
                id=task_id, result=[box_to_result(b, width, height) for b in boxes], **extra
            )

    def ensure_user(self, email: str, first_name: str, last_name: str) -> int:
        """The id of the organization member ``email``, created if missing (no password: it
        cannot log in; it only signs annotations)."""
        with self._call(f"looking up the Label Studio user {email}"):
            for u in self.client.users.list():
                if (_get(u, "email") or "").lower() == email.lower():
                    return int(_get(u, "id"))
            user = self.client.users.create(
                username=email.split("@")[0], email=email, first_name=first_name,
                last_name=last_name,
            )  # fmt: skip
            return int(_get(user, "id"))

    def double_labeled(self, project_id: int) -> set[int]:
        """Ids of the tasks Label Studio gives to two reviewers (the overlap cohort)."""
        return {
            int(t.id) for t in self._tasks(project_id, "task_only")
            if int(_get(t, "overlap") or 1) >= 2
        }  # fmt: skip

    def tasks(self, project_id: int) -> list[tuple[int, dict, int]]:
        """(task id, data, number of annotations) of every task."""
        return [
            (int(t.id), dict(t.data or {}), int(t.total_annotations or 0))
            for t in self._tasks(project_id, "task_only")
        ]


def link_frame_roots(files_root: Path, roots: Sequence[Path], *, prune: bool = True) -> list[Path]:
    """Make ``files_root`` (Label Studio's local-files document root) a folder of links to
    the local frame ``roots`` and nothing else; returns the links.

    A link is named after its root's folder, which is how task images name a frame
    (:func:`image_url`), so projects made before keep their URLs. With ``prune`` (``cvloop
    services up``: ``roots`` are all the configured ones) a link to a root no longer
    configured is removed and a link whose root moved is pointed at the new one
    (atomically); without it (a store connected later) a link is only added, and a name
    already linked to another root is refused. Anything in the folder that is not a link is
    refused, never removed."""
    from cvloop.core.errors import ConfigError

    by_name: dict[str, Path] = {}
    for root in roots:
        root = Path(root).expanduser().resolve()
        if by_name.get(root.name, root) != root:
            raise ConfigError(
                f"two local frame roots share the folder name {root.name!r} "
                f"({by_name[root.name]} and {root}): Label Studio names a frame by it",
                fix="rename one of the folders (a region's storage_uri in the regions file)",
            )
        by_name[root.name] = root
    files_root.mkdir(parents=True, exist_ok=True)
    files_root.chmod(0o700)
    for entry in files_root.iterdir():
        if not entry.is_symlink():
            raise ConfigError(
                f"{entry} is in Label Studio's document root {files_root} but is not a link "
                "cvloop made to a frame root: Label Studio users could connect it as storage",
                fix=f"move {entry} out of {files_root}",
            )
        if prune and entry.name not in by_name:
            entry.unlink()
    links = []
    for name, root in sorted(by_name.items()):
        root.mkdir(parents=True, exist_ok=True)
        link = files_root / name
        linked = Path(os.readlink(link)) if link.is_symlink() else None
        if linked is not None and linked != root and not prune:
            raise ConfigError(
                f"Label Studio's document root {files_root} already links {name!r} to "
                f"{linked}, so it cannot show frames of {root}: Label Studio names a frame "
                "by its store's folder name",
                fix="give the store a folder of another name, or run `cvloop services up` "
                "after changing CVLOOP_STORAGE_URI",
            )
        if linked != root:
            tmp = files_root / f".{name}.new"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(root, target_is_directory=True)
            os.replace(tmp, link)
        links.append(link)
    return links


def _check_served(home, part) -> None:
    """A Label Studio whose document root is the main store's parent folder (a team's own,
    without ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``) serves local files only below it: a
    local region root must sit beside the main store. (The local stack's root holds a link
    per frame root instead, so any folder with its own name will do.)"""
    from cvloop.adapters.storage import LocalStorage
    from cvloop.core.errors import ConfigError

    beside = (
        isinstance(home, LocalStorage)
        and getattr(part, "root", None) is not None
        and (part.root.parent == home.root.parent)
    )
    if isinstance(part, LocalStorage) and part is not home and not beside:
        raise ConfigError(
            f"Label Studio cannot show frames from the local region root {part.root}: "
            "it serves local files only beside the main frame store",
            fix="put the region's folder next to the main store, or give the region an "
            "s3:// storage_uri in the regions file",
        )


def _overlap(share: float) -> dict:
    """Label Studio's project settings for ``share`` of the tasks labeled twice."""
    pct = round(share * 100)
    if pct <= 0:
        return {"maximum_annotations": 1, "overlap_cohort_percentage": 100}
    return {"maximum_annotations": 2, "overlap_cohort_percentage": min(pct, 100)}


def _boxes(annotation) -> list[LabelBox]:
    return [b for r in _get(annotation, "result") or [] if (b := result_to_box(r))]


def _get(obj, name: str):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _labels_of(config: str) -> list[str]:
    import re

    return re.findall(r'<Label\s+value="([^"]*)"', config)


def image_url(store, key: str) -> str:
    """The URL Label Studio loads a frame from (see the module docstring)."""
    from cvloop.adapters.regions import RegionalStorage
    from cvloop.adapters.storage import LocalStorage

    if isinstance(store, RegionalStorage):
        return image_url(store.store_holding(key), key)
    if isinstance(store, LocalStorage):
        from urllib.parse import quote

        # relative to the server's document root, which `cvloop services up` sets to the
        # store's parent folder
        return LOCAL_FILES_URL + quote(f"{store.root.name}/{key}", safe="/")
    full = f"{store.prefix}/{key}" if store.prefix else key
    return f"s3://{store.bucket}/{full}"
