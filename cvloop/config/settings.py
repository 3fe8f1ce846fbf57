"""Deployment settings from the environment: service URLs, credentials, storage roots.

The runbook's knobs live in ``params.yaml`` (:mod:`cvloop.config.params`); *where* things run and
*who* we are live here, read from environment variables (and an optional ``.env`` file in
the project root). Nothing secret is ever read from the repository.

Variables (all optional; the defaults run the embedded local stack):

=============================  ===============================================================
``CVLOOP_HOME``                runtime folder: pids, logs, service data (default ``./.cvloop``)
``CVLOOP_STORAGE_URI``         frame store root: a local path or ``s3://bucket/prefix``
``CVLOOP_S3_ENDPOINT_URL``     S3-compatible endpoint (MinIO, the loopback test server)
``CVLOOP_REGISTRY_RECORDS_URI`` where model registration records live (default: the frame
                               store's main root); every process that loads models from the
                               same MLflow must read the same place (registry/records.py)
``CVLOOP_REGIONS_FILE``        per-region frame roots (default ``regions.yaml`` here, if any)
``CVLOOP_DVC_REMOTE``          DVC remote URL (default ``$CVLOOP_HOME/dvc-remote``)
``CVLOOP_DATA_REPO``           git + DVC repo that versions datasets (default: this checkout)
``CVLOOP_TRUTH_URI``           synthetic fleet ground truth (default ``$CVLOOP_HOME/fleet-truth``)
``CVLOOP_PREFECT_PORT``        port of the local Prefect server (4200)
``CVLOOP_MLFLOW_PORT``         port of the local MLflow server (5000)
``CVLOOP_LABEL_STUDIO_PORT``   port of the local Label Studio server (8080)
``CVLOOP_S3_PORT``             port of the local S3-compatible server (9000)
``CVLOOP_SERVE_PORT``          port of the local inference server, ``cvloop serve`` (8500)
``CVLOOP_SERVE_URL``           an inference server to send frames to instead of the local one
``CVLOOP_SERVE_SPOOL``         the server's log journal (default ``$CVLOOP_HOME/serve/spool``)
``PREFECT_API_URL``            a Prefect API to use instead of the local one
``MLFLOW_TRACKING_URI``        an MLflow server to use instead of the local one
``LABEL_STUDIO_URL``           a Label Studio to use instead of the local one
``LABEL_STUDIO_API_KEY``       its API token (generated for the local one)
``LABEL_STUDIO_USERNAME``      admin e-mail of the local Label Studio
``LABEL_STUDIO_PASSWORD``      admin password of the local Label Studio (generated)
``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``  the folder Label Studio serves local frames from
                               (default for the local one: ``$CVLOOP_HOME/labelstudio-files``,
                               links to the local frame roots and nothing else)
``CVLOOP_NOTIFY_WEBHOOK_URL``  where notifications go (a Slack / Teams incoming webhook, an
                               email gateway): ``cvloop deploy`` makes the Prefect automation
                               and block that post to it (cvloop/adapters/notify.py)
``AWS_ACCESS_KEY_ID`` etc.     standard boto3 credentials
=============================  ===============================================================

When ``LABEL_STUDIO_API_KEY``/``LABEL_STUDIO_PASSWORD`` are not set, ``cvloop services up``
generates them once into ``$CVLOOP_HOME/secrets.env`` (mode 0600, git-ignored) and every
later process reads them from there.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cvloop.core.errors import ConfigError

SECRETS_FILE = "secrets.env"


PROJECT_MARKER = ".cvloop-project"  # written by `cvloop init` into a team's project


def code_dir() -> Path:
    """The cvloop checkout this package runs from: flows/, tasks/, the venvs, the shipped
    defaults (params.yaml, prefect.yaml, runbooks/)."""
    return Path(__file__).resolve().parents[2]


def project_dir() -> Path:
    """The project cvloop works for: its params.yaml, .env, regions.yaml, runtime home and
    (by default) data repository. ``CVLOOP_PROJECT_DIR``; else the working directory when
    it is a project made by ``cvloop init`` (it holds ``.cvloop-project``); else the cvloop
    checkout itself (the demo's project)."""
    env = os.environ.get("CVLOOP_PROJECT_DIR")
    if env:
        return Path(env).resolve()
    cwd = Path.cwd()
    if (cwd / PROJECT_MARKER).is_file():
        return cwd.resolve()
    return code_dir()


def _default_home() -> Path:
    return project_dir() / ".cvloop"


class Settings(BaseSettings):
    """Where cvloop's parts run, read once from the environment."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    home: Path = Field(default_factory=_default_home, alias="CVLOOP_HOME")
    storage_uri: str | None = Field(default=None, alias="CVLOOP_STORAGE_URI")
    s3_endpoint_url: str | None = Field(default=None, alias="CVLOOP_S3_ENDPOINT_URL")
    dvc_remote: str | None = Field(default=None, alias="CVLOOP_DVC_REMOTE")
    data_repo_dir: Path | None = Field(default=None, alias="CVLOOP_DATA_REPO")
    truth_uri: str | None = Field(default=None, alias="CVLOOP_TRUTH_URI")
    records_uri: str | None = Field(default=None, alias="CVLOOP_REGISTRY_RECORDS_URI")
    regions_file: Path | None = Field(default=None, alias="CVLOOP_REGIONS_FILE")

    prefect_port: int = Field(default=4200, alias="CVLOOP_PREFECT_PORT", ge=1, le=65535)
    mlflow_port: int = Field(default=5000, alias="CVLOOP_MLFLOW_PORT", ge=1, le=65535)
    label_studio_port: int = Field(default=8080, alias="CVLOOP_LABEL_STUDIO_PORT", ge=1, le=65535)
    s3_port: int = Field(default=9000, alias="CVLOOP_S3_PORT", ge=1, le=65535)
    serve_port: int = Field(default=8500, alias="CVLOOP_SERVE_PORT", ge=1, le=65535)
    serve_url_env: str | None = Field(default=None, alias="CVLOOP_SERVE_URL")
    serve_spool_dir: Path | None = Field(default=None, alias="CVLOOP_SERVE_SPOOL")

    prefect_api_url_env: str | None = Field(default=None, alias="PREFECT_API_URL")
    mlflow_tracking_uri_env: str | None = Field(default=None, alias="MLFLOW_TRACKING_URI")
    label_studio_url_env: str | None = Field(default=None, alias="LABEL_STUDIO_URL")
    label_studio_api_key: SecretStr | None = Field(default=None, alias="LABEL_STUDIO_API_KEY")
    label_studio_username: str = Field(default="admin@cvloop.local", alias="LABEL_STUDIO_USERNAME")
    label_studio_password: SecretStr | None = Field(default=None, alias="LABEL_STUDIO_PASSWORD")
    label_studio_files_dir: Path | None = Field(
        default=None, alias="LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
    )

    notify_webhook_url: SecretStr | None = Field(default=None, alias="CVLOOP_NOTIFY_WEBHOOK_URL")
    aws_access_key_id: str | None = Field(default=None, alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(default=None, alias="AWS_SECRET_ACCESS_KEY")
    aws_region: str = Field(default="us-east-1", alias="AWS_DEFAULT_REGION")

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    # ---- derived URLs -------------------------------------------------------------------
    @property
    def prefect_api_url(self) -> str:
        return self.prefect_api_url_env or f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return self.prefect_api_url.removesuffix("/api")

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri_env or f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def label_studio_url(self) -> str:
        return self.label_studio_url_env or f"http://127.0.0.1:{self.label_studio_port}"

    @property
    def label_studio_files_root(self) -> Path:
        """Label Studio's local-files document root, below which it serves frames to
        reviewers (and lets any of its users connect a storage).

        The local stack's is ``$CVLOOP_HOME/labelstudio-files``, made by ``cvloop services
        up``: a folder of links to the local frame roots and nothing else, so Label Studio's
        own database, MLflow, Prefect, the secrets and the fleet's ground truth in the home
        stay out of its reach. A team's own Label Studio keeps the root it was started with:
        name it here, or leave it unset when it is the frame store's parent folder (no such
        folder: the store is connected by its own path)."""
        if self.label_studio_files_dir is not None:
            return self.label_studio_files_dir.expanduser().absolute()
        return self.home / "labelstudio-files"

    @property
    def serve_url(self) -> str:
        """Where ``cvloop serve`` answers (the local service, unless CVLOOP_SERVE_URL)."""
        return self.serve_url_env or f"http://127.0.0.1:{self.serve_port}"

    @property
    def serve_spool(self) -> Path:
        """The server's journal folder (local disk: the log rows not yet uploaded)."""
        return self.serve_spool_dir or self.home / "serve" / "spool"

    @property
    def local_s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def frame_store_uri(self) -> str:
        """Root of the frame store; the local default is ``$CVLOOP_HOME/store``."""
        return self.storage_uri or str(self.home / "store")

    @property
    def registry_records_uri(self) -> str:
        """Where registration records live: the frame store's main root unless set."""
        return self.records_uri or self.frame_store_uri

    @property
    def data_repo(self) -> Path:
        """The git + DVC repository that versions datasets (default: this checkout)."""
        return (self.data_repo_dir or project_dir()).expanduser().resolve()

    @property
    def fleet_truth_uri(self) -> str:
        """Ground truth of the synthetic fleet: kept apart from the frame store."""
        return self.truth_uri or str(self.home / "fleet-truth")

    @property
    def dvc_remote_url(self) -> str:
        return self.dvc_remote or str(self.home / "dvc-remote")

    @cached_property
    def secrets_path(self) -> Path:
        return self.home / SECRETS_FILE

    # ---- secrets ------------------------------------------------------------------------
    def label_studio_token(self) -> str:
        """The Label Studio API token: the environment's, else the generated local one."""
        if self.label_studio_api_key is not None:
            return self.label_studio_api_key.get_secret_value()
        stored = read_secrets(self.secrets_path).get("LABEL_STUDIO_API_KEY")
        if not stored:
            raise ConfigError(
                "no Label Studio API token: LABEL_STUDIO_API_KEY is not set and "
                f"{self.secrets_path} holds none",
                fix="run `cvloop services up` (it generates one for the local server) or "
                "export LABEL_STUDIO_API_KEY=<your token>",
            )
        return stored

    def label_studio_admin_password(self) -> str:
        if self.label_studio_password is not None:
            return self.label_studio_password.get_secret_value()
        stored = read_secrets(self.secrets_path).get("LABEL_STUDIO_PASSWORD")
        if not stored:
            raise ConfigError(
                f"no Label Studio admin password in the environment or {self.secrets_path}",
                fix="run `cvloop services up` or export LABEL_STUDIO_PASSWORD",
            )
        return stored

    def regions_path(self) -> Path | None:
        """The regions file: ``CVLOOP_REGIONS_FILE``, else ``regions.yaml`` in the project
        folder; ``None`` when neither names a file (one store for the whole fleet)."""
        if self.regions_file:
            path = self.regions_file.expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"CVLOOP_REGIONS_FILE={self.regions_file} is not a file",
                    fix="point it at a regions.yaml (see runbooks/cameras.md) or unset it",
                )
            return path
        default = project_dir() / "regions.yaml"
        return default if default.is_file() else None

    def s3_client_kwargs(self, endpoint_url: str | None = None) -> dict[str, object]:
        """Keyword arguments for ``boto3.client('s3', ...)`` with this deployment's
        credentials and region (:func:`s3_client_kwargs`)."""
        secret = (
            self.aws_secret_access_key.get_secret_value() if self.aws_secret_access_key else None
        )
        return s3_client_kwargs(endpoint_url or self.s3_endpoint_url, self.aws_access_key_id,
                                secret, self.aws_region)  # fmt: skip


