"""Settings come from the environment; secrets are generated locally, private, never echoed."""

from __future__ import annotations

import pytest

from cvloop.config.offline import OFFLINE_SWITCHES, install_fonts, offline_env
from cvloop.config.settings import Settings, ensure_local_secrets
from cvloop.core.errors import ConfigError


def test_local_defaults(tmp_path, monkeypatch):
    for var in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "LABEL_STUDIO_URL", "CVLOOP_STORAGE_URI"):
        monkeypatch.delenv(var, raising=False)
    s = Settings(CVLOOP_HOME=str(tmp_path), CVLOOP_PREFECT_PORT=4300)
    assert s.prefect_api_url == "http://127.0.0.1:4300/api"
    assert s.prefect_ui_url == "http://127.0.0.1:4300"
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert s.frame_store_uri == str(tmp_path / "store")
    assert s.dvc_remote_url == str(tmp_path / "dvc-remote")


def test_home_is_not_read_from_HOME(monkeypatch):
    monkeypatch.delenv("CVLOOP_HOME", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home")
    assert str(Settings().home).endswith(".cvloop")


def test_environment_overrides_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("CVLOOP_STORAGE_URI", "s3://frames/prod")
    s = Settings(CVLOOP_HOME=str(tmp_path))
    assert s.mlflow_tracking_uri == "http://mlflow.internal:5000"
    assert s.frame_store_uri == "s3://frames/prod"


def test_bad_port_is_refused(tmp_path):
    with pytest.raises(Exception, match="CVLOOP_MLFLOW_PORT"):
        Settings(CVLOOP_HOME=str(tmp_path), CVLOOP_MLFLOW_PORT=70000)


def test_generated_secrets_are_private_stable_and_hidden(tmp_path, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_PASSWORD", raising=False)
    s = Settings(CVLOOP_HOME=str(tmp_path))
    with pytest.raises(ConfigError, match="cvloop services up"):
        s.label_studio_token()
    first = ensure_local_secrets(s)
    assert oct((tmp_path / "secrets.env").stat().st_mode & 0o777) == "0o600"
    assert len(first["LABEL_STUDIO_API_KEY"]) == 40
    assert ensure_local_secrets(s) == first  # generated once
    assert s.label_studio_token() == first["LABEL_STUDIO_API_KEY"]


def test_environment_secret_wins_and_is_not_printed(tmp_path, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "env-token-123456")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-xyz")
    s = Settings(CVLOOP_HOME=str(tmp_path))
    assert s.label_studio_token() == "env-token-123456"
    assert "env-token-123456" not in repr(s) and "aws-secret-xyz" not in repr(s)
    assert not (tmp_path / "secrets.env").exists()


def test_loopback_s3_gets_local_credentials_only(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    s = Settings(CVLOOP_HOME=str(tmp_path))
    assert s.s3_client_kwargs("http://127.0.0.1:9000")["aws_access_key_id"] == "cvloop-local"
    assert "aws_access_key_id" not in s.s3_client_kwargs("https://s3.example.com")


def test_offline_env_covers_every_component(tmp_path):
    env = offline_env(tmp_path)
    for key in (
        "YOLO_OFFLINE",
        "YOLO_AUTOINSTALL",
        "MLFLOW_DISABLE_TELEMETRY",
        "PREFECT_SERVER_ANALYTICS_ENABLED",
        "DVC_NO_ANALYTICS",
        "ORT_DISABLE_TELEMETRY",
        "DO_NOT_TRACK",
        "SENTRY_DSN",
        "LATEST_VERSION_CHECK",
        "COLLECT_ANALYTICS",
    ):
        assert key in env and env[key] == OFFLINE_SWITCHES[key]
    assert env["YOLO_CONFIG_DIR"] == str(tmp_path / "ultralytics")


def test_fonts_installed_where_ultralytics_looks(tmp_path):
    fonts = install_fonts(tmp_path)
    names = sorted(f.name for f in fonts)
    assert names == ["Arial.Unicode.ttf", "Arial.ttf"]
    for f in fonts:
        assert f.parent == tmp_path / "ultralytics" / "Ultralytics"
        assert f.read_bytes()[:4] in (b"\x00\x01\x00\x00", b"true", b"OTTO")  # a real TTF
