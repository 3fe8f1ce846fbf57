"""Offline by construction: the one place that turns off every telemetry and download.

cvloop runs where only package registries (or nothing at all) can be reached, so no
component may phone home or fetch weights, fonts or datasets at run time. Every entry point
(CLI, flow runs started by the worker, the services) gets :func:`offline_env`; code that
uses Ultralytics calls :func:`configure_ultralytics` after importing it.

What each switch stops:

* Ultralytics: ``YOLO_OFFLINE`` (online checks, hub), ``YOLO_AUTOINSTALL`` (pip installs),
  settings ``sync``/integrations off (its own MLflow callback would write ``./mlflow.db``),
  and the fonts it would fetch from GitHub on every train/val (copied from matplotlib).
* MLflow: ``MLFLOW_DISABLE_TELEMETRY``. Prefect: ``PREFECT_SERVER_ANALYTICS_ENABLED``.
* DVC: ``DVC_NO_ANALYTICS``. ONNX Runtime: ``ORT_DISABLE_TELEMETRY``. Generic: ``DO_NOT_TRACK``.
* Label Studio (server): Sentry DSNs empty, ``LATEST_VERSION_CHECK`` and ``COLLECT_ANALYTICS`` off.
* Hugging Face hubs (pulled in transitively): ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: Switches that hold for every process cvloop starts or runs in.
OFFLINE_SWITCHES: dict[str, str] = {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "false",
    "YOLO_VERBOSE": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "DVC_NO_ANALYTICS": "1",
    "ORT_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GE_USAGE_STATISTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
}

#: Ultralytics settings that keep it from syncing or attaching integrations.
ULTRALYTICS_SETTINGS: dict[str, bool] = {
    "sync": False,
    "mlflow": False,
    "clearml": False,
    "comet": False,
    "dvc": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,
    "openvino_msg": False,
}

_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


def ultralytics_config_dir(home: Path) -> Path:
    """``YOLO_CONFIG_DIR`` for a cvloop home (Ultralytics appends ``Ultralytics/``)."""
    return home / "ultralytics"


def offline_env(home: Path) -> dict[str, str]:
    """All offline switches plus the project-local Ultralytics config dir."""
    return {**OFFLINE_SWITCHES, "YOLO_CONFIG_DIR": str(ultralytics_config_dir(home))}


def install_fonts(home: Path) -> list[Path]:
    """Put the fonts Ultralytics looks for where it looks, so it never downloads them.

    matplotlib ships DejaVuSans; it stands in for Arial in Ultralytics' plots.
    """
    import matplotlib

    src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    dest_dir = ultralytics_config_dir(home) / "Ultralytics"
    dest_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in _FONT_NAMES:
        dest = dest_dir / name
        if not dest.exists():
            shutil.copyfile(src, dest)
        written.append(dest)
    return written


def apply_offline(home: Path | None = None) -> dict[str, str]:
    """Set every offline switch in this process's environment and install the fonts.

    Call before importing Ultralytics (it reads ``YOLO_CONFIG_DIR`` and ``YOLO_OFFLINE`` at
    import). Idempotent. Returns the switches applied.
    """
    if home is None:
        from cvloop.config.settings import load_settings

        home = load_settings().home
    env = offline_env(home)
    os.environ.update(env)
    install_fonts(home)
    return env


def configure_ultralytics(home: Path | None = None) -> None:
    """Apply the offline switches, then turn off Ultralytics' sync and integrations.

    Also points its default datasets/weights/runs folders into the cvloop home, so nothing
    lands relative to the working directory.
    """
    if home is None:
        from cvloop.config.settings import load_settings

        home = load_settings().home
    apply_offline(home)
    from ultralytics.utils import SETTINGS

    wanted: dict[str, object] = dict(ULTRALYTICS_SETTINGS)
    wanted.update(
        datasets_dir=str(home / "ultralytics" / "datasets"),
        weights_dir=str(home / "ultralytics" / "weights"),
        runs_dir=str(home / "ultralytics" / "runs"),
    )
    if any(SETTINGS.get(k) != v for k, v in wanted.items()):
        SETTINGS.update(wanted)
