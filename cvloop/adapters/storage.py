"""Object storage behind one small interface: a local folder or S3 (boto3).

The frame store, the inference log, rollout manifests and reports all go through
:class:`Storage`. Which implementation is used is decided in one place,
:func:`open_storage`, from a URI: a local path (``/data/store``, ``file:///data/store``) or
``s3://bucket/prefix``. S3 honours an endpoint URL, so MinIO and the loopback test server
work the same way as AWS.

Keys are ``/``-separated relative paths. They are validated on every call: absolute paths,
``..``/``.`` segments, empty segments, backslashes and control characters are rejected, so a
key can never escape the storage root.
"""

from __future__ import annotations

import abc
import datetime as dt
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cvloop.core.errors import StorageError

_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_key(key: str, *, prefix: bool = False) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`StorageError`.

    Args:
        key: the key, e.g. ``cam-01/2026-11-02/1730505600000.jpg``.
        prefix: allow ``""`` and a trailing ``/`` (for listing).
    """
    if not isinstance(key, str):
        raise StorageError(f"storage key must be a string, got {type(key).__name__}: {key!r}")
    if prefix and key == "":
        return key
    fix = "use a relative key like 'camera/2026-01-31/frame.jpg'"
    if key == "":
        raise StorageError("storage key is empty", fix=fix)
    if _BAD_CHARS.search(key):
        raise StorageError(
            f"storage key {key!r} contains a backslash or control character", fix=fix
        )
    if key.startswith("/"):
        raise StorageError(f"storage key {key!r} is absolute", fix=fix)
    body = key[:-1] if (prefix and key.endswith("/")) else key
    parts = body.split("/")
    if any(p == "" for p in parts):
        raise StorageError(
            f"storage key {key!r} has an empty path segment ('//' or a trailing '/')", fix=fix
        )
    if any(p in (".", "..") for p in parts):
        raise StorageError(f"storage key {key!r} contains a '.' or '..' segment", fix=fix)
    return key


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object."""

    key: str
    size: int
    modified: dt.datetime


class Storage(abc.ABC):
    """The storage contract; see ``tests/test_storage_contract.py`` for what it promises."""

    uri: str

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically (readers see the old or the new object)."""

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read the object at ``key``; a missing key raises :class:`StorageError`."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in lexicographic key order."""

    @abc.abstractmethod
    def put_file(self, key: str, path: Path) -> None: ...

    @abc.abstractmethod
    def get_file(self, key: str, path: Path) -> Path: ...

    @abc.abstractmethod
    def url(self, key: str) -> str:
        """A URI naming the object (``file://…`` or ``s3://…``) for reports and lineage."""

    def local_path(self, key: str) -> Path | None:
        """The object's path on this machine's filesystem, when it has one."""
        return None

    @abc.abstractmethod
    def compare_and_put(
        self, key: str, data: bytes, expect: Callable[[bytes | None], bool]
    ) -> bool:
        """Write ``data`` at ``key`` only if ``expect(current bytes, or None when absent)``
        holds, atomically against every other ``compare_and_put`` of ``key`` (a folder: a
        lock file; S3: a conditional write on the ETag read). False, and nothing written,
        when it does not hold or another writer won in between."""

    def put_text(self, key: str, text: str) -> None:
        self.put_bytes(key, text.encode("utf-8"))

    def get_text(self, key: str) -> str:
        return self.get_bytes(key).decode("utf-8")

    def keys(self, prefix: str = "") -> list[str]:
        return [o.key for o in self.list(prefix)]


