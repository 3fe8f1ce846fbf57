"""Model architectures shipped with cvloop (YAML only: no weights, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def model_yaml_path(name: str) -> str:
    """A YAML shipped here (e.g. ``yolo11p.yaml``), a path, or a name Ultralytics knows
    (``yolo11n.yaml``, built from its own config: no download)."""
    if (HERE / name).exists():
        return str(HERE / name)
    if Path(name).exists():
        return str(Path(name).resolve())
    if not name.endswith((".yaml", ".yml")):
        from cvloop.core.errors import ConfigError

        raise ConfigError(
            f"train.model_yaml = {name!r} is not a model YAML",
            fix="use yolo11p.yaml (shipped), yolo11n.yaml, or a path to a YAML; "
            "weights are never downloaded",
        )
    return name
