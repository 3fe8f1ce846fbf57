"""The Locust user of ``cvloop loadtest`` (runbooks/serve.md, "Load test").

Run by ``cvloop loadtest`` as ``locust -f <this file> --headless``; everything it needs comes
from the environment the driver sets:

* ``CVLOOP_LT_FRAMES``: a folder of encoded frames (JPEG / PNG) sent as the request body;
* ``CVLOOP_LT_PHASES``: ``seconds:users,seconds:users,...`` (a steady load, a burst, ...);
  the shape stops the run after the last phase, so it ends by itself;
* ``CVLOOP_LT_MAX_REQUESTS``: the run also stops after this many requests;
* ``CVLOOP_LT_RUN`` / ``CVLOOP_LT_DAY``: the frame-key prefix and the capture day of the
  frames (so the driver can find exactly this run's rows in the inference log);
* ``CVLOOP_LT_ACKED``: where each answered request is written, one JSON line each
  (frame key, version that answered, time), when the run stops.

Importing Locust monkey-patches the process with gevent: this module is only ever loaded
by the ``locust`` command, never imported by cvloop itself.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import time
from pathlib import Path
from urllib.parse import urlencode

from locust import FastHttpUser, LoadTestShape, constant, events, task

_FRAMES = sorted(
    p for p in Path(os.environ["CVLOOP_LT_FRAMES"]).iterdir()
    if p.suffix.lower() in (".jpg", ".jpeg", ".png")
)  # fmt: skip
_IMAGES = [(p.read_bytes(), "image/png" if p.suffix.lower() == ".png" else "image/jpeg")
           for p in _FRAMES]  # fmt: skip
_PHASES = [(float(s), int(u)) for s, u in
           (x.split(":") for x in os.environ["CVLOOP_LT_PHASES"].split(","))]  # fmt: skip
_MAX = int(os.environ.get("CVLOOP_LT_MAX_REQUESTS", "0") or 0)
_RUN = os.environ["CVLOOP_LT_RUN"]
_DAY = dt.datetime.fromisoformat(os.environ["CVLOOP_LT_DAY"]).replace(tzinfo=dt.UTC)
_COUNTER = itertools.count()
_ACKED: list[dict] = []


class Camera(FastHttpUser):
    """One camera sending frames as fast as it is answered (a closed loop)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.camera = f"lt-cam-{next(_COUNTER) % 64:02d}"

    @task
    def detect(self) -> None:
        i = next(_COUNTER)
        if _MAX and i >= _MAX:
            self.environment.runner.quit()
            return
        body, ctype = _IMAGES[i % len(_IMAGES)]
        key = f"loadtest/{_RUN}/{i:07d}.jpg"
        ts = int((_DAY + dt.timedelta(milliseconds=i)).timestamp() * 1000)
        query = urlencode({"camera": self.camera, "ts": ts, "frame_key": key})
        with self.client.post(f"/v1/detect?{query}", data=body, headers={"content-type": ctype},
                              name="/v1/detect", catch_response=True) as r:  # fmt: skip
            if r.status_code == 200:
                version = (r.json() or {}).get("model_version")
                _ACKED.append({"key": key, "version": version, "t": time.time()})
                r.success()
            elif r.status_code == 503:
                r.failure("503 overloaded (back-pressure)")
            else:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:120]}")


class Phases(LoadTestShape):
    """The phases of ``CVLOOP_LT_PHASES`` back to back, then stop."""

    def tick(self):
        t = self.get_run_time()
        for seconds, users in _PHASES:
            if t < seconds:
                return users, max(1, users)  # all users of a phase within a second
            t -= seconds
        return None


@events.test_stop.add_listener
def _write_acked(**_kw) -> None:
    path = Path(os.environ["CVLOOP_LT_ACKED"])
    path.write_text("".join(json.dumps(a) + "\n" for a in _ACKED))
