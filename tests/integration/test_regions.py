"""A region's frames in their own S3 bucket (loopback server, its own endpoint setting), the
rest in the main store: the fleet writes them there, collect reads both, and Label Studio
shows a region frame to the reviewer straight from the region's bucket."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import httpx

from cvloop.adapters.cameras import register
from cvloop.adapters.frame_keys import read_frame
from cvloop.adapters.regions import RegionalStorage
from cvloop.adapters.storage import LocalStorage, open_storage
from cvloop.config.settings import load_settings
from cvloop.sim.fleet.generate import FleetConfig, generate_fleet
from cvloop.stages.collect import collect
from tests.conftest import context


def test_a_region_in_its_own_bucket_is_written_collected_and_reviewed(
    stack_client_env, monkeypatch, tmp_path
):
    stack = stack_client_env
    # a main store beside the stack's (Label Studio serves local files from that folder)
    main = Path(load_settings().frame_store_uri).parent / f"store-regions-{uuid.uuid4().hex[:6]}"
    bucket = f"eu-west-{uuid.uuid4().hex[:8]}"
    cfg_file = tmp_path / "regions.yaml"
    cfg_file.write_text(
        "regions:\n  eu-west:\n"
        f"    storage_uri: s3://{bucket}/frames-root\n"
        f"    endpoint_url: {stack.s3_endpoint}\n"
    )
    monkeypatch.setenv("CVLOOP_STORAGE_URI", str(main))
    monkeypatch.setenv("CVLOOP_REGIONS_FILE", str(cfg_file))
    monkeypatch.delenv("CVLOOP_S3_ENDPOINT_URL")  # the region's endpoint comes from the file

    store = context().frame_store(create_bucket=True)
    assert isinstance(store, RegionalStorage)
    register(store, "cam-02", "north-dock", "eu-west", "test", "dock 7 opened")

    fleet = FleetConfig(seed=5, cameras=("cam-01", "cam-02"), bursts_per_day=2,
                        frames_per_burst=2, image_size=96)  # fmt: skip
    day = dt.date(2026, 10, 5)
    rep = generate_fleet(fleet, day, 2, context().frame_store, str(tmp_path / "truth"), workers=2)
    assert rep.frames_written == 16

    eu = open_storage(f"s3://{bucket}/frames-root", endpoint_url=stack.s3_endpoint)
    home = LocalStorage(main)
    assert {k.split("/")[1] for k in eu.keys("frames/")} == {"cam-02"}
    assert {k.split("/")[1] for k in home.keys("frames/")} == {"cam-01"}
    assert len(eu.keys("frames/")) == len(home.keys("frames/")) == 8
    assert home.exists("fleet/cameras.json")  # the registry stays in the main store

    # a rerun writes nothing twice (the fleet sees the region's frames where they are)
    again = generate_fleet(fleet, day, 2, context().frame_store, str(tmp_path / "truth"))
    assert (again.frames_written, again.frames_skipped) == (0, 16)

    got = collect(context().store, day + dt.timedelta(days=2), 2, near_dup_bits=-1)
    by_cam = {c: sum(1 for f in got.collected if f.camera == c) for c in ("cam-01", "cam-02")}
    assert by_cam == {"cam-01": 8, "cam-02": 8}, got.summary()
    key = next(f.key for f in got.collected if f.camera == "cam-02")
    assert read_frame(context().store, key) == eu.get_bytes(key)

    # `cvloop status` says where frames live
    from cvloop.stages.status import production_status, status_text

    status = production_status(context())
    assert status["frames"] == {"store": str(main), "regions": {"eu-west": eu.uri}}
    assert f"regions eu-west: s3://{bucket}/frames-root" in status_text(status)

    from cvloop.adapters.labelstudio import TaskSpec, image_url

    queue = context().labelstudio
    project = queue.ensure_project(f"cvloop regions {bucket}", ["crate", "barrel", "cone"])
    try:
        queue.connect_storage(project, store)
        queue.connect_storage(project, store)  # idempotent
        assert len(queue.client.import_storage.s3.list(project=project)) == 1
        assert len(queue.client.import_storage.local.list(project=project)) == 1
        url = image_url(store, key)
        assert url == f"s3://{bucket}/frames-root/{key}"
        queue.import_tasks(project, [TaskSpec("sha-r", url, 96, 96, [], [], {})], "m/1", 10)
        shown = queue.client.tasks.get(id=queue.tasks(project)[0][0]).data["image"]
        token = load_settings().label_studio_token()
        resolved = httpx.get(httpx.URL(stack.label_studio_url).join(shown),
                             headers={"Authorization": f"Token {token}"},
                             follow_redirects=True)  # fmt: skip
        assert resolved.status_code == 200, resolved.text[:300]
        assert resolved.content == eu.get_bytes(key)
    finally:
        queue.client.projects.delete(id=project)
