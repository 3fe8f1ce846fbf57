"""Per-region storage roots: configured in a regions file, routed by the camera registry."""

from __future__ import annotations

import pytest

from cvloop.adapters.cameras import register
from cvloop.adapters.regions import RegionalStorage, load_regions, routed_camera
from cvloop.adapters.storage import LocalStorage, open_storage
from cvloop.config.settings import load_settings
from cvloop.core.errors import ConfigError
from tests.conftest import REPO, context


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    """A main store and an eu-west root, configured through CVLOOP_REGIONS_FILE."""
    main, eu = tmp_path / "store", tmp_path / "eu-west"
    cfg = tmp_path / "regions.yaml"
    cfg.write_text(f"regions:\n  eu-west:\n    storage_uri: {eu}\n")
    monkeypatch.setenv("CVLOOP_STORAGE_URI", str(main))
    monkeypatch.setenv("CVLOOP_REGIONS_FILE", str(cfg))
    store = context().store
    register(store, "eu-01", "north-dock", "eu-west", "ops", "dock 7 opened")
    register(store, "us-01", "default")
    return store, LocalStorage(main), LocalStorage(eu)


def test_a_region_cameras_frames_go_to_its_root_and_the_rest_stays_home(fleet):
    store, main, eu = fleet
    assert isinstance(store, RegionalStorage)
    store.put_bytes("frames/eu-01/2026-11-02/1.jpg", b"eu")
    store.put_bytes("videos/eu-01/2026-11-02/2.mp4", b"clip")
    store.put_bytes("frames/us-01/2026-11-02/1.jpg", b"us")
    store.put_text("inference-log/2026-11-02/part.parquet", "log")
    assert eu.keys() == ["frames/eu-01/2026-11-02/1.jpg", "videos/eu-01/2026-11-02/2.mp4"]
    assert "frames/us-01/2026-11-02/1.jpg" in main.keys("frames/")
    assert not main.exists("frames/eu-01/2026-11-02/1.jpg")
    assert main.exists("inference-log/2026-11-02/part.parquet")
    # every reader sees one store: by key, by camera and across cameras
    assert store.get_bytes("frames/eu-01/2026-11-02/1.jpg") == b"eu"
    assert (
        store.local_path("frames/eu-01/2026-11-02/1.jpg")
        == eu.root / "frames/eu-01/2026-11-02/1.jpg"
    )
    assert store.keys("frames/") == [
        "frames/eu-01/2026-11-02/1.jpg",
        "frames/us-01/2026-11-02/1.jpg",
    ]
    assert store.keys("frames/eu-01/2026-11-02/") == ["frames/eu-01/2026-11-02/1.jpg"]
    assert {k.split("/")[1] for k in store.keys("videos/")} == {"eu-01"}
    assert [k for k in store.keys() if k.startswith(("frames/", "videos/"))] == [
        "frames/eu-01/2026-11-02/1.jpg",
        "frames/us-01/2026-11-02/1.jpg",
        "videos/eu-01/2026-11-02/2.mp4",
    ]


def test_frames_written_before_the_camera_moved_are_still_found(fleet):
    store, main, eu = fleet
    store.put_bytes("frames/us-01/2026-11-01/1.jpg", b"before")
    register(store, "us-01", "default", "eu-west", "ops", "moved")
    store.put_bytes("frames/us-01/2026-11-02/1.jpg", b"after")
    assert eu.exists("frames/us-01/2026-11-02/1.jpg") and main.exists(
        "frames/us-01/2026-11-01/1.jpg"
    )
    assert store.get_bytes("frames/us-01/2026-11-01/1.jpg") == b"before"
    assert store.exists("frames/us-01/2026-11-01/1.jpg")
    assert store.keys("frames/us-01/") == [
        "frames/us-01/2026-11-01/1.jpg",
        "frames/us-01/2026-11-02/1.jpg",
    ]
    store.delete("frames/us-01/2026-11-01/1.jpg")
    assert not store.exists("frames/us-01/2026-11-01/1.jpg")


def test_a_region_not_in_the_file_keeps_its_frames_in_the_main_store(fleet):
    store, main, eu = fleet
    register(store, "ap-01", "default", "ap-south")
    store.put_bytes("frames/ap-01/2026-11-02/1.jpg", b"ap")
    assert main.exists("frames/ap-01/2026-11-02/1.jpg") and eu.keys() == []


def test_without_a_regions_file_the_frame_store_is_one_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CVLOOP_STORAGE_URI", str(tmp_path / "store"))
    monkeypatch.delenv("CVLOOP_REGIONS_FILE", raising=False)
    monkeypatch.setenv("CVLOOP_PARAMS", str(REPO / "params.yaml"))
    monkeypatch.setenv("CVLOOP_PROJECT_DIR", str(tmp_path))  # no regions.yaml there
    assert isinstance(context().store, LocalStorage)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("regions:\n  eu-west: {}\n", "region 'eu-west' has no storage_uri"),
        ("regions:\n  EU West:\n    storage_uri: s3://b\n", "not a valid region name"),
        (
            "regions:\n  eu:\n    storage_uri: s3://b\n    bucket: x\n",
            r"unknown key\(s\) \['bucket'\]",
        ),
        ("regions:\n  eu:\n    storage_uri: relative/dir\n", "must be s3://bucket"),
        ("regoins: {}\n", r"unknown key\(s\) \['regoins'\]"),
        ("regions: [eu]\n", "expected a mapping"),
        ("regions:\n  eu: [\n", "not valid YAML"),
        ("regions:\n  eu:\n    storage_uri: MAIN\n", "is the main frame store"),
    ],
)
def test_a_bad_regions_file_names_the_region_and_the_key(tmp_path, text, error):
    path = tmp_path / "regions.yaml"
    path.write_text(text.replace("MAIN", str(tmp_path / "store")))
    with pytest.raises(ConfigError, match=error) as err:
        load_regions(path, main_uri=str(tmp_path / "store"))
    assert str(path) in str(err.value)


