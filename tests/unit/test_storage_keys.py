"""Storage keys can never escape the storage root."""

from __future__ import annotations

import pytest

from cvloop.adapters.storage import LocalStorage, validate_key
from cvloop.core.errors import StorageError


@pytest.mark.parametrize("key", ["a.jpg", "cam-01/2026-11-02/1730505600000.jpg", "a/b/c/d.parquet"])
def test_valid_keys(key):
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../outside.jpg", "'..' segment"),
        ("a/../../b", "'..' segment"),
        ("a/./b", "'.' or '..' segment"),
        ("a//b", "empty path segment"),
        ("a/b/", "empty path segment"),
        ("a\\b", "backslash"),
        ("a\x00b", "control character"),
    ],
)
def test_invalid_keys_are_rejected_with_reason(key, why):
    with pytest.raises(StorageError) as info:
        validate_key(key)
    assert why in str(info.value)
    assert "fix:" in str(info.value)


def test_prefixes_may_be_empty_or_end_with_slash():
    assert validate_key("", prefix=True) == ""
    assert validate_key("cam-01/", prefix=True) == "cam-01/"
    with pytest.raises(StorageError):
        validate_key("../", prefix=True)


def test_local_storage_refuses_escape(tmp_path):
    store = LocalStorage(tmp_path / "root")
    with pytest.raises(StorageError):
        store.put_bytes("../escaped.txt", b"x")
    assert not (tmp_path / "escaped.txt").exists()
