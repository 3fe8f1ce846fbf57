"""The real local stack through `cvloop services up|status|down`."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from cvloop.app.services import ServiceManager, ServiceRecord
from cvloop.config.settings import Settings
from tests.conftest import REPO, Stack, prefect_rest, stack_env

SERVICES = ["s3", "mlflow", "labelstudio", "prefect", "worker", "serve"]


def test_every_service_is_healthy_with_url_and_pid(stack):
    status = stack.status()
    assert sorted(status) == sorted(SERVICES)
    for name, row in status.items():
        assert row["healthy"], f"{name}: {row['detail']}"
        assert row["pid"] and psutil.pid_exists(row["pid"])
        assert row["url"].startswith("http://127.0.0.1:")


def test_services_answer_on_their_urls(stack):
    assert httpx.get(f"{stack.mlflow_uri}/health").text.strip() == "OK"
    assert httpx.get(f"{stack.prefect_api}/health").json() is True
    assert httpx.get(f"{stack.label_studio_url}/health").json()["status"] == "UP"
    assert httpx.get(f"{stack.s3_endpoint}/moto-api/data.json").status_code == 200
    serve = f"http://127.0.0.1:{stack.env['CVLOOP_SERVE_PORT']}"
    assert httpx.get(f"{serve}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{serve}/readyz")  # ready once a champion is registered, else why not
    assert ready.status_code == 200 or "no champion" in ready.json()["reason"], ready.text


def test_the_home_and_what_the_services_write_are_this_users_only(stack):
    assert stack.home.stat().st_mode & 0o777 == 0o700
    secrets = stack.home / "secrets.env"
    assert not secrets.exists() or secrets.stat().st_mode & 0o077 == 0
    dbs = [p for p in stack.home.rglob("*.db") if p.is_file()] + [
        p for p in stack.home.rglob("*.sqlite3") if p.is_file()
    ]
    assert dbs, "no service database found under the home"
    loose = [str(p) for p in dbs if p.stat().st_mode & 0o077]
    assert not loose, f"readable by others: {loose}"


def test_services_listen_on_loopback_only(stack):
    for name, row in stack.status().items():
        root = psutil.Process(row["pid"])
        procs = [root, *root.children(recursive=True)]
        listening = [
            c
            for p in procs
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        for conn in listening:
            assert conn.laddr.ip in ("127.0.0.1", "::1"), f"{name} listens on {conn.laddr}"


def test_label_studio_admin_token_works_and_wrong_token_is_refused(stack):
    from label_studio_sdk import LabelStudio
    from label_studio_sdk.core.api_error import ApiError

    token = (stack.home / "secrets.env").read_text().split("LABEL_STUDIO_API_KEY=")[1].split()[0]
    me = LabelStudio(base_url=stack.label_studio_url, api_key=token).users.whoami()
    assert me.email == "admin@cvloop.local"
    with pytest.raises(ApiError) as info:
        LabelStudio(base_url=stack.label_studio_url, api_key="0" * 40).users.whoami()
    assert info.value.status_code == 401
    # the health check explains a wrong configured token
    env = {**stack.env, "LABEL_STUDIO_API_KEY": "0" * 40}
    proc = subprocess.run(
        [sys.executable, "-m", "cvloop.app.cli", "services", "status", "labelstudio"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert "rejects the API token" in proc.stdout


def test_secrets_file_is_private_and_secrets_stay_off_argv(stack):
    path = stack.home / "secrets.env"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    token = path.read_text().split("LABEL_STUDIO_API_KEY=")[1].split()[0]
    ls_pid = stack.status()["labelstudio"]["pid"]
    assert token not in " ".join(psutil.Process(ls_pid).cmdline())
    for log in (stack.home / "logs").glob("*.log"):
        assert token not in log.read_text(errors="replace"), f"token leaked into {log.name}"


def test_worker_polls_the_cvloop_pool(stack):
    workers = prefect_rest(stack.prefect_api).post("/work_pools/cvloop/workers/filter", json={})
    assert any(w["status"] == "ONLINE" for w in workers)
    pool = prefect_rest(stack.prefect_api).get("/work_pools/cvloop")
    assert pool["type"] == "process"


def test_up_again_keeps_the_running_services(stack):
    before = {n: r["pid"] for n, r in stack.status().items()}
    out = stack.cli("services", "up").stdout
    assert out.count("already running") == len(SERVICES)
    assert {n: r["pid"] for n, r in stack.status().items()} == before


def test_busy_port_is_a_clear_error_not_a_silent_move(tmp_path):
    env = stack_env(tmp_path / "home")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env["CVLOOP_S3_PORT"] = str(port)
        proc = subprocess.run(
            [sys.executable, "-m", "cvloop.app.cli", "services", "up", "s3"],
            env=env,
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
    assert proc.returncode == 2
    assert f"port {port} for s3 is already in use" in proc.stderr
    assert "CVLOOP_S3_PORT" in proc.stderr
    assert not (tmp_path / "home" / "run" / "s3.json").exists()


def test_unknown_service_name_is_refused(tmp_path):
    env = stack_env(tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-m", "cvloop.app.cli", "services", "up", "mysql"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "unknown service(s): mysql" in proc.stderr


def test_down_never_signals_a_process_it_did_not_start(tmp_path):
    """A recorded pid whose start time differs (pid reuse) is left alone."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        mgr = ServiceManager(Settings(CVLOOP_HOME=str(tmp_path)), out=lambda _m: None)
        mgr._write_record(
            ServiceRecord(
                name="s3",
                pid=bystander.pid,
                create_time=psutil.Process(bystander.pid).create_time() - 50,
                argv=["moto_server"],
                port=1,
                url="",
                log="",
                started_at=time.time(),
            )
        )
        assert mgr.down(["s3"]) == []
        assert bystander.poll() is None, "a process cvloop did not start was signalled"
        assert not (tmp_path / "run" / "s3.json").exists()
    finally:
        bystander.kill()