def test_a_missing_regions_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CVLOOP_REGIONS_FILE", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="is not a file"):
        load_regions(load_settings().regions_path())
    assert isinstance(open_storage(str(tmp_path / "x")), LocalStorage)  # not the frame store
    monkeypatch.setenv("CVLOOP_STORAGE_URI", str(tmp_path / "store"))
    with pytest.raises(ConfigError, match=r"CVLOOP_REGIONS_FILE=.*nope\.yaml is not a file"):
        context().frame_store()


@pytest.mark.parametrize(
    ("key", "camera"),
    [
        ("frames/cam-01/2026-11-02/1.jpg", "cam-01"),
        ("videos/cam-01/2026-11-02/1.mp4", "cam-01"),
        ("frames/cam-01/", "cam-01"),
        ("frames/", None),
        ("inference-log/2026-11-02/a.parquet", None),
        ("fleet/cameras.json", None),
    ],
)
def test_which_keys_follow_their_camera(key, camera):
    assert routed_camera(key) == camera


TEAM_LAYOUT = ("site-a/{camera}/{date}/{name}.{ext}", "clips/{camera}/{ts_s}.{ext}")


@pytest.mark.parametrize(
    ("key", "camera"),
    [
        ("site-a/dock-eu/2031-02-10/IMG_00001.jpg", "dock-eu"),
        ("site-a/dock-eu/notes.txt", "dock-eu"),  # beside its camera's frames
        ("clips/dock-eu/1928480400.mp4", "dock-eu"),
        ("frames/dock-eu/2031-02-10/1.jpg", None),  # cvloop's layout is not this team's
        ("rollout/manifest.json", None),
    ],
)
def test_a_teams_key_layout_says_which_keys_follow_their_camera(key, camera):
    from cvloop.adapters.regions import CameraKeys

    assert CameraKeys(TEAM_LAYOUT).camera(key) == camera


def test_a_layout_that_starts_with_the_camera_routes_only_keys_that_fit():
    from cvloop.adapters.regions import CameraKeys

    keys = CameraKeys(("{camera}/{date}/{name}.{ext}", "{camera}/clips/{ts_s}.{ext}"))
    assert keys.camera("dock-eu/2031-02-10/IMG_1.png") == "dock-eu"
    assert keys.camera("rollout/manifest.json") is None  # cvloop's own files stay home
    assert keys.camera("runs/retrain/x/selected.parquet") is None
    assert keys.camera_prefix("dock-eu/2031-02-10/") == "dock-eu"
    assert keys.spans_cameras("") and not keys.spans_cameras("dock-eu/")


def test_a_region_follows_the_teams_key_layout(tmp_path, monkeypatch):
    """With the team's own layout in params (frames.images / frames.videos), their region's
    frames go to the region's root, and every listing sees one store."""
    import yaml

    from cvloop.config.params import load_params, with_overrides

    main, eu = tmp_path / "store", tmp_path / "eu-west"
    cfg = tmp_path / "regions.yaml"
    cfg.write_text(f"regions:\n  eu-west:\n    storage_uri: {eu}\n")
    params = with_overrides(load_params(REPO / "params.yaml"), {"frames": {
        "images": TEAM_LAYOUT[0], "videos": TEAM_LAYOUT[1], "timestamp": "exif"}})  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump(by_alias=True,
                                                                           mode="json")))  # fmt: skip
    monkeypatch.setenv("CVLOOP_PARAMS", str(tmp_path / "params.yaml"))
    monkeypatch.setenv("CVLOOP_STORAGE_URI", str(main))
    monkeypatch.setenv("CVLOOP_REGIONS_FILE", str(cfg))
    store = context().store
    register(store, "dock-eu", "north-dock", "eu-west", "ops", "dock 7 opened")
    store.put_bytes("site-a/dock-eu/2031-02-10/IMG_1.jpg", b"eu")
    store.put_bytes("clips/dock-eu/1928480400.mp4", b"clip")
    store.put_bytes("site-a/dock-us/2031-02-10/IMG_2.jpg", b"us")
    store.put_text("rollout/manifest.json", "{}")
    eu_root, main_root = LocalStorage(eu), LocalStorage(main)
    assert eu_root.keys() == ["clips/dock-eu/1928480400.mp4", "site-a/dock-eu/2031-02-10/IMG_1.jpg"]
    assert main_root.exists("site-a/dock-us/2031-02-10/IMG_2.jpg")
    assert main_root.exists("rollout/manifest.json")
    assert store.get_bytes("site-a/dock-eu/2031-02-10/IMG_1.jpg") == b"eu"
    assert store.keys("site-a/") == [
        "site-a/dock-eu/2031-02-10/IMG_1.jpg",
        "site-a/dock-us/2031-02-10/IMG_2.jpg",
    ]
    assert store.keys("site-a/dock-eu/") == ["site-a/dock-eu/2031-02-10/IMG_1.jpg"]
    assert store.keys("clips/") == ["clips/dock-eu/1928480400.mp4"]
