"""The fleet writes the same frame store to S3 (loopback server) as to a local folder."""

from __future__ import annotations

import datetime as dt
import uuid

from cvloop.adapters.storage import LocalStorage, open_storage
from cvloop.sim.fleet.generate import FleetConfig, Scenario, generate_fleet
from tests.conftest import context


def test_fleet_on_s3_equals_fleet_on_disk(stack_client_env, tmp_path):
    cfg = FleetConfig(
        seed=5,
        cameras=("cam-01", "cam-02"),
        bursts_per_day=2,
        frames_per_burst=2,
        image_size=96,
        scenarios=(Scenario.parse("night@2026-10-06:cam-02"),),
    )
    day = dt.date(2026, 10, 5)
    bucket = f"fleet-{uuid.uuid4().hex[:8]}"
    endpoint = stack_client_env.s3_endpoint
    rep = generate_fleet(
        cfg, day, 2, f"s3://{bucket}/prod", f"s3://{bucket}-truth", endpoint_url=endpoint, workers=2
    )
    generate_fleet(cfg, day, 2, str(tmp_path / "local"), str(tmp_path / "truth"))
    s3 = open_storage(f"s3://{bucket}/prod", endpoint_url=endpoint)
    local = LocalStorage(tmp_path / "local")
    keys = s3.keys("frames/")
    assert rep.frames_written == len(keys) == 16
    assert keys == local.keys("frames/")
    assert all(s3.get_bytes(k) == local.get_bytes(k) for k in keys)
    assert rep.scenario_frames == {"night": 4}
    truth = open_storage(f"s3://{bucket}-truth", endpoint_url=endpoint)
    assert len(truth.keys()) == 4


def test_label_studio_reviews_frames_straight_from_s3(stack_client_env):
    """An S3 frame store: the review project gets an S3 import storage (presigned URLs,
    the endpoint of the S3 server) and a task's image resolves to the frame's bytes."""
    import httpx
    import numpy as np

    from cvloop.adapters.labelstudio import TaskSpec, image_url
    from cvloop.config.settings import load_settings

    bucket = f"review-{uuid.uuid4().hex[:8]}"
    store = context().storage(f"s3://{bucket}/prod", create_bucket=True)
    import cv2

    jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
    key = "frames/cam-01/2026-10-05/1759622400000.jpg"
    store.put_bytes(key, jpeg)
    queue = context().labelstudio
    project = queue.ensure_project(f"cvloop s3 {bucket}", ["crate", "barrel", "cone"])
    try:
        queue.connect_storage(project, store)
        queue.connect_storage(project, store)  # idempotent
        assert len(queue.client.import_storage.s3.list(project=project)) == 1
        url = image_url(store, key)
        assert url == f"s3://{bucket}/prod/{key}"
        queue.import_tasks(project, [TaskSpec("sha-1", url, 64, 48, [], [], {})], "m/1", 10)
        task_id = queue.tasks(project)[0][0]
        token = load_settings().label_studio_token()
        # what the labeling UI loads: Label Studio rewrites the s3:// URI to its own
        # resolver, which redirects to a presigned URL of the S3 server
        shown = queue.client.tasks.get(id=task_id).data["image"]
        assert not shown.startswith("s3://")
        resolved = httpx.get(
            httpx.URL(stack_client_env.label_studio_url).join(shown),
            headers={"Authorization": f"Token {token}"},
            follow_redirects=True,
        )
        assert resolved.status_code == 200, resolved.text[:300]
        assert resolved.content == jpeg
    finally:
        queue.client.projects.delete(id=project)
