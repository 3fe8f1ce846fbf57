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
from typing import TYPE_CHECKING, Any

from cvloop.adapters.files import sha256_file
from cvloop.core.errors import CvloopError
from registry.names import sha256_tag

if TYPE_CHECKING:
    from registry.records import RegistrationRecords

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
    #: format -> sha256 the files were verified against (the registration record's)
    sha256: dict[str, str] = field(default_factory=dict)


class ModelRegistry:
    """Registered models in MLflow, behind the few calls cvloop needs."""

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        cache_dir: Path,
        records: RegistrationRecords | None = None,
    ) -> None:
        """``records``: the registration records files are verified against
        (:mod:`registry.records`); without them (a bare registry, tools), the tags."""
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.name = model_name
        self.cache_dir = cache_dir
        self.records = records
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
        """Download a version's artifacts (cached) and verify them against the version's
        registration record (without records: its sha256 tags)."""
        return self._fetch(version, use_record=self.records is not None)

    def _fetch(self, version: str, *, use_record: bool) -> LocalModel:
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
        expected = self._expected_sha256(version, mv.run_id, tags, use_record)
        for fmt, path in (("pt", pt), ("onnx", onnx)):
            actual = sha256_file(path)
            if actual != expected[fmt]:
                shutil.rmtree(dest, ignore_errors=True)
                raise RegistryError(
                    f"checksum mismatch for {path.name} of version {version}: "
                    f"{actual[:12]} != {expected[fmt][:12]} (its registration record)",
                    fix="the artifact store was altered; "
                    "re-register the model or restore the artifact",
                )
        info = json.loads(meta.read_text())
        return LocalModel(self.name, str(version), pt, onnx, list(info["classes"]),
                          int(info["imgsz"]), tags, {"pt": expected["pt"], "onnx": expected["onnx"]})  # fmt: skip

    def _expected_sha256(self, version: str, run_id: str, tags: dict[str, str],
                         use_record: bool) -> dict[str, str]:  # fmt: skip
        """What ``pt`` and ``onnx`` of ``version`` must hash to: its registration record's
        digests, once the record is found to name the version's run and to agree with the
        tags (a tag changed after the registration is refused, never trusted); without
        ``use_record``, the tags."""
        if not use_record or self.records is None:
            out = {}
            for fmt in ("pt", "onnx"):
                if not tags.get(sha256_tag(fmt)):
                    raise RegistryError(
                        f"version {version} has no {sha256_tag(fmt)} tag: cannot verify it",
                        fix="re-register the model with cvloop",
                    )
                out[fmt] = tags[sha256_tag(fmt)]
            return out
        rec = self.records.read(self.name, str(version))
        where = self.records.key(self.name, str(version))
        if rec is None and not self.records.any(self.name):
            # the store predates records (an upgraded installation): the tags, once
            expected = self._expected_sha256(version, run_id, tags, use_record=False)
            self.record(version, run_id, tags, by="migration",
                        note="the store had no registration record when cvloop first read it")  # fmt: skip
            return expected
        if rec is None:
            raise RegistryError(
                f"version {version} of {self.name} has no registration record ({where}): "
                "cvloop did not register it (a version made by hand in MLflow), or it "
                "predates records",
                fix="register the model through cvloop; or, if you have checked its files, "
                f"vouch for them with `cvloop registry trust {version}`",
            )
        if rec.run_id != run_id:
            raise RegistryError(
                f"the registration record of version {version} ({where}) names run "
                f"{rec.run_id}, the version comes from run {run_id}",
                fix="the version was replaced outside cvloop; register the model again",
            )
        for fmt in ("pt", "onnx"):
            if fmt not in rec.sha256:
                raise RegistryError(f"the registration record {where} has no sha256 of {fmt}",
                                    fix="register the model again with cvloop")  # fmt: skip
            tag = tags.get(sha256_tag(fmt))
            if tag is not None and tag != rec.sha256[fmt]:
                raise RegistryError(
                    f"checksum mismatch for version {version}: its {sha256_tag(fmt)} tag "
                    f"{tag[:12]} was changed after the registration recorded "
                    f"{rec.sha256[fmt][:12]} ({where})",
                    fix="someone rewrote the tag in MLflow; set it back (the record is what "
                    "counts), and find out who changed it",
                )
        return {"pt": rec.sha256["pt"], "onnx": rec.sha256["onnx"]}

    def record(self, version: str, run_id: str, tags: dict[str, str], by: str = "registration",
               note: str = "") -> None:  # fmt: skip
        """Write the registration record of ``version`` from its ``cvloop.sha256.*`` tags
        (called by the registration transaction and by ``cvloop registry trust``)."""
        from registry.records import RegistrationRecord

        if self.records is None:
            return
        prefix = sha256_tag("")
        digests = {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}
        self.records.write(RegistrationRecord(self.name, str(version), run_id, digests,
                                              recorded_by=by, note=note))  # fmt: skip

    def trust(self, version: str, by: str, note: str) -> LocalModel:
        """Vouch for a version with no record (registered by hand, or before records): its
        files are checked against its tags, as before records existed, and recorded as they
        are, with who vouched and why."""
        if self.records is None:
            raise RegistryError("this registry keeps no registration records",
                                fix="run it through cvloop's context (the store is needed)")  # fmt: skip
        mv = self.get_version(version)
        local = self._fetch(version, use_record=False)  # verified against the tags
        self.record(version, mv.run_id, dict(mv.tags), by=f"trust by {by}", note=note)
        return local

    def forget(self, version: str) -> None:
        """Remove the record of a version this registration deleted again."""
        if self.records is not None:
            self.records.delete(self.name, str(version))

    def fetch_alias(self, alias: str) -> LocalModel:
        return self.fetch(str(self.version_by_alias(alias).version))
