"""One way to reach files wherever they live: local paths, ``file://``, ``s3://`` (and S3-compatible stores), ``gs://``.

Everything goes through pyarrow filesystems, so the driver, the Ray workers and the catalog read and write the same
locations with the same code. S3 settings come from the standard environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` or ``AWS_PROFILE``, ``AWS_REGION``); GCS from
``GOOGLE_APPLICATION_CREDENTIALS`` and friends.

Atomicity: a local write goes to a temporary name and is renamed into place; an object-store PUT is atomic by itself
(an object is visible whole or not at all), so no rename is needed or possible there. Readers of a curated run trust
completion markers only (see :mod:`alchemist_data.writer`).
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path

from pyarrow import fs as pafs


class StorageError(ValueError):
    """A location cannot be used; the message names the URI and what to check."""


def is_uri(location: str) -> bool:
    return "://" in location


@dataclass(frozen=True)
class Location:
    """A folder or file on some filesystem: ``fs`` plus a path in that filesystem's own syntax."""

    fs: pafs.FileSystem
    path: str
    uri: str  # as the user wrote it (for messages and run.json)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> Location:
        path = posixpath.join(self.path, *parts)
        uri = self.uri.rstrip("/") + "/" + "/".join(parts) if parts else self.uri
        return Location(self.fs, path, uri)

    # -- reading ---------------------------------------------------------------------------------------------------
    def info(self) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path)
        except OSError as err:
            raise StorageError(explain(self.uri, err)) from err

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def list_files(self, suffix: str = "") -> list[Location]:
        """Files directly inside this folder whose name ends with ``suffix``, sorted by name (empty if no folder)."""
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=False)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as err:
            raise StorageError(explain(self.uri, err)) from err
        names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffix))
        return [self.join(n) for n in names]

    # -- writing ---------------------------------------------------------------------------------------------------
    def makedirs(self) -> None:
        if self.is_local:
            os.makedirs(self.path, exist_ok=True)
        # object stores have no folders: a key prefix exists as soon as an object under it does

    def write_bytes(self, data: bytes) -> None:
        """Write the whole object at once: readers see the old content or the new one, never a part."""
        if self.is_local:
            parent = os.path.dirname(self.path)
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f".{os.path.basename(self.path)}.tmp-{uuid.uuid4().hex[:8]}")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
            return
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def delete(self) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            pass


def resolve(location: str | os.PathLike[str]) -> Location:
    """A :class:`Location` for a local path or a URI (``s3://bucket/prefix``, ``gs://...``, ``file:///...``)."""
    text = os.fspath(location)
    if not is_uri(text):
        return Location(pafs.LocalFileSystem(), str(Path(text).expanduser().absolute()), text)
    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except (OSError, ValueError, TypeError) as err:
        raise StorageError(f"cannot open {text!r}: {err} (use a local path, file://, s3:// or gs://)") from err
    return Location(filesystem, path.rstrip("/"), text)


def _has_aws_credentials() -> bool:
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return True
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    shared = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
    return os.path.isfile(shared)


def explain(uri: str, err: BaseException) -> str:
    """An object-store failure as a message that names the URI and says what to check."""
    text = str(err)
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    if "NETWORK_CONNECTION" in text or "curlCode" in text or "Could not connect" in text:
        where = f" at {endpoint} (AWS_ENDPOINT_URL)" if endpoint else ""
        return f"cannot reach the object store{where} for {uri}: {text}. Check the endpoint and the network."
    if uri.startswith("s3://") and not _has_aws_credentials():
        return (
            f"cannot access {uri}: no AWS credentials are set (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            f"AWS_PROFILE). The store said: {text}"
        )
    if any(k in text for k in ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403")):
        return (
            f"access to {uri} was denied: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
            f"AWS_PROFILE) and their permissions. The store said: {text}"
        )
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return f"the bucket of {uri} does not exist: create it first. The store said: {text}"
    return f"cannot use {uri}: {text}"


def _bucket_of(loc: Location) -> str | None:
    if loc.is_local:
        return None
    return loc.path.split("/", 1)[0]


def check_readable_file(uri: str, what: str) -> Location:
    """Fail before any work when ``uri`` is not a readable file (missing, unreachable store, no credentials)."""
    loc = resolve(uri)
    info = loc.info()
    if info.type == pafs.FileType.NotFound:
        bucket = _bucket_of(loc)
        if bucket and resolve_bucket(loc, bucket).info().type == pafs.FileType.NotFound:
            raise StorageError(f"{what} {uri} does not exist: its bucket {bucket!r} does not exist")
        raise StorageError(f"{what} {uri} does not exist")
    if info.type != pafs.FileType.File:
        raise StorageError(f"{what} {uri} is not a file")
    return loc


def resolve_bucket(loc: Location, bucket: str) -> Location:
    scheme = loc.uri.split("://", 1)[0]
    return Location(loc.fs, bucket, f"{scheme}://{bucket}")


def check_writable_dir(loc: Location, what: str = "output") -> None:
    """Fail before any work when ``loc`` cannot be written: a bucket that does not exist, no credentials, an
    unreachable store, a read-only local folder. Writes and deletes one small probe object."""
    bucket = _bucket_of(loc)
    if bucket is not None and resolve_bucket(loc, bucket).info().type == pafs.FileType.NotFound:
        raise StorageError(f"{what} {loc.uri}: the bucket {bucket!r} does not exist; create it first")
    probe = loc.join(f".write-test-{uuid.uuid4().hex[:8]}")
    try:
        loc.makedirs()
        probe.write_bytes(b"ok")
        probe.delete()
    except OSError as err:
        if loc.is_local:
            raise StorageError(
                f"{what} folder {loc.uri!r} is not writable ({getattr(err, 'strerror', None) or err}); "
                "choose another --output or fix its permissions"
            ) from err
        raise StorageError(f"{what} {loc.uri} is not writable: {explain(loc.uri, err)}") from err
