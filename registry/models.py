"""The model registry: MLflow registered models, aliases, lineage tags, local copies.

One small interface (:class:`ModelRegistry`) over ``MlflowClient``; nothing else in cvloop
calls MLflow's registry API.

A registered model version holds the artifacts of its training run under ``model/``
(``best.pt``, ``best.onnx``, ``model.json``) and carries lineage as tags (see
:data:`LINEAGE_TAGS`). Aliases: ``champion`` serves 100 %, ``challenger`` is in rollout,
``previous-champion`` is the rollback target.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvloop.adapters.files import sha256_file
from cvloop.core.errors import CvloopError
from registry.names import LINEAGE_TAGS

MODEL_ARTIFACT_DIR = "model"


class RegistryError(CvloopError):
    """The registry cannot answer (server down, no such alias/version, bad checksum)."""


@dataclass(frozen=True)
class LocalModel:
    """A registered model version fetched to this machine (checksums verified)."""

    name: str
    version: str
    pt: Path
    onnx: Path
    classes: list[str]
    imgsz: int
    tags: dict[str, str] = field(default_factory=dict)


class ModelRegistry:
    """Registered models in MLflow, behind the few calls cvloop needs."""

    def __init__(self, tracking_uri: str, model_name: str, cache_dir: Path) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.name = model_name
        self.cache_dir = cache_dir
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _call(self, what: str, fn, *args, **kwargs):
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
                raise RegistryError(
                    f"{what}: not found in {self.tracking_uri} ({exc.message})",
                    fix="run `cvloop bootstrap` to register the first champion",
                ) from None
            raise RegistryError(
                f"{what} failed at {self.tracking_uri}: {exc.message}",
                fix="is MLflow up? `cvloop services status`",
            ) from None
        except Exception as exc:  # connection errors surface as requests/urllib3 errors
            raise RegistryError(
                f"{what} failed: cannot reach MLflow at {self.tracking_uri} ({type(exc).__name__})",
                fix="start it with `cvloop services up mlflow` or fix MLFLOW_TRACKING_URI",
                transient=True,
            ) from None

    # ---- writes ---------------------------------------------------------------------------
    def register(self, run_id: str, tags: dict[str, str], description: str = "") -> str:
        """Create a version from the run's ``model/`` artifacts; returns the version number."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            self._call(
                "create registered model",
                self.client.create_registered_model,
                self.name,
                description="YOLO detector managed by cvloop (aliases: champion, "
                "challenger, previous-champion)",
            )
        mv = self._call(
            "create model version",
            self.client.create_model_version,
            self.name,
            source=f"runs:/{run_id}/{MODEL_ARTIFACT_DIR}",
            run_id=run_id,
            tags={k: str(v) for k, v in tags.items()},
            description=description,
        )
        return str(mv.version)

    def set_alias(self, alias: str, version: str) -> None:
        self._call(
            f"set alias {alias}", self.client.set_registered_model_alias, self.name, alias, version
        )

    def delete_alias(self, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_alias(self.name, alias)
        except MlflowException:
            pass  # absent already: the goal state holds

    def delete_version(self, version: str) -> None:
        """Delete a version and the aliases on it (rollback of a failed registration)."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.name, version)
            for alias in getattr(mv, "aliases", []) or []:
                self.delete_alias(alias)
            self.client.delete_model_version(self.name, version)
        except MlflowException:
            pass  # gone already
        except Exception:  # MLflow unreachable: the version stays "pending" for the re-run
            pass

    def set_tags(self, version: str, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self._call(
                f"tag version {version}",
                self.client.set_model_version_tag,
                self.name,
                version,
                key,
                str(value),
            )

    # ---- reads ----------------------------------------------------------------------------
    def version_by_alias(self, alias: str):
        return self._call(
            f"model {self.name!r} alias {alias!r}",
            self.client.get_model_version_by_alias,
            self.name,
            alias,
        )

    def alias_version(self, alias: str) -> str | None:
        """The version an alias points to, or None."""
        try:
            return str(self.version_by_alias(alias).version)
        except RegistryError:
            return None

    def versions(self) -> list:
        """Every version of the registered model (MLflow's records: tags, creation time)."""
        return list(self._call(f"versions of {self.name!r}", self.client.search_model_versions,
                               f"name='{self.name}'"))  # fmt: skip

    def version_of_run(self, run_id: str) -> str | None:
        """The version registered from this training run, if any (a re-run after a crash
        reuses it)."""
        found = self._call(f"versions of run {run_id}", self.client.search_model_versions,
                           f"name='{self.name}' and run_id='{run_id}'")  # fmt: skip
        return str(found[0].version) if found else None

    def get_version(self, version: str):
        return self._call(
            f"model {self.name!r} version {version}",
            self.client.get_model_version,
            self.name,
            version,
        )

    def fetch(self, version: str) -> LocalModel:
        """Download a version's artifacts (cached) and verify their sha256 tags."""
        mv = self.get_version(version)
        tags = dict(mv.tags)
        dest = self.cache_dir / self.name / str(version)
        pt, onnx, meta = dest / "best.pt", dest / "best.onnx", dest / "model.json"
        if not (pt.exists() and onnx.exists() and meta.exists()):
            import mlflow.artifacts

            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self._call(
                f"download artifacts of version {version}",
                mlflow.artifacts.download_artifacts,
                run_id=mv.run_id,
                artifact_path=MODEL_ARTIFACT_DIR,
                dst_path=str(tmp),
                tracking_uri=self.tracking_uri,
            )
            shutil.rmtree(dest, ignore_errors=True)
            (tmp / MODEL_ARTIFACT_DIR).rename(dest)
            shutil.rmtree(tmp, ignore_errors=True)
        for path, tag in ((pt, LINEAGE_TAGS["sha256_pt"]), (onnx, LINEAGE_TAGS["sha256_onnx"])):
            expected = tags.get(tag)
            if not expected:
                raise RegistryError(
                    f"version {version} has no {tag} tag: cannot verify {path.name}",
                    fix="re-register the model with cvloop",
                )
            actual = sha256_file(path)
            if actual != expected:
                shutil.rmtree(dest, ignore_errors=True)
                raise RegistryError(
                    f"checksum mismatch for {path.name} of version {version}: "
                    f"{actual[:12]} != {expected[:12]}",
                    fix="the artifact store was altered; "
                    "re-register the model or restore the artifact",
                )
        info = json.loads(meta.read_text())
        return LocalModel(
            self.name, str(version), pt, onnx, list(info["classes"]), int(info["imgsz"]), tags
        )

    def fetch_alias(self, alias: str) -> LocalModel:
        return self.fetch(str(self.version_by_alias(alias).version))
