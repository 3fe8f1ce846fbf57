"""The composition root: everything a flow run or a CLI call talks to, built in one place.

A :class:`Context` holds the settings (where things run, who we are: the environment) and
the params (the runbook's knobs: ``params.yaml``), and builds each outside system from them
on first use — the frame store (with its regional roots), the model registry, MLflow
tracking, Label Studio, the DVC data repository. Stages take it as their first argument;
``tasks/`` hands each task the context of its flow run (:func:`current`); the CLI builds
one per command (:meth:`Context.from_env`). Nothing below this module reads the
environment or ``params.yaml`` to find an outside system.

It sits above the registry and the adapters (it wires them) and below the stages (which
receive it): see the layer contract in ``pyproject.toml``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from cvloop.config.params import Params, load_params
from cvloop.config.settings import Settings, load_settings

if TYPE_CHECKING:
    from cvloop.adapters.labelstudio import LabelStudioQueue
    from cvloop.adapters.regions import Region
    from cvloop.adapters.storage import Storage
    from cvloop.adapters.versioning import DataRepo
    from registry.models import ModelRegistry
    from registry.tracking import Tracker


@dataclass
class Context:
    """Settings, params, and the outside systems built from them (lazily, once)."""

    settings: Settings
    params: Params

    @classmethod
    def from_env(cls, params_path: str | Path | None = None) -> Context:
        """The settings from the environment, the params from ``CVLOOP_PARAMS`` /
        ``params.yaml`` (or ``params_path``)."""
        return cls(load_settings(), load_params(params_path))

    def __getstate__(self) -> dict:
        """Pickled (into a worker process) without the clients it built: they are made again
        there on first use."""
        return {"settings": self.settings, "params": self.params}

    # ---- storage ------------------------------------------------------------------------
    def storage(self, uri: str, *, endpoint_url: str | None = None, create_bucket: bool = False):
        """Any storage by URI, with this deployment's S3 credentials and endpoint."""
        from cvloop.adapters.storage import open_storage

        endpoint = endpoint_url or self.settings.s3_endpoint_url
        return open_storage(uri, endpoint_url=endpoint, create_bucket=create_bucket,
                            client_kwargs=self.settings.s3_client_kwargs(endpoint))  # fmt: skip

    def frame_store(self, *, create_bucket: bool = False) -> Storage:
        """The frame store: the main root, and each region's root for its cameras' frames
        (the regions file, runbooks/cameras.md)."""
        from cvloop.adapters.regions import load_regions, open_regional

        home = self.storage(self.settings.frame_store_uri, create_bucket=create_bucket)
        regions = load_regions(self.settings.regions_path(), main_uri=self.settings.frame_store_uri)
        if not regions:
            return home

        def root(r: Region):
            return self.storage(r.storage_uri, endpoint_url=r.endpoint_url,
                                create_bucket=create_bucket)  # fmt: skip

        layout = (self.params.frames.images, self.params.frames.videos)
        return open_regional(home, regions, root, layout)

    @cached_property
    def store(self) -> Storage:
        """The frame store (frames, inference log, rollout state, run records)."""
        return self.frame_store()

    # ---- MLflow -------------------------------------------------------------------------
    @cached_property
    def registry(self) -> ModelRegistry:
        from registry.models import ModelRegistry
        from registry.records import RegistrationRecords

        records = RegistrationRecords(self.storage(self.settings.registry_records_uri))
        return ModelRegistry(self.settings.mlflow_tracking_uri, self.params.registry.model_name,
                             self.settings.home / "models", records)  # fmt: skip

    @cached_property
    def tracker(self) -> Tracker:
        from registry.tracking import Tracker

        return Tracker(self.settings.mlflow_tracking_uri)

    # ---- Label Studio, the data repository ------------------------------------------------
    @cached_property
    def labelstudio(self) -> LabelStudioQueue:
        from cvloop.adapters.labelstudio import LabelStudioQueue

        s = self.settings
        return LabelStudioQueue(
            s.label_studio_url, s.label_studio_token(), files_root=s.label_studio_files_root
        )

    @cached_property
    def data_repo(self) -> DataRepo:
        from cvloop.adapters.versioning import DataRepo

        s = self.settings
        return DataRepo(s.data_repo, s.dvc_remote_url, s.s3_endpoint_url)


_BY_RUN: dict[str, Context] = {}
_BY_RUN_LOCK = threading.Lock()


def current() -> Context:
    """The context of the flow run this code runs in (built on first use, shared by its
    tasks); outside a flow run, a new one."""
    run_id = _flow_run_id()
    if run_id is None:
        return Context.from_env()
    with _BY_RUN_LOCK:
        ctx = _BY_RUN.get(run_id)
        if ctx is None:
            ctx = _BY_RUN[run_id] = Context.from_env()
        return ctx


def _flow_run_id() -> str | None:
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
    except Exception:
        return None
    return str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None
