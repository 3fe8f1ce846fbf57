"""Where secrets must never be: a scan of everything a stack wrote.

Every byte under ``$CVLOOP_HOME`` is searched for every secret the stack holds (Label
Studio's password and token, the S3 secret key): MLflow's database and artifacts (params,
tags, reports), Prefect's database (flow-run parameters, logs, artifacts), the frame store
(run records, reports), the services' logs, the data repository. Two places hold a secret by
design and are left out: ``secrets.env`` itself and Label Studio's own database (it must know
its token). Symbolic links are not followed (Label Studio's document root links to the frame
roots, scanned where they are).
"""

from __future__ import annotations

import os
from pathlib import Path

ALLOWED = ("secrets.env", "labelstudio")


def secret_values(home: Path, env: dict[str, str]) -> dict[str, str]:
    """The stack's secrets by name (values of 8 characters or more: a shorter one would
    match by chance)."""
    from cvloop.config.settings import SECRETS_FILE, read_secrets

    found = dict(read_secrets(home / SECRETS_FILE))
    if env.get("AWS_SECRET_ACCESS_KEY"):
        found["AWS_SECRET_ACCESS_KEY"] = env["AWS_SECRET_ACCESS_KEY"]
    return {k: v for k, v in found.items() if len(v) >= 8}


def leaks(home: Path, env: dict[str, str]) -> list[str]:
    """``path: NAME`` for every file under ``home`` holding a secret's value."""
    secrets = {k: v.encode() for k, v in secret_values(home, env).items()}
    assert secrets, f"no secrets found in {home}: the scan would prove nothing"
    out = []
    for root, dirs, files in os.walk(home, followlinks=False):
        rel_root = Path(root).relative_to(home)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in ALLOWED]
        for name in files:
            path = Path(root) / name
            if path.is_symlink() or (rel_root == Path(".") and name in ALLOWED):
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue  # a socket, a file removed meanwhile
            out += [f"{path.relative_to(home)}: {k}" for k, v in secrets.items() if v in data]
    return out
