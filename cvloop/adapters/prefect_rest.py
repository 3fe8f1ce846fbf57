"""Prefect's REST API over plain HTTP, with the retry contract Prefect's own client keeps.

Prefect's server answers **503** when its database is momentarily busy (SQLite under load:
``database is locked``) and expects the client to try again; its Python client does, with a
back-off. A bare ``httpx.post`` does not, so a report, a demo step or a test that reads runs
that way fails at random on a loaded machine. Every cvloop caller of the REST API (reports,
the demo's run-following, the tests) goes through :class:`PrefectRest` instead.

A 503 is answered only when the transaction was rolled back, so retrying a write is as safe as
Prefect's client makes it.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

# Prefect's client retries these (prefect/client/base.py); 502 and 429 come from proxies.
RETRY_CODES = frozenset({429, 502, 503})


class PrefectRestError(RuntimeError):
    """The API kept answering busy, or answered an error; the message names the call."""


class PrefectRest:
    """``PrefectRest(api_url)``: ``get``/``post``/``patch`` return the decoded JSON body
    (``None`` for an empty one), ``paged`` walks a ``/filter`` endpoint; ``request`` returns
    the response itself for callers that look at the status (404 = not deployed)."""

    def __init__(
        self,
        api_url: str,
        timeout_s: float = 30.0,
        attempts: int = 8,
        first_sleep_s: float = 0.5,
        max_sleep_s: float = 8.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.attempts = attempts
        self.first_sleep_s = first_sleep_s
        self.max_sleep_s = max_sleep_s
        self._client = httpx.Client(base_url=self.api_url, timeout=timeout_s)

    def __enter__(self) -> PrefectRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """The response, after retrying busy answers and dropped connections; any other
        status is returned as is."""
        sleep, last = self.first_sleep_s, ""
        for attempt in range(1, self.attempts + 1):
            try:
                resp = self._client.request(method, path, **kw)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code not in RETRY_CODES:
                    return resp
                last = f"HTTP {resp.status_code} {resp.text[:200]}"
            if attempt < self.attempts:
                time.sleep(sleep)
                sleep = min(sleep * 2, self.max_sleep_s)
        raise PrefectRestError(
            f"Prefect API {method} {self.api_url}{path} still busy after {self.attempts} "
            f"attempts ({last}); is the server overloaded or down? `cvloop services status`"
        )

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.request(method, path, **kw)
        if resp.is_error:
            raise PrefectRestError(
                f"Prefect API {method} {self.api_url}{path} answered HTTP {resp.status_code}: "
                f"{resp.text[:300]}"
            )
        return resp.json() if resp.content else None

    def get(self, path: str, **kw: Any) -> Any:
        return self._json("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self._json("POST", path, json=json if json is not None else {}, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self._json("PATCH", path, json=json if json is not None else {}, **kw)

    def paged(self, path: str, body: dict | None = None, page: int = 200) -> list[dict]:
        """Every row of a ``/filter`` endpoint, ``page`` at a time."""
        rows: list[dict] = []
        offset = 0
        while True:
            chunk = self.post(path, json={**(body or {}), "limit": page, "offset": offset})
            rows.extend(chunk)
            if len(chunk) < page:
                return rows
            offset += page
