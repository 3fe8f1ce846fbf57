"""The real local stack: start, check and stop the services cvloop runs on.

``cvloop services up|down|status`` manages, on one machine:

============  ==================================================================================
``s3``        S3-compatible server on loopback (moto_server) for dev and tests
``mlflow``    MLflow tracking + registry on SQLite, artifacts in a local folder (lean settings)
``labelstudio``  Label Studio from its own venv, bound to 127.0.0.1, admin + token preset,
              analytics / version check / Sentry off
``prefect``   Prefect server (SQLite) with UI, schedules and automations
``worker``    a Prefect process worker polling the ``cvloop`` work pool
``serve``     the inference server (``cvloop serve``): routes frames by the rollout manifest,
              writes the inference log; ready once a champion is registered
============  ==================================================================================

Every pid, log and data folder lives under ``$CVLOOP_HOME`` (``.cvloop/``): ``run/<name>.json``
records what was started (pid + process start time, so a recycled pid is never signalled),
``logs/<name>.log`` holds its output. A port that is already taken is a clear error, never a
silent move to another port. ``down`` stops only the process groups recorded in ``run/``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cvloop.config.offline import offline_env
from cvloop.config.settings import Settings, code_dir, ensure_local_secrets, project_dir
from cvloop.core.errors import ServiceError

#: The Prefect work pool the local worker polls and prefect.yaml deploys to.
WORK_POOL = "cvloop"

SERVICE_ORDER = ("s3", "mlflow", "labelstudio", "prefect", "worker", "serve")

HealthCheck = Callable[[], "str | None"]  # None = healthy, else the reason


@dataclass
class ServiceSpec:
    """How to start one service and how to tell that it is healthy."""

    name: str
    port: int | None
    argv: list[str]
    env: dict[str, str]
    url: str
    health: HealthCheck
    start_timeout_s: float
    after: tuple[str, ...] = ()
    port_env: str | None = None
    description: str = ""


@dataclass
class ServiceRecord:
    """What ``up`` wrote to ``run/<name>.json``."""

    name: str
    pid: int
    create_time: float
    argv: list[str]
    port: int | None
    url: str
    log: str
    started_at: float
    healthy_after_s: float | None = None


@dataclass
class ServiceStatus:
    name: str
    url: str
    pid: int | None
    state: str  # running | stopped | stale
    healthy: bool
    detail: str = ""
    rss_mb: float | None = None
    healthy_after_s: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


def client_env(settings: Settings) -> dict[str, str]:
    """Environment for every cvloop process that talks to the stack (CLI, worker, flows)."""
    env = offline_env(settings.home)
    env.update(
        CVLOOP_HOME=str(settings.home),
        CVLOOP_PROJECT_DIR=str(project_dir()),
        CVLOOP_CODE_DIR=str(code_dir()),
        PREFECT_HOME=str(settings.home / "prefect"),
        PREFECT_API_URL=settings.prefect_api_url,
        MLFLOW_TRACKING_URI=settings.mlflow_tracking_uri,
        LABEL_STUDIO_URL=settings.label_studio_url,
    )
    return env


def apply_client_env(settings: Settings) -> None:
    """Export :func:`client_env` into this process (values already set by the user win,
    except the offline switches, which always hold)."""
    for key, value in client_env(settings).items():
        if key in offline_env(settings.home):
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)


def _http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 3.0):
    import httpx

    return httpx.get(url, headers=headers, timeout=timeout)


def _venv_bin(venv: str, name: str) -> str:
    """A console script of one of the project's venvs (falls back to PATH)."""
    candidate = code_dir() / venv / "bin" / name
    if candidate.exists():
        return str(candidate)
    if venv == ".venv":
        here = Path(sys.executable).parent / name
        if here.exists():
            return str(here)
    return name


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something already listens on ``host:port`` (a bind attempt fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: a port whose old connections linger in TIME_WAIT is free to listen
        # on; only a live listener makes the bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _port_owner(port: int) -> str:
    try:
        import psutil

        for conn in psutil.net_connections(kind="inet"):
            listening = conn.status == psutil.CONN_LISTEN
            if conn.laddr and conn.laddr.port == port and listening and conn.pid:
                try:
                    return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
                except psutil.Error:
                    return f" by pid {conn.pid}"
    except Exception:  # psutil may be denied; the message is still useful without it
        pass
    return ""


def _local_root(uri: str) -> Path | None:
    """The folder of a local storage URI (a path or ``file://``); None for a remote one."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None if "://" in uri else Path(uri)


class ServiceManager:
    """Starts, checks and stops the local services of one cvloop home."""

    def __init__(self, settings: Settings, *, out: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.home = settings.home
        self.run_dir = self.home / "run"
        self.log_dir = self.home / "logs"
        self.out = out or (lambda msg: print(msg, flush=True))

    # ---- specs --------------------------------------------------------------------------
    def specs(self) -> dict[str, ServiceSpec]:
        s = self.settings
        home = self.home
        base_env = {**os.environ, **offline_env(home)}
        for k in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
            base_env.pop(k, None)

        store = s.frame_store_uri
        # Label Studio serves local files below its document root, and lets any of its users
        # connect a storage anywhere below it: the root holds links to the frame roots only
        # (made by `up`), never the home with the services' databases and secrets
        doc_root = str(s.label_studio_files_root)
        ls_env = {
            **base_env,
            "LABEL_STUDIO_BASE_DATA_DIR": str(home / "labelstudio"),
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": doc_root,
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            # the local S3 server is on loopback, which Label Studio's SSRF guard blocks by
            # default; this server itself listens on 127.0.0.1 only
            "USE_DEFAULT_BANNED_SUBNETS": "false",
            "LABEL_STUDIO_USERNAME": s.label_studio_username,
        }
        # Secrets travel by environment, never on argv (visible in `ps`).
        try:
            ls_env["LABEL_STUDIO_PASSWORD"] = s.label_studio_admin_password()
            ls_env["LABEL_STUDIO_USER_TOKEN"] = s.label_studio_token()
        except Exception:  # ConfigError until `up` generates them; only `up` starts LS
            pass

        prefect_env = {
            **base_env,
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(s.prefect_port),
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{s.prefect_port}/api",
        }
        worker_env = {
            **base_env,
            **client_env(s),
            "PREFECT_API_URL": f"http://127.0.0.1:{s.prefect_port}/api",
            # poll often: a local worker is idle between runs, and each run waits for a poll
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
        }
        mlflow_env = {
            **base_env,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        mlflow_dir = home / "mlflow"

        specs = [
            ServiceSpec(
                name="s3",
                port=s.s3_port,
                port_env="CVLOOP_S3_PORT",
                argv=[_venv_bin(".venv", "moto_server"), "-H", "127.0.0.1", "-p", str(s.s3_port)],
                env=base_env,
                url=s.local_s3_endpoint,
                health=lambda: self._check_http(f"{s.local_s3_endpoint}/moto-api/data.json"),
                start_timeout_s=60,
                description="S3-compatible server (moto) on loopback",
            ),
            ServiceSpec(
                name="mlflow",
                port=s.mlflow_port,
                port_env="CVLOOP_MLFLOW_PORT",
                argv=[
                    _venv_bin(".venv", "mlflow"),
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                    "--artifacts-destination",
                    str(mlflow_dir / "artifacts"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(s.mlflow_port),
                    "--workers",
                    "1",
                ],
                env=mlflow_env,
                url=f"http://127.0.0.1:{s.mlflow_port}",
                health=lambda: self._check_http(f"http://127.0.0.1:{s.mlflow_port}/health"),
                start_timeout_s=120,
                description="MLflow tracking + model registry (SQLite, local artifacts)",
            ),
            ServiceSpec(
                name="labelstudio",
                port=s.label_studio_port,
                port_env="CVLOOP_LABEL_STUDIO_PORT",
                argv=[
                    _venv_bin(".venv-labelstudio", "label-studio"),
                    "start",
                    "--no-browser",
                    "--internal-host",
                    "127.0.0.1",
                    "-p",
                    str(s.label_studio_port),
                    "--enable-legacy-api-token",
                ],
                env=ls_env,
                url=f"http://127.0.0.1:{s.label_studio_port}",
                health=self._check_label_studio,
                start_timeout_s=300,
                description="Label Studio (own venv), review queue for pre-annotations",
            ),
            ServiceSpec(
                name="prefect",
                port=s.prefect_port,
                port_env="CVLOOP_PREFECT_PORT",
                argv=[
                    _venv_bin(".venv", "prefect"),
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(s.prefect_port),
                    "--analytics-off",
                ],
                env=prefect_env,
                url=f"http://127.0.0.1:{s.prefect_port}",
                health=lambda: self._check_http(f"http://127.0.0.1:{s.prefect_port}/api/health"),
                start_timeout_s=180,
                description="Prefect server: UI, deployments, schedules, automations",
            ),
            ServiceSpec(
                name="worker",
                port=None,
                argv=[
                    _venv_bin(".venv", "prefect"),
                    "worker",
                    "start",
                    "--pool",
                    WORK_POOL,
                    "--type",
                    "process",
                    "--name",
                    f"cvloop-local-{socket.gethostname()}",
                ],
                env=worker_env,
                url=f"http://127.0.0.1:{s.prefect_port}/work-pools/work-pool/{WORK_POOL}",
                health=self._check_worker,
                start_timeout_s=120,
                after=("prefect",),
                description=f"Prefect process worker on work pool '{WORK_POOL}'",
            ),
        ]
        serve_env = {**base_env, **client_env(s), "PYTHONUNBUFFERED": "1"}
        specs.append(
            ServiceSpec(
                name="serve",
                port=s.serve_port,
                port_env="CVLOOP_SERVE_PORT",
                argv=[_venv_bin(".venv", "cvloop"), "serve", "--port", str(s.serve_port)],
                env=serve_env,
                url=s.serve_url,
                # up = the process answers; /readyz says whether a model serves yet
                health=lambda: self._check_http(f"http://127.0.0.1:{s.serve_port}/healthz"),
                start_timeout_s=120,
                after=("mlflow",) + (("s3",) if "://" in store else ()),
                description="inference server: routes by the rollout manifest, writes the log",
            )
        )
        return {spec.name: spec for spec in specs}

    # ---- health checks ------------------------------------------------------------------
    def _check_http(self, url: str) -> str | None:
        try:
            resp = _http_get(url)
        except Exception as exc:
            return f"no answer from {url} ({type(exc).__name__})"
        if resp.status_code != 200:
            return f"{url} answered HTTP {resp.status_code}"
        return None

    def _check_label_studio(self) -> str | None:
        base = f"http://127.0.0.1:{self.settings.label_studio_port}"
        reason = self._check_http(f"{base}/health")
        if reason:
            return reason
        try:
            token = self.settings.label_studio_token()
        except Exception as exc:
            return str(exc)
        try:
            resp = _http_get(
                f"{base}/api/current-user/whoami", headers={"Authorization": f"Token {token}"}
            )
        except Exception as exc:
            return f"token check failed ({type(exc).__name__})"
        if resp.status_code in (401, 403):
            return (
                "Label Studio rejects the API token (HTTP "
                f"{resp.status_code}); the data dir was created with another token: "
                "set LABEL_STUDIO_API_KEY to it, or remove "
                f"{self.home / 'labelstudio'} to start over"
            )
        if resp.status_code != 200:
            return f"whoami answered HTTP {resp.status_code}"
        return None

    def _check_worker(self) -> str | None:
        api = f"http://127.0.0.1:{self.settings.prefect_port}/api"
        try:
            import httpx

            resp = httpx.post(f"{api}/work_pools/{WORK_POOL}/workers/filter", json={}, timeout=3.0)
        except Exception as exc:
            return f"Prefect API not reachable ({type(exc).__name__})"
        if resp.status_code == 404:
            return f"work pool '{WORK_POOL}' does not exist yet"
        if resp.status_code != 200:
            return f"workers/filter answered HTTP {resp.status_code}"
        online = [w for w in resp.json() if str(w.get("status", "")).upper() == "ONLINE"]
        if not online:
            return f"no ONLINE worker in work pool '{WORK_POOL}' yet"
        return None

    # ---- records ------------------------------------------------------------------------
    def _record_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def _read_record(self, name: str) -> ServiceRecord | None:
        path = self._record_path(name)
        if not path.exists():
            return None
        try:
            return ServiceRecord(**json.loads(path.read_text()))
        except Exception:
            return None

    def _write_record(self, rec: ServiceRecord) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._record_path(rec.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(rec), indent=2))
        os.replace(tmp, self._record_path(rec.name))

    @staticmethod
    def _alive(rec: ServiceRecord) -> bool:
        import psutil

        try:
            proc = psutil.Process(rec.pid)
            return abs(proc.create_time() - rec.create_time) < 1.0 and proc.status() != "zombie"
        except psutil.Error:
            return False

    @staticmethod
    def _tree_rss_mb(pid: int) -> float | None:
        import psutil

        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20
        except psutil.Error:
            return None

    def _names(self, names: Iterable[str] | None) -> list[str]:
        if not names:
            return list(SERVICE_ORDER)
        unknown = [n for n in names if n not in SERVICE_ORDER]
        if unknown:
            raise ServiceError(
                f"unknown service(s): {', '.join(unknown)}",
                fix=f"choose from: {', '.join(SERVICE_ORDER)}",
            )
        return [n for n in SERVICE_ORDER if n in set(names)]

    # ---- up -----------------------------------------------------------------------------
    def up(self, names: Iterable[str] | None = None) -> list[ServiceStatus]:
        """Start the named services (all by default) and wait until each is healthy.

        Already running services are left alone. Raises :class:`ServiceError` naming every
        service that did not become healthy, with the tail of its log.
        """
        wanted = self._names(names)
        if "worker" in wanted and "prefect" not in wanted:
            wanted = self._names([*wanted, "prefect"])
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)  # secrets, the services' databases, the fleet's ground truth
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if "labelstudio" in wanted:
            ensure_local_secrets(self.settings)
            self._link_frame_roots()
        specs = self.specs()

        self._preflight([specs[n] for n in wanted])
        failures: dict[str, str] = {}
        started: dict[str, float] = {}
        pending = list(wanted)
        while pending:
            wave = [n for n in pending if all(d not in pending for d in specs[n].after)]
            for name in wave:
                if any(d in failures for d in specs[name].after):
                    failures[name] = f"not started: {', '.join(specs[name].after)} failed"
                    continue
                started[name] = self._start(specs[name])
            self._wait_healthy([specs[n] for n in wave if n not in failures], started, failures)
            pending = [n for n in pending if n not in wave]

        if failures:
            lines = []
            for name, reason in failures.items():
                lines.append(f"{name}: {reason}")
                tail = self._log_tail(name)
                if tail:
                    lines.append("  last log lines:\n" + "\n".join(f"    {t}" for t in tail))
            raise ServiceError(
                "some services did not become healthy:\n" + "\n".join(lines),
                fix=f"read the logs in {self.log_dir}, fix the cause, then `cvloop services up` "
                "again (healthy services are kept)",
            )
        if "labelstudio" in wanted:
            self._reconnect_review_projects()
        return self.status(wanted)

    def _link_frame_roots(self) -> None:
        """Label Studio's document root: links to the local frame roots (the main store and
        the local regions), nothing else (:func:`cvloop.adapters.labelstudio.link_frame_roots`)."""
        from cvloop.adapters.labelstudio import link_frame_roots
        from cvloop.adapters.regions import load_regions

        s = self.settings
        main = s.frame_store_uri
        uris = [main] + [
            r.storage_uri for r in load_regions(s.regions_path(), main_uri=main).values()
        ]
        roots = [root for u in uris if (root := _local_root(u)) is not None]
        link_frame_roots(s.label_studio_files_root, roots)

    def _reconnect_review_projects(self) -> None:
        """cvloop's projects connected while Label Studio's document root was elsewhere (the
        store's parent, before the links) get the store at the new root, so their images
        keep loading (idempotent: a project already connected there is left alone)."""
        from cvloop.adapters.labelstudio import LabelStudioQueue
        from cvloop.adapters.storage import LocalStorage

        s = self.settings
        root = _local_root(s.frame_store_uri)
        if root is None:
            return
        try:
            queue = LabelStudioQueue(s.label_studio_url, s.label_studio_token(),
                                     files_root=s.label_studio_files_root)  # fmt: skip
            store = LocalStorage(root)
            from cvloop.config.params import load_params

            for pid, _title in queue.projects(load_params().registry.model_name):
                queue.connect_storage(pid, store)
        except Exception as exc:  # the services are up; the reviews can be reconnected later
            self.out(f"warning: could not reconnect the review projects' frame store: {exc}")

    def _preflight(self, specs: list[ServiceSpec]) -> None:
        problems = []
        for spec in specs:
            rec = self._read_record(spec.name)
            if rec and self._alive(rec):
                continue
            if spec.port is not None and port_in_use(spec.port):
                problems.append(
                    f"port {spec.port} for {spec.name} is already in use{_port_owner(spec.port)}; "
                    f"stop that process or choose another port with {spec.port_env}=<port>"
                )
            if spec.name == "labelstudio" and not Path(spec.argv[0]).exists():
                problems.append(
                    f"Label Studio is not installed ({spec.argv[0]} is missing); "
                    "run `make setup` to create .venv-labelstudio"
                )
        if problems:
            raise ServiceError("cannot start the services:\n  " + "\n  ".join(problems))

    def _start(self, spec: ServiceSpec) -> float:
        rec = self._read_record(spec.name)
        if rec and self._alive(rec):
            self.out(f"  {spec.name:<12} already running (pid {rec.pid})")
            return rec.started_at
        if rec:
            self._record_path(spec.name).unlink(missing_ok=True)
        log_path = self.log_dir / f"{spec.name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 (handed to the child process)
        log.write(f"\n==== cvloop services up: {time.ctime()} ====\n".encode())
        log.flush()
        proc = subprocess.Popen(
            spec.argv,
            env=spec.env,
            cwd=str(code_dir()),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: `down` signals exactly this group
            umask=0o077,  # databases, tokens, artifacts: this user's only (0600 / 0700)
        )
        log.close()
        import psutil

        started = time.time()
        self._write_record(
            ServiceRecord(
                name=spec.name,
                pid=proc.pid,
                create_time=psutil.Process(proc.pid).create_time(),
                argv=spec.argv,
                port=spec.port,
                url=spec.url,
                log=str(log_path),
                started_at=started,
            )
        )
        self.out(f"  {spec.name:<12} starting (pid {proc.pid}), log {log_path}")
        return started

    def _wait_healthy(
        self, specs: list[ServiceSpec], started: dict[str, float], failures: dict[str, str]
    ) -> None:
        waiting = {s.name: s for s in specs}
        last_reason: dict[str, str] = {}
        while waiting:
            for name, spec in list(waiting.items()):
                rec = self._read_record(name)
                if rec is None or not self._alive(rec):
                    failures[name] = "the process exited during start-up"
                    del waiting[name]
                    continue
                reason = spec.health()
                elapsed = time.time() - started[name]
                if reason is None:
                    if rec.healthy_after_s is None:
                        rec.healthy_after_s = round(elapsed, 1)
                        self._write_record(rec)
                    self.out(f"  {name:<12} healthy after {elapsed:.1f}s  {spec.url}")
                    del waiting[name]
                elif elapsed > spec.start_timeout_s:
                    failures[name] = f"not healthy after {spec.start_timeout_s:.0f}s: {reason}"
                    del waiting[name]
                else:
                    last_reason[name] = reason
            if waiting:
                time.sleep(0.5)

    def _log_tail(self, name: str, lines: int = 15) -> list[str]:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return []
        text = path.read_text(errors="replace").splitlines()
        return text[-lines:]

    # ---- down ---------------------------------------------------------------------------
    def down(self, names: Iterable[str] | None = None, timeout_s: float = 20.0) -> list[str]:
        """Stop the services this home started (by recorded pid and process group).

        Returns the names stopped. Processes cvloop did not start are never signalled.
        """
        import psutil

        stopped = []
        for name in reversed(self._names(names)):
            rec = self._read_record(name)
            if rec is None:
                continue
            if self._alive(rec):
                try:
                    root = psutil.Process(rec.pid)
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    procs = []
                try:
                    os.killpg(rec.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                except PermissionError:
                    root.terminate()
                _, alive = psutil.wait_procs(procs, timeout=timeout_s)
                for proc in alive:
                    try:
                        proc.kill()
                    except psutil.Error:
                        pass
                psutil.wait_procs(alive, timeout=5)
                self.out(f"  {name:<12} stopped (pid {rec.pid})")
                stopped.append(name)
            self._record_path(name).unlink(missing_ok=True)
        return stopped

    # ---- status -------------------------------------------------------------------------
    def status(self, names: Iterable[str] | None = None) -> list[ServiceStatus]:
        specs = self.specs()
        out = []
        for name in self._names(names):
            spec = specs[name]
            rec = self._read_record(name)
            if rec is None:
                out.append(ServiceStatus(name, spec.url, None, "stopped", False, "not started"))
                continue
            if not self._alive(rec):
                out.append(
                    ServiceStatus(
                        name,
                        spec.url,
                        rec.pid,
                        "stale",
                        False,
                        "recorded process is gone (run `cvloop services up`)",
                    )
                )
                continue
            reason = spec.health()
            out.append(
                ServiceStatus(
                    name,
                    spec.url,
                    rec.pid,
                    "running",
                    reason is None,
                    reason or "healthy",
                    rss_mb=self._tree_rss_mb(rec.pid),
                    healthy_after_s=rec.healthy_after_s,
                )
            )
        return out


def require_healthy(settings: Settings, names: list[str]) -> None:
    """Fail with the fix when a service a command needs is not answering.

    Services pointed elsewhere by the environment (e.g. ``MLFLOW_TRACKING_URI``) are
    checked at their URL instead of as local processes.
    """
    checks = {
        "mlflow": f"{settings.mlflow_tracking_uri}/health",
        "prefect": f"{settings.prefect_api_url}/health",
        "labelstudio": f"{settings.label_studio_url}/health",
    }
    down = []
    for name in names:
        url = checks.get(name)
        if url is None:
            continue
        try:
            ok = _http_get(url).status_code == 200
        except Exception:
            ok = False
        if not ok:
            down.append(f"{name} ({url})")
    if down:
        raise ServiceError(
            f"not reachable: {', '.join(down)}",
            fix="start the local stack with `cvloop services up` (or `make up`)",
        )


def format_status(rows: list[ServiceStatus]) -> str:
    """A fixed-width table of service, URL, pid, health (and memory, start time)."""
    header = f"{'service':<12} {'health':<10} {'pid':>7} {'rss MB':>7} {'start s':>7}  url"
    lines = [header, "-" * len(header)]
    for r in rows:
        health = "healthy" if r.healthy else ("stopped" if r.state == "stopped" else "UNHEALTHY")
        rss = f"{r.rss_mb:.0f}" if r.rss_mb is not None else "-"
        started = f"{r.healthy_after_s:.1f}" if r.healthy_after_s is not None else "-"
        pid = str(r.pid) if r.pid else "-"
        lines.append(f"{r.name:<12} {health:<10} {pid:>7} {rss:>7} {started:>7}  {r.url}")
        if not r.healthy and r.state != "stopped":
            lines.append(f"{'':<12}   {r.detail}")
    return "\n".join(lines)
