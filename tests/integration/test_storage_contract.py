"""One contract, two implementations: a local folder and S3 on the loopback server."""

from __future__ import annotations

import uuid

import pytest

from cvloop.adapters.storage import LocalStorage, S3Storage, Storage, open_storage
from cvloop.core.errors import StorageError


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Storage:
    if request.param == "local":
        return open_storage(str(tmp_path / "store"))
    stack = request.getfixturevalue("stack_client_env")
    bucket = f"contract-{uuid.uuid4().hex[:10]}"
    return open_storage(
        f"s3://{bucket}/some/prefix", endpoint_url=stack.s3_endpoint, create_bucket=True
    )


def test_kind(store):
    assert isinstance(store, LocalStorage | S3Storage)


def test_put_get_roundtrip_binary(store):
    data = bytes(range(256)) * 40
    store.put_bytes("cam-01/2026-11-02/0001.jpg", data)
    assert store.get_bytes("cam-01/2026-11-02/0001.jpg") == data
    assert store.exists("cam-01/2026-11-02/0001.jpg")


def test_overwrite_replaces(store):
    store.put_text("manifest.json", '{"v": 1}')
    store.put_text("manifest.json", '{"v": 2}')
    assert store.get_text("manifest.json") == '{"v": 2}'
    assert store.keys() == ["manifest.json"]


def test_missing_object_is_a_clear_error(store):
    with pytest.raises(StorageError, match="no object at"):
        store.get_bytes("nope/missing.jpg")
    assert not store.exists("nope/missing.jpg")


def test_delete_is_idempotent(store):
    store.put_bytes("a/b.bin", b"x")
    store.delete("a/b.bin")
    store.delete("a/b.bin")
    assert not store.exists("a/b.bin")
    assert store.keys("a/") == []


def test_list_by_prefix_sorted_with_sizes(store):
    for key, size in [
        ("cam-02/x.jpg", 3),
        ("cam-01/b.jpg", 2),
        ("cam-01/a.jpg", 1),
        ("cam-10/z.jpg", 4),
        ("other.txt", 5),
    ]:
        store.put_bytes(key, b"x" * size)
    assert store.keys("cam-01/") == ["cam-01/a.jpg", "cam-01/b.jpg"]
    # a prefix is a string prefix, not only a folder
    assert store.keys("cam-0") == ["cam-01/a.jpg", "cam-01/b.jpg", "cam-02/x.jpg"]
    infos = {o.key: o.size for o in store.list("")}
    assert infos == {
        "cam-01/a.jpg": 1,
        "cam-01/b.jpg": 2,
        "cam-02/x.jpg": 3,
        "cam-10/z.jpg": 4,
        "other.txt": 5,
    }
    assert store.keys("none/") == []


def test_listing_pages_past_1000_objects(store):
    for i in range(1105):
        store.put_bytes(f"many/{i:05d}.bin", b"")
    keys = store.keys("many/")
    assert len(keys) == 1105
    assert keys == sorted(keys)


def test_put_file_get_file(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"frame-bytes" * 1000)
    store.put_file("files/src.bin", src)
    dest = store.get_file("files/src.bin", tmp_path / "out" / "dest.bin")
    assert dest.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("bad", ["/abs.jpg", "../up.jpg", "a//b.jpg", ""])
def test_invalid_keys_rejected_before_any_io(store, bad):
    with pytest.raises(StorageError):
        store.put_bytes(bad, b"x")


def test_compare_and_put_writes_only_on_what_the_writer_read(store):
    assert store.compare_and_put("m.json", b"v1", lambda cur: cur is None)  # create only
    assert not store.compare_and_put("m.json", b"v1-again", lambda cur: cur is None)
    assert store.get_bytes("m.json") == b"v1"
    assert not store.compare_and_put("m.json", b"v3", lambda cur: cur == b"v2")  # stale
    assert store.compare_and_put("m.json", b"v2", lambda cur: cur == b"v1")
    assert store.get_bytes("m.json") == b"v2"


def test_two_writers_racing_on_one_key_lose_no_update(store):
    """Eight threads each add 5 to a counter by read-modify-write through compare_and_put
    (retrying when another won): every increment lands, none is overwritten."""
    import threading

    if isinstance(store, S3Storage):
        pytest.skip(
            "the loopback S3 server (moto) checks If-Match and writes in two steps without a "
            "lock, so two racing conditional puts can both succeed there (measured: 39 of 40 "
            "increments); AWS S3 makes the check and the write one atomic step"
        )

    store.put_bytes("counter", b"0")

    def add(times: int):
        for _ in range(times):
            while True:
                seen = store.get_bytes("counter")
                nxt = str(int(seen) + 1).encode()
                if store.compare_and_put("counter", nxt, lambda cur, seen=seen: cur == seen):
                    break

    threads = [threading.Thread(target=add, args=(5,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get_bytes("counter") == b"40"
    assert store.keys() == ["counter"]  # the lock files are not objects


def test_url_names_the_object(store):
    store.put_bytes("k/v.txt", b"1")
    url = store.url("k/v.txt")
    assert url.endswith("k/v.txt")
    assert url.startswith(("file://", "s3://"))


def test_s3_prefix_isolates_keys(stack_client_env):
    bucket = f"iso-{uuid.uuid4().hex[:10]}"
    a = open_storage(
        f"s3://{bucket}/region-a", endpoint_url=stack_client_env.s3_endpoint, create_bucket=True
    )
    b = open_storage(f"s3://{bucket}/region-b", endpoint_url=stack_client_env.s3_endpoint)
    a.put_bytes("cam/1.jpg", b"a")
    assert b.keys() == []
    assert a.url("cam/1.jpg") == f"s3://{bucket}/region-a/cam/1.jpg"


def test_s3_missing_bucket_names_the_fix(stack_client_env):
    store = open_storage("s3://no-such-bucket-cvloop", endpoint_url=stack_client_env.s3_endpoint)
    with pytest.raises(StorageError) as info:
        store.put_bytes("a.txt", b"x")
    assert "no-such-bucket-cvloop" in str(info.value)
    assert "fix:" in str(info.value)


def test_s3_endpoint_down_is_a_clear_error(stack_client_env):
    from tests.conftest import free_port

    store = open_storage("s3://bucket", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError) as info:
        store.get_bytes("a.txt")
    assert "cannot reach the S3 endpoint" in str(info.value)
