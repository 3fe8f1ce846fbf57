"""The fleet writes the same frame store to S3 (loopback server) as to a local folder."""

from __future__ import annotations

import datetime as dt
import uuid

from cvloop.fleet.generate import FleetConfig, Scenario, generate_fleet
from cvloop.storage import LocalStorage, open_storage


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
