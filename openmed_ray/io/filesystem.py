"""Local paths and `s3://` URIs behind one pyarrow filesystem interface.

S3 honours the standard AWS variables, including AWS_ENDPOINT_URL (for MinIO, moto, or
any S3-compatible store); pyarrow reads them itself.
"""

from __future__ import annotations

import errno
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

log = logging.getLogger(__name__)
T = TypeVar("T")
# Errors that waiting does not cure: retrying a full disk only delays the failure.
PERMANENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def is_remote(uri: str | Path) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def resolve(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI such as s3://bucket/key."""
    text = str(uri)
    if is_remote(text):
        if text.startswith("s3://"):
            return _s3_filesystem(), text[len("s3://") :].rstrip("/")
        return pafs.FileSystem.from_uri(text)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def _s3_endpoint_and_region() -> tuple[str | None, str]:
    """The S3 endpoint override (None: AWS) and region from the standard AWS variables."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return endpoint or None, region


def _s3_filesystem() -> pafs.S3FileSystem:
    endpoint, region = _s3_endpoint_and_region()
    if endpoint:
        scheme = "http" if endpoint.startswith("http://") else "https"
        return pafs.S3FileSystem(
            endpoint_override=endpoint.split("://", 1)[-1], scheme=scheme, region=region
        )
    return pafs.S3FileSystem(region=region)


def s3fs_filesystem():
    """An s3fs filesystem with the same endpoint and region as `resolve`, for the operations
    pyarrow lacks (conditional writes). Listings are never cached: claims must see the store
    as it is now."""
    import s3fs

    endpoint, region = _s3_endpoint_and_region()
    fs = s3fs.S3FileSystem(
        endpoint_url=endpoint,
        client_kwargs={"region_name": region},
        # Fail within seconds when the endpoint is down; callers retry on their own terms.
        config_kwargs={"connect_timeout": 5, "retries": {"max_attempts": 2}},
        use_listings_cache=False,
        skip_instance_cache=True,
    )
    fs.retries = 1  # s3fs's own retry loop (a class attribute, default 5)
    return fs


def ray_remote_env(*uris: str) -> dict:
    """Ray remote args carrying this process's AWS settings to tasks and actors that touch
    s3:// data: workers of an already running cluster do not inherit the driver's
    environment, so an endpoint or credentials set for the driver (AWS_ENDPOINT_URL, keys,
    region) must go along. Empty when no URI is on S3."""
    if not any(str(uri).startswith("s3://") for uri in uris):
        return {}
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    return {"runtime_env": {"env_vars": env}} if env else {}


def join(base: str, *parts: str) -> str:
    """Join URI or path parts with '/' (works for s3:// and local paths alike)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def write_parquet_atomic(table: pa.Table, uri: str | Path, **options) -> None:
    """Write a Parquet file so that readers see either nothing or the complete file.

    Locally the file is written under a hidden temporary name in the same directory and
    renamed into place. An S3 object only becomes visible when its upload completes, so the
    final key is written directly.
    """
    fs, path = resolve(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        temporary = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(table, temporary, filesystem=fs, **options)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
    else:
        pq.write_table(table, path, filesystem=fs, **options)


def write_bytes_atomic(data: bytes, uri: str | Path) -> None:
    """Atomically write a small file (JSON summaries, manifests)."""
    fs, path = resolve(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        temporary = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    else:
        with fs.open_output_stream(path) as handle:
            handle.write(data)


def retry_transient(
    action: Callable[[], T], *, attempts: int, backoff_seconds: float, what: str
) -> T:
    """Run `action`, retrying OSErrors other than PERMANENT_ERRNOS (a dropped connection, an
    S3 endpoint restarting) with exponential backoff; the last failure propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except OSError as exc:
            if exc.errno in PERMANENT_ERRNOS or attempt == attempts:
                raise
            delay = backoff_seconds * 2 ** (attempt - 1)
            log.warning(
                "%s failed (attempt %d of %d): %s; retrying in %.1f s",
                what,
                attempt,
                attempts,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")