def test_down_leaves_none_of_its_processes_running(tmp_path):
    st = Stack(home=tmp_path / "home", env=stack_env(tmp_path / "home"))
    st.cli("services", "up", "s3", "mlflow", timeout=300)
    status = st.status()
    pids = []
    for name in ("s3", "mlflow"):
        root = psutil.Process(status[name]["pid"])
        pids += [root.pid, *(c.pid for c in root.children(recursive=True))]
    assert len(pids) >= 2
    out = st.cli("services", "down").stdout
    assert "stopped: mlflow, s3" in out
    time.sleep(0.5)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert alive == []
    for port_var in ("CVLOOP_S3_PORT", "CVLOOP_MLFLOW_PORT"):
        port = int(st.env[port_var])
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free again
    assert not list((st.home / "run").glob("*.json"))
    assert st.status()["s3"]["state"] == "stopped"


def test_status_of_a_fresh_home_reports_stopped(tmp_path):
    env = stack_env(tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-m", "cvloop.app.cli", "services", "status"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0
    for name in SERVICES:
        assert f"{name}" in proc.stdout
    assert proc.stdout.count("stopped") == len(SERVICES)


def test_deployed_flow_runs_on_the_worker_and_reaches_every_service(stack):
    assert "stack-check" in stack.cli("deploy").stdout
    proc = stack.cli("run", "stack-check/stack-check", "--timeout", "300")
    assert "Completed" in proc.stdout
    artifacts = prefect_rest(stack.prefect_api).post(
        "/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["stack-check"]}}},
    )
    assert artifacts, "the stack-check report artifact is missing"
    report = artifacts[0]["data"]
    for service in ("frame-store", "s3", "mlflow", "labelstudio"):
        assert f"| {service} | OK |" in report


def test_label_studio_serves_the_frame_roots_and_nothing_else_of_the_home(stack_client_env):
    """Label Studio's document root is a folder of links to the frame roots: a reviewer sees
    the frames, and no Label Studio user can connect a storage on the home (its own
    database, MLflow's, Prefect's, the secrets, the fleet's ground truth) nor read a file of
    it through the local-files URL. Before, the root was the home itself."""
    import io
    import uuid

    from label_studio_sdk.core.api_error import ApiError
    from PIL import Image

    from cvloop.adapters.labelstudio import TaskSpec, image_url
    from tests.conftest import context

    stack = stack_client_env
    files = stack.home / "labelstudio-files"
    assert files.stat().st_mode & 0o777 == 0o700
    entries = list(files.iterdir())
    assert entries and all(e.is_symlink() for e in entries), entries
    ls_pid = stack.status()["labelstudio"]["pid"]
    assert psutil.Process(ls_pid).environ()["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str(files)

    ctx = context()
    store = ctx.store
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 40, 10)).save(buf, "JPEG")
    key = f"frames/cam-ls/2026-10-05/{1759622400000 + uuid.uuid4().int % 1000}.jpg"
    store.put_bytes(key, buf.getvalue())
    queue = ctx.labelstudio
    project = queue.ensure_project(f"cvloop files {uuid.uuid4().hex[:8]}", ["crate"])
    token = ctx.settings.label_studio_token()
    auth = {"Authorization": f"Token {token}"}
    try:
        queue.connect_storage(project, store)
        queue.connect_storage(project, store)  # idempotent
        [storage] = queue.client.import_storage.local.list(project=project)
        assert storage.path == str(files / store.root.name)
        queue.import_tasks(project, [TaskSpec("sha-ls", image_url(store, key), 48, 32, [], [])],
                           "m/1", 10)  # fmt: skip
        shown = queue.client.tasks.get(id=queue.tasks(project)[0][0]).data["image"]
        got = httpx.get(httpx.URL(stack.label_studio_url).join(shown), headers=auth)
        assert got.status_code == 200 and got.content == buf.getvalue()

        # the home is out of reach: its folders cannot become storage ...
        for inside in ("labelstudio", "mlflow", "fleet-truth", "."):
            # made if no test wrote it yet: Label Studio would refuse a missing folder first
            (stack.home / inside).mkdir(exist_ok=True)
            with pytest.raises(ApiError) as info:
                queue.client.import_storage.local.create(
                    project=project, path=str((stack.home / inside).resolve()), title="x"
                )
            assert "LOCAL_FILES_DOCUMENT_ROOT" in str(info.value.body), info.value.body
        # ... nor be read through the document root (Label Studio answers 404, or 500 for a
        # path that leaves the root: never the file)
        secret = (stack.home / "secrets.env").read_text().split("LABEL_STUDIO_API_KEY=")[1]
        for rel in ("../secrets.env", "../labelstudio/label_studio.sqlite3", "../../x"):
            r = httpx.get(f"{stack.label_studio_url}/data/local-files/", params={"d": rel},
                          headers=auth)  # fmt: skip
            assert r.status_code >= 400, (rel, r.status_code)
            assert secret.split()[0] not in r.text and b"SQLite format" not in r.content
    finally:
        queue.client.projects.delete(id=project)
