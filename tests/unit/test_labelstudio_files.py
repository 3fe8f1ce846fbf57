"""Label Studio's document root holds links to the frame roots and nothing else."""

from __future__ import annotations

import os

import pytest

from cvloop.adapters.labelstudio import link_frame_roots
from cvloop.core.errors import ConfigError


def test_links_name_each_root_by_its_folder_and_follow_the_configuration(tmp_path):
    files = tmp_path / "home" / "labelstudio-files"
    main, eu = tmp_path / "data" / "store", tmp_path / "data" / "store-eu"
    links = link_frame_roots(files, [main, eu])
    assert [p.name for p in links] == ["store", "store-eu"]
    assert files.stat().st_mode & 0o777 == 0o700
    assert {p.name: os.readlink(p) for p in files.iterdir()} == {
        "store": str(main), "store-eu": str(eu)
    }  # fmt: skip
    assert main.is_dir()  # made, so that Label Studio accepts the storage at once

    # the store moved and the region left: `services up` follows
    moved = tmp_path / "disk2" / "store"
    link_frame_roots(files, [moved])
    assert {p.name: os.readlink(p) for p in files.iterdir()} == {"store": str(moved)}
    # a store connected later is added, the others kept
    link_frame_roots(files, [eu], prune=False)
    assert sorted(p.name for p in files.iterdir()) == ["store", "store-eu"]


def test_a_name_clash_or_a_stray_file_is_refused_never_hidden(tmp_path):
    files = tmp_path / "labelstudio-files"
    link_frame_roots(files, [tmp_path / "a" / "store"])
    with pytest.raises(ConfigError, match="already links 'store'"):
        link_frame_roots(files, [tmp_path / "b" / "store"], prune=False)
    with pytest.raises(ConfigError, match="share the folder name"):
        link_frame_roots(files, [tmp_path / "a" / "store", tmp_path / "b" / "store"])
    (files / "label_studio.sqlite3").write_bytes(b"")  # someone put a file in the root
    with pytest.raises(ConfigError, match="not a link") as info:
        link_frame_roots(files, [tmp_path / "a" / "store"])
    assert "move" in info.value.fix
    assert (files / "label_studio.sqlite3").exists()