def s3_client_kwargs(
    endpoint: str | None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    region: str = "us-east-1",
) -> dict[str, object]:
    """Keyword arguments for ``boto3.client('s3', ...)``.

    Without given credentials boto3's own chain finds them; for the loopback test server,
    which accepts any, a fixed local pair is used so that no real credential is needed.
    """
    from botocore.config import Config

    kwargs: dict[str, object] = {
        "region_name": region,
        # Fail fast on a dead endpoint; retry transient errors where the network is.
        "config": Config(
            connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
        ),
    }
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if access_key_id and secret_access_key:
        kwargs["aws_access_key_id"] = access_key_id
        kwargs["aws_secret_access_key"] = secret_access_key
    elif endpoint and _is_loopback_url(endpoint):
        kwargs["aws_access_key_id"] = "cvloop-local"
        kwargs["aws_secret_access_key"] = "cvloop-local-secret"  # loopback test server only
    return kwargs


def _is_loopback_url(url: str) -> bool:
    from urllib.parse import urlparse

    host = urlparse(url).hostname or ""
    return host in {"localhost", "::1"} or host.startswith("127.")


def read_secrets(path: Path) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines of a secrets file; a missing file is empty."""
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def ensure_local_secrets(settings: Settings) -> dict[str, str]:
    """Generate the local Label Studio password and token once, kept in ``secrets.env``.

    Values set in the environment win and are never written to disk.
    """
    path = settings.secrets_path
    current = read_secrets(path)
    changed = False
    for key, factory in (
        ("LABEL_STUDIO_PASSWORD", lambda: secrets.token_urlsafe(18)),
        ("LABEL_STUDIO_API_KEY", lambda: secrets.token_hex(20)),  # 40 chars: DRF token size
    ):
        if key not in current:
            current[key] = factory()
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# generated by `cvloop services up`; local secrets, never commit\n")
            for key, value in current.items():
                fh.write(f"{key}={value}\n")
        os.replace(tmp, path)
    return current


def load_settings() -> Settings:
    """Read the settings from the environment (and ``<project>/.env`` if present)."""
    env_file = project_dir() / ".env"
    try:
        return Settings(_env_file=env_file if env_file.exists() else None)  # type: ignore[call-arg]
    except Exception as exc:  # pydantic ValidationError
        raise ConfigError(
            f"invalid environment setting: {exc}",
            fix="correct the variable named above (see .env.example)",
        ) from exc