class LocalStorage(Storage):
    """A folder on this machine."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StorageError(
                f"no object at {self.url(key)}", fix="check the key, or that the producer wrote it"
            ) from None
        except IsADirectoryError:
            raise StorageError(f"{self.url(key)} is a folder, not an object") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def compare_and_put(
        self, key: str, data: bytes, expect: Callable[[bytes | None], bool]
    ) -> bool:
        import fcntl
        import hashlib

        path = self._path(key)
        locks = self.root / ".locks"  # hidden: never listed
        locks.mkdir(parents=True, exist_ok=True)
        lock = locks / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")
        with open(lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
            try:
                current = path.read_bytes() if path.is_file() else None
                if not expect(current):
                    return False
                self.put_bytes(key, data)
                return True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_key(prefix, prefix=True)
        if not self.root.exists():
            return
        # Walk only the folder the prefix names, then filter by the string prefix.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.exists():
            return
        found = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue  # in-flight temp files
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(key)
        for key in sorted(found):
            st = (self.root / key).stat()
            yield ObjectInfo(key, st.st_size, dt.datetime.fromtimestamp(st.st_mtime, dt.UTC))

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_file(self, key: str, path: Path) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"no object at {self.url(key)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)
        return path

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


class S3Storage(Storage):
    """An S3 bucket (and optional key prefix) through boto3; endpoint URL configurable."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        create_bucket: bool = False,
        endpoint_url: str | None = None,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not bucket:
            raise StorageError("S3 storage URI has no bucket", fix="use s3://<bucket>/<prefix>")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint_url = endpoint_url  # None: AWS's own (the credentials chain decides)
        # boto3 keyword arguments (credentials, region, endpoint) to build the client with in
        # a process that received this object pickled (the fleet's worker processes)
        self._client_kwargs = dict(
            client_kwargs or ({"endpoint_url": endpoint_url} if endpoint_url else {})
        )
        self._client = client
        if create_bucket:
            self.ensure_bucket()

    @property
    def client_kwargs(self) -> dict[str, Any]:
        """The boto3 client arguments (endpoint, credentials, region) this store uses."""
        return dict(self._client_kwargs)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", **self._client_kwargs)
        return self._client

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(what, key, exc) from None

    def _error(self, what: str, key: str, exc: Exception) -> StorageError:
        from botocore.exceptions import ClientError, EndpointConnectionError

        if isinstance(exc, EndpointConnectionError):
            return StorageError(
                f"cannot reach the S3 endpoint for {self.uri}: {exc}",
                fix="start it (`cvloop services up`) or fix CVLOOP_S3_ENDPOINT_URL",
                transient=True,
            )
        if not isinstance(exc, ClientError):
            return StorageError(f"S3 {what} of {self.url(key)} failed: {exc}")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NotFound"):
            return StorageError(
                f"no object at {self.url(key)}", fix="check the key, or that the producer wrote it"
            )
        if code == "NoSuchBucket":
            return StorageError(
                f"bucket {self.bucket!r} does not exist",
                fix=f"create it (aws s3 mb s3://{self.bucket}) or fix CVLOOP_STORAGE_URI",
            )
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return StorageError(
                f"access denied to {self.url(key)} ({code})",
                fix="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
            )
        return StorageError(f"S3 {what} of {self.url(key)} failed: {code} {exc}")

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(
            "put", key, self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data
        )

    def get_bytes(self, key: str) -> bytes:
        resp = self._call(
            "get", key, self.client.get_object, Bucket=self.bucket, Key=self._key(key)
        )
        return resp["Body"].read()

    def compare_and_put(
        self, key: str, data: bytes, expect: Callable[[bytes | None], bool]
    ) -> bool:
        from botocore.exceptions import ClientError

        try:
            resp = self._call("get", key, self.client.get_object, Bucket=self.bucket,
                              Key=self._key(key))  # fmt: skip
            current, etag = resp["Body"].read(), resp["ETag"]
        except StorageError as exc:
            if not exc.message.startswith("no object at"):
                raise
            current, etag = None, None
        if not expect(current):
            return False
        cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}  # S3 conditional writes
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **cond)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False  # another writer won between the read and the write
            raise self._error("put", key, exc) from None
        return True

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key, self.client.head_object, Bucket=self.bucket, Key=self._key(key))
            return True
        except StorageError as exc:
            if exc.message.startswith("no object at"):
                return False
            raise

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_key(prefix, prefix=True)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"][strip:], int(obj["Size"]), obj["LastModified"])
        except (ClientError, BotoCoreError) as exc:
            raise self._error("list", prefix or ".", exc) from None

    def put_file(self, key: str, path: Path) -> None:
        self._call(
            "upload",
            key,
            self.client.upload_file,
            Filename=str(path),
            Bucket=self.bucket,
            Key=self._key(key),
        )

    def get_file(self, key: str, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.get_bytes(key)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def open_storage(
    uri: str,
    *,
    endpoint_url: str | None = None,
    client_kwargs: dict[str, Any] | None = None,
    create_bucket: bool = False,
) -> Storage:
    """The storage named by ``uri``: ``/path``, ``file:///path`` or ``s3://bucket[/prefix]``.

    Args:
        endpoint_url: S3 endpoint (MinIO, a loopback test server); None for AWS itself.
        client_kwargs: boto3 client arguments (credentials, region; the composition root
            builds them from the settings, :meth:`cvloop.config.settings.Settings.s3_client_kwargs`).
        create_bucket: create the S3 bucket if it does not exist (dev and tests).

    The frame store with its regions is :attr:`cvloop.context.Context.store`.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        import boto3

        from cvloop.config.settings import s3_client_kwargs

        kwargs = dict(client_kwargs or s3_client_kwargs(endpoint_url))
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        client = boto3.client("s3", **kwargs)
        return S3Storage(parsed.netloc, parsed.path, client=client, create_bucket=create_bucket,
                         endpoint_url=endpoint_url, client_kwargs=kwargs)  # fmt: skip
    if parsed.scheme == "file":
        return LocalStorage(parsed.path)
    if parsed.scheme in ("",) or (len(parsed.scheme) == 1 and os.name == "nt"):
        return LocalStorage(uri)
    raise StorageError(
        f"unsupported storage URI {uri!r}",
        fix="use a local path, file:///path or s3://bucket/prefix",
    )
