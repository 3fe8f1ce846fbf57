"""The Prefect REST adapter keeps Prefect's retry contract: a busy server (503, SQLite's
``database is locked``) is asked again, an error that is not busy is raised at once with the
call named, and a server that stays busy ends in an error that says so."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cvloop.adapters.prefect_rest import PrefectRest, PrefectRestError


class _Busy:
    """A loopback server that answers ``busy`` 503s, then ``final`` (status, body)."""

    def __init__(self, busy: int, final: tuple[int, object]):
        self.busy, self.final, self.seen = busy, final, []
        outer = self

        class H(BaseHTTPRequestHandler):
            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                outer.seen.append((self.command, self.path, self.rfile.read(n)))
                if outer.busy > 0:
                    outer.busy -= 1
                    code, body = 503, {"exception_message": "Service Unavailable"}
                elif callable(outer.final):
                    code, body = outer.final(json.loads(outer.seen[-1][2] or b"{}"))
                else:
                    code, body = outer.final
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _answer

            def log_message(self, *a):  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def busy(request):
    servers = []

    def make(n, final=(200, [{"id": "a"}])):
        servers.append(_Busy(n, final))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_busy_answers_are_retried_until_the_server_answers(busy):
    srv = busy(3)
    with PrefectRest(srv.url, first_sleep_s=0.01) as api:
        assert api.post("/flow_runs/filter", json={"limit": 1}) == [{"id": "a"}]
    assert len(srv.seen) == 4  # three 503s, then the answer
    assert all(s[:2] == ("POST", "/api/flow_runs/filter") for s in srv.seen)
    assert json.loads(srv.seen[-1][2]) == {"limit": 1}  # the body is sent again each time


def test_a_server_that_stays_busy_is_an_error_naming_the_call(busy):
    srv = busy(100)
    api = PrefectRest(srv.url, attempts=3, first_sleep_s=0.01)
    with api, pytest.raises(PrefectRestError, match=r"PATCH .*/deployments/x still busy after 3"):
        api.patch("/deployments/x", json={"paused": True})
    assert len(srv.seen) == 3


def test_an_error_that_is_not_busy_is_raised_at_once(busy):
    srv = busy(0, final=(422, {"detail": "bad filter"}))
    with PrefectRest(srv.url, first_sleep_s=0.01) as api:
        with pytest.raises(PrefectRestError, match=r"HTTP 422.*bad filter"):
            api.post("/flow_runs/filter")
        assert api.request("GET", "/deployments/name/x").status_code == 422  # raw: caller decides
    assert len(srv.seen) == 2


def test_paged_walks_every_page(busy):
    rows = [{"i": i} for i in range(5)]
    srv = busy(1, final=lambda body: (200, rows[body["offset"] : body["offset"] + body["limit"]]))
    with PrefectRest(srv.url, first_sleep_s=0.01) as api:
        assert api.paged("/task_runs/filter", {"sort": "ID_DESC"}, page=2) == rows
    offsets = [json.loads(b)["offset"] for _, _, b in srv.seen]
    assert offsets == [0, 0, 2, 4]  # the first page once busy, then asked again
