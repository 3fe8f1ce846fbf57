"""What every ``cvloop`` command starts from: the settings with the client environment
applied (Prefect, MLflow and Label Studio clients in this process reach the configured
stack), and the one :class:`~cvloop.context.Context` a command passes to the stages."""

from __future__ import annotations

from cvloop.config.settings import Settings, load_settings
from cvloop.context import Context


def client_settings() -> Settings:
    """The settings, with ``PREFECT_API_URL`` / ``MLFLOW_TRACKING_URI`` / Label Studio set
    for the libraries this process uses."""
    from cvloop.app.services import apply_client_env

    settings = load_settings()
    apply_client_env(settings)
    return settings


def client_context() -> Context:
    """The composition root of one CLI call."""
    from cvloop.config.params import load_params

    return Context(client_settings(), load_params())


def me() -> str:
    """Who runs this command (recorded as the author of a change)."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
