"""MLflow tracking behind the few calls cvloop makes: runs, params, metrics, tags, artifacts.

With :mod:`registry.models` (the model registry) this is the only code that talks to MLflow;
everything else passes run ids and plain values, and gets :class:`RunRecord` back. Errors
from an unreachable server or a wrong URI become :class:`TrackingError` with the fix.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvloop.core.errors import CvloopError


class TrackingError(CvloopError):
    """MLflow tracking cannot answer (server down, unknown run)."""


@dataclass(frozen=True)
class RunRecord:
    """What cvloop reads back about a run."""

    run_id: str
    experiment_id: str
    name: str
    start_time_ms: int
    end_time_ms: int | None
    status: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def _record(run) -> RunRecord:
    return RunRecord(
        run.info.run_id,
        run.info.experiment_id,
        run.info.run_name or "",
        int(run.info.start_time or 0),
        int(run.info.end_time) if run.info.end_time else None,
        run.info.status,
        dict(run.data.params),
        dict(run.data.metrics),
        dict(run.data.tags),
    )


class Tracker:
    """Runs in one MLflow tracking server."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _call(self, what: str, fn, *args, **kwargs):
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            raise TrackingError(
                f"{what} failed at {self.tracking_uri}: {exc.message}",
                fix="is MLflow up? `cvloop services status`",
            ) from None
        except (OSError, ConnectionError) as exc:
            raise TrackingError(
                f"{what} failed: cannot reach MLflow at {self.tracking_uri} ({type(exc).__name__})",
                fix="start it with `cvloop services up mlflow` or fix MLFLOW_TRACKING_URI",
                transient=True,
            ) from None

    # ---- experiments and runs ---------------------------------------------------------------
    def experiment_id(self, name: str, *, create: bool = True) -> str | None:
        exp = self._call(f"experiment {name!r}", self.client.get_experiment_by_name, name)
        if exp is not None:
            return exp.experiment_id
        return (
            self._call(f"create experiment {name!r}", self.client.create_experiment, name)
            if create
            else None
        )

    def start_run(
        self,
        experiment: str,
        name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str:
        """A new run (``mlflow.parentRunId`` in ``tags`` nests it); returns its id."""
        run = self._call(
            f"create run {name!r}",
            self.client.create_run,
            self.experiment_id(experiment),
            run_name=name,
            tags={k: str(v) for k, v in (tags or {}).items()},
        )
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def find_runs(
        self,
        experiment: str,
        *,
        tags: Mapping[str, str] | None = None,
        name: str | None = None,
        started: tuple[dt.datetime, dt.datetime] | None = None,
        max_results: int = 1000,
        oldest_first: bool = False,
    ) -> list[RunRecord]:
        """Runs of ``experiment`` with these tag values / this name / a start in the window."""
        exp = self.experiment_id(experiment, create=False)
        if exp is None:
            return []
        terms = [f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()]
        if name is not None:
            terms.append(f"tags.mlflow.runName = '{name}'")
        if started is not None:
            a, b = (int(t.timestamp() * 1000) for t in started)
            terms += [f"attributes.start_time >= {a}", f"attributes.start_time < {b}"]
        runs = self._call(
            f"search runs of {experiment!r}",
            self.client.search_runs,
            [exp],
            " and ".join(terms),
            max_results=max_results,
            order_by=[f"attributes.start_time {'ASC' if oldest_first else 'DESC'}"],
        )
        return [_record(r) for r in runs]

    def get_run(self, run_id: str) -> RunRecord:
        return _record(self._call(f"run {run_id}", self.client.get_run, run_id))

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self._call(f"finish run {run_id}", self.client.set_terminated, run_id, status=status)

    def end_abandoned(
        self, experiment: str, name: str, tags: Mapping[str, str], because: str
    ) -> list[str]:
        """End as KILLED the runs of ``experiment`` called ``name`` with these ``tags`` that
        are still RUNNING, saying ``because`` (tag ``cvloop.ended_because``); returns their
        ids. A process killed mid-training (OOM, a lost node, SIGKILL) never ends its run:
        the step that starts the same run again calls this first, so no run stays RUNNING
        forever and the MLflow UI shows what happened to it."""
        from registry.names import ENDED_BECAUSE

        stale = [r for r in self.find_runs(experiment, tags=tags, name=name)
                 if r.status == "RUNNING"]  # fmt: skip
        for r in stale:
            self.set_tags(r.run_id, {ENDED_BECAUSE: because})
            self.finish(r.run_id, "KILLED")
        return [r.run_id for r in stale]

    # ---- values -------------------------------------------------------------------------
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._call("log params", self.client.log_batch, run_id, params=items[i : i + 100])

    def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, float],
        *,
        step: int = 0,
        timestamp_ms: int | None = None,
    ) -> None:
        from mlflow.entities import Metric

        ts = timestamp_ms or int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        items = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()]
        for i in range(0, len(items), 900):  # MLflow takes at most 1,000 per batch
            self._call("log metrics", self.client.log_batch, run_id, metrics=items[i : i + 900])

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of a metric, in logging order."""
        hist = self._call(f"history of {key}", self.client.get_metric_history, run_id, key)
        return [(int(m.step), float(m.value)) for m in hist]

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self._call(f"tag run {run_id}", self.client.set_tag, run_id, k, str(v))

    # ---- artifacts ----------------------------------------------------------------------
    def log_text(self, run_id: str, text: str, path: str) -> None:
        self._call(f"log {path}", self.client.log_text, run_id, text, path)

    def log_dict(self, run_id: str, data: dict, path: str) -> None:
        self._call(f"log {path}", self.client.log_dict, run_id, data, path)

    def log_file(self, run_id: str, file: str | Path, folder: str | None = None) -> None:
        self._call(f"log {file}", self.client.log_artifact, run_id, str(file), folder)

    def log_folder(self, run_id: str, folder: str | Path, dest: str | None = None) -> None:
        self._call(f"log {folder}", self.client.log_artifacts, run_id, str(folder), dest)

    def download(self, run_id: str, path: str, dest: str | Path | None = None) -> Path:
        got = self._call(f"download {path}", self.client.download_artifacts, run_id, path,
                         str(dest) if dest else None)  # fmt: skip
        return Path(got)

    def artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        return [
            a.path for a in self._call("list artifacts", self.client.list_artifacts, run_id, path)
        ]

    def run_url(self, run_id: str, experiment_id: str | None = None) -> str:
        exp = experiment_id or self.get_run(run_id).experiment_id
        return f"{self.tracking_uri}/#/experiments/{exp}/runs/{run_id}"
