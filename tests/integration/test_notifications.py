"""Notifications through Prefect's own mechanism, on the session's real Prefect server:
`cvloop deploy` with CVLOOP_NOTIFY_WEBHOOK_URL makes the block and the automation; every
kind of notification reaches a webhook receiver on loopback exactly once per occurrence,
naming its owners and carrying its links; the webhook URL is kept secret."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

from cvloop.adapters.notify import KINDS, ensure_notifications, notify
from cvloop.adapters.storage import LocalStorage
from tests.conftest import REPO


class _Receiver:
    """A webhook on 127.0.0.1 that keeps every JSON body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                received.append({"path": self.path, **json.loads(self.rfile.read(n) or b"{}")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook/s3cr3t-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 120) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # anything more (a duplicate) would come now
        return list(self.bodies)


@pytest.fixture()
def receiver():
    r = _Receiver()
    yield r
    r.server.shutdown()


def test_every_notification_reaches_the_webhook_once_with_owners_and_links(
    stack, stack_client_env, receiver, tmp_path, monkeypatch
):
    from cvloop.config.params import load_params, with_overrides

    # the team's owners in its params; `cvloop deploy` (one deployment, for speed) makes the
    # block and the automation
    p = with_overrides(load_params(REPO / "params.yaml"), {"owners": {
        "ml_lead": "Ada <ada@example.com>", "on_call": "Bo", "reviewers": ["Cy", "Di"]}})  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p.model_dump(by_alias=True,
                                                                      mode="json")))  # fmt: skip
    env = {**stack.env, "CVLOOP_NOTIFY_WEBHOOK_URL": receiver.url,
           "CVLOOP_PARAMS": str(tmp_path / "params.yaml")}  # fmt: skip
    out = stack.cli("deploy", "stack-check", env=env).stdout
    assert "notifications: automation cvloop-notify" in out, out
    try:
        # the webhook URL (a credential) is in the block's secrets only
        from prefect.blocks.notifications import CustomWebhookNotificationBlock

        block = CustomWebhookNotificationBlock.load("cvloop-notify")
        assert block.url == "{{webhook_url}}" and receiver.url not in block.model_dump_json()
        # every kind, each emitted twice (a retried task): delivered once
        store = LocalStorage(tmp_path / "store")
        monkeypatch.setenv("CVLOOP_PARAMS", str(tmp_path / "params.yaml"))
        monkeypatch.setenv("CVLOOP_STORAGE_URI", str(tmp_path / "store"))
        from cvloop.stages.notify import model_version_url, tell
        from tests.conftest import context

        ctx = context()
        for kind in KINDS:
            for _ in range(2):
                emitted = tell(ctx, kind, f"occurrence-{kind}", f"{kind}: something to do",
                               f"what happened ({kind})",
                               {"open it": model_version_url(ctx, "7")},
                               roles=("ml_lead", "on_call", "reviewers"))  # fmt: skip
                assert emitted == (_ == 0)
        got = receiver.wait(len(KINDS))
        texts = [b["text"] for b in got]
        assert sorted(t.split(":")[0] for t in texts) == sorted(KINDS), texts  # once each
        for t in texts:
            assert "For: ml lead: Ada <ada@example.com>, on call: Bo, reviewers: Cy, Di" in t
            assert f"open it: {stack.mlflow_uri}/#/models/cvloop-detector/versions/7" in t
        assert {b["path"] for b in got} == {"/hook/s3cr3t-path"}
        # the record of each occurrence is in the store (what makes the second one a no-op)
        assert len(store.keys("notifications/")) == len(KINDS)
        assert not notify(store, "cvloop-detector", "rollback", "occurrence-rollback", "again")
    finally:
        print(ensure_notifications(None))  # the session's other tests send to no one
    from prefect.automations import Automation

    with pytest.raises(ValueError):
        Automation.read(name="cvloop-notify")
