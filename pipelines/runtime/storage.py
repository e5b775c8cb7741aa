"""S3-compatible object storage: the one place the steps, the Ray cluster and the checkpoints meet.

A step that hands work to another machine (a Ray job, a retried pod) hands it a URI (``s3://bucket/key``),
never a local path. This module parses those URIs, builds the clients, copies folders both ways and turns
every storage failure into one line that names the endpoint and the bucket (never a credential).

Endpoint and credentials come from the variables AWS tools and MLflow already use:

    AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else MLFLOW_S3_ENDPOINT_URL   any S3-compatible server
                                                   (MinIO, Ceph RGW, SeaweedFS); unset: AWS S3 itself
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY       or any source boto3 knows (IRSA, instance profile)
    AWS_REGION / AWS_DEFAULT_REGION                default us-east-1

Addressing is path-style (``http://host:port/bucket/key``), which every S3-compatible server accepts.
Clients time out (10 s to connect, 60 s per read) and retry three times, so an unreachable endpoint is an
error in seconds, not a hang.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fora_core import ForaConfigError

from ..config.namespace import PLACEHOLDER, unresolved_message

SCHEME = "s3://"
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60


class StorageError(ForaConfigError):
    """Object storage refused or could not be reached; the message names the endpoint and bucket."""


def is_uri(path: str | Path | None) -> bool:
    return isinstance(path, str) and path.startswith(SCHEME)


@dataclass(frozen=True)
class S3Uri:
    """``s3://bucket/key``; ``key`` has no leading or trailing slash ('' for the bucket itself)."""

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not is_uri(uri):
            raise StorageError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
        if PLACEHOLDER in uri:
            raise StorageError(unresolved_message(uri))
        bucket, _, key = uri[len(SCHEME):].partition("/")
        if not bucket:
            raise StorageError(f"invalid S3 URI {uri!r} (expected s3://bucket/key)")
        return cls(bucket, key.strip("/"))

    def join(self, *parts: str) -> S3Uri:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p and p.strip("/"))
        return S3Uri(self.bucket, key)

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}" if self.key else f"{SCHEME}{self.bucket}"


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local folder or an S3 URI."""
    if is_uri(base):
        return str(S3Uri.parse(base).join(*parts))
    return str(Path(base, *parts))


def absolute(location: str | Path) -> str:
    """An S3 URI as is, a local path made absolute (what to hand a process that runs elsewhere)."""
    return str(location) if is_uri(str(location)) else str(Path(location).resolve())


def read_json(location: str | Path) -> Any:
    """A JSON file from a local path or an S3 URI."""
    import json

    text = read_text(str(location)) if is_uri(str(location)) else Path(location).read_text()
    return json.loads(text)


def endpoint_url() -> str | None:
    """The S3 endpoint from the environment (None: AWS S3)."""
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "S3_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var].rstrip("/")
    return None


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def describe_endpoint() -> str:
    return endpoint_url() or "AWS S3"


def s3_client():
    """A boto3 S3 client for the configured endpoint: path-style, timeouts, 3 retries. Built from the
    environment as it is now (boto3's default session would keep the first credentials it saw)."""
    keys = tuple(os.environ.get(v) for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                             "AWS_PROFILE"))
    return _client(endpoint_url(), _region(), keys)


@functools.lru_cache(maxsize=8)
def _client(endpoint: str | None, region: str, keys: tuple):
    import boto3
    from botocore.config import Config

    config = Config(s3={"addressing_style": "path"}, connect_timeout=CONNECT_TIMEOUT_S,
                    read_timeout=READ_TIMEOUT_S, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def arrow_filesystem():
    """A ``pyarrow.fs.S3FileSystem`` for the same endpoint and credentials (what Ray Train writes through).

    Built explicitly: whether pyarrow honours ``AWS_ENDPOINT_URL`` by itself differs between versions."""
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {"region": _region(), "connect_timeout": CONNECT_TIMEOUT_S,
                              "request_timeout": READ_TIMEOUT_S}
    url = endpoint_url()
    if url:
        scheme, _, host = url.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https",
                      force_virtual_addressing=False)
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                      session_token=os.environ.get("AWS_SESSION_TOKEN"))
    return pafs.S3FileSystem(**kwargs)


def ray_storage(path: str) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for ``ray.train.RunConfig``: ``bucket/prefix`` plus an explicit S3
    filesystem for a URI, or an absolute folder and None for a local path."""
    if is_uri(path):
        uri = S3Uri.parse(path)
        return f"{uri.bucket}/{uri.key}".rstrip("/"), arrow_filesystem()
    return str(Path(path).resolve()), None


# -- errors -------------------------------------------------------------------------------------------
def explain(err: BaseException, uri: str | S3Uri, action: str = "access") -> StorageError:
    """One line for a boto3/botocore/pyarrow failure, naming the endpoint and bucket."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    target = uri if isinstance(uri, S3Uri) else S3Uri.parse(str(uri))
    where = f"S3 endpoint {describe_endpoint()}, bucket '{target.bucket}'"
    if isinstance(err, NoCredentialsError):
        return StorageError(f"no S3 credentials to {action} {target} ({where}): set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY")
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403", "InvalidToken",
                    "ExpiredToken"):
            return StorageError(f"{where} refused to {action} {target} ({code}): check AWS_ACCESS_KEY_ID / "
                                "AWS_SECRET_ACCESS_KEY and the bucket policy")
        if code in ("NoSuchBucket",) or (code == "404" and not target.key):
            return StorageError(f"bucket '{target.bucket}' does not exist at S3 endpoint {describe_endpoint()}"
                                " (create it, or set storage.create_bucket: true)")
        if code in ("NoSuchKey", "404"):
            return StorageError(f"{target} not found ({where})")
        return StorageError(f"{where} failed to {action} {target} ({code or type(err).__name__})")
    if isinstance(err, EndpointConnectionError) or "connect" in type(err).__name__.lower():
        return StorageError(f"cannot reach the S3 endpoint {describe_endpoint()} to {action} {target} "
                            f"(bucket '{target.bucket}'): is the server up and AWS_ENDPOINT_URL right?")
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return StorageError(f"{where}: could not {action} {target} ({first})")


# -- buckets and objects ------------------------------------------------------------------------------
def ensure_bucket(uri: str, create: bool = True) -> None:
    """Check that the URI's bucket exists and the credentials may use it; create it if allowed."""
    from botocore.exceptions import ClientError

    target = S3Uri.parse(uri)
    client = s3_client()
    try:
        client.head_bucket(Bucket=target.bucket)
        return
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code not in ("404", "NoSuchBucket") or not create:
            raise explain(err, S3Uri(target.bucket), "use") from None
    except Exception as err:
        raise explain(err, S3Uri(target.bucket), "use") from None
    try:
        client.create_bucket(Bucket=target.bucket)
    except ClientError as err:
        if str(err.response.get("Error", {}).get("Code", "")) not in ("BucketAlreadyOwnedByYou",
                                                                      "BucketAlreadyExists"):
            raise explain(err, S3Uri(target.bucket), "create") from None


def ensure_prefix(uri: str, create: bool = True) -> None:
    """``ensure_bucket``, then prove that the credential may write and delete under the prefix (a marker object,
    written and removed): a Kubeflow profile's keys may use only their own prefix of KFP's bucket, so a bucket that
    answers is not yet a store the pipeline can use."""
    ensure_bucket(uri, create)
    target = S3Uri.parse(uri)
    marker = target.join(".fora-write-check")
    client = s3_client()
    try:
        client.put_object(Bucket=marker.bucket, Key=marker.key, Body=b"fora-pipelines")
        client.delete_object(Bucket=marker.bucket, Key=marker.key)
    except Exception as err:
        raise explain(err, target, "write under") from None


def list_objects(uri: str) -> list[tuple[str, str, int]]:
    """(key relative to the prefix ``uri``, ETag, size) of every object under it, recursively. Folder markers
    (empty keys ending in ``/``, which pyarrow and some consoles create) are left out."""
    target = S3Uri.parse(uri)
    prefix = f"{target.key}/" if target.key else ""
    found: list[tuple[str, str, int]] = []
    try:
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=prefix):
            found += [(o["Key"][len(prefix):], o.get("ETag", "").strip('"'), int(o.get("Size", 0)))
                      for o in page.get("Contents", [])
                      if o["Key"] != target.key and not o["Key"].endswith("/")]
    except Exception as err:
        raise explain(err, target, "list") from None
    return found


def list_keys(uri: str) -> list[str]:
    """Every key under the prefix ``uri`` (recursively), relative to it."""
    return [key for key, _, _ in list_objects(uri)]


def exists(uri: str) -> bool:
    """An object at ``uri``, or at least one object under it."""
    from botocore.exceptions import ClientError

    target = S3Uri.parse(uri)
    try:
        s3_client().head_object(Bucket=target.bucket, Key=target.key)
        return True
    except ClientError as err:
        if str(err.response.get("Error", {}).get("Code", "")) not in ("404", "NoSuchKey", "NotFound"):
            raise explain(err, target, "read") from None
    except Exception as err:
        raise explain(err, target, "read") from None
    return bool(list_keys(uri))


def read_text(uri: str) -> str:
    target = S3Uri.parse(uri)
    try:
        return s3_client().get_object(Bucket=target.bucket, Key=target.key)["Body"].read().decode("utf-8")
    except Exception as err:
        raise explain(err, target, "read") from None


def write_text(uri: str, text: str) -> None:
    """One PUT: S3 objects appear whole or not at all."""
    target = S3Uri.parse(uri)
    try:
        s3_client().put_object(Bucket=target.bucket, Key=target.key, Body=text.encode("utf-8"))
    except Exception as err:
        raise explain(err, target, "write") from None


def etag(uri: str) -> str:
    """The object's ETag (or version id when the bucket is versioned): changes whenever the object does."""
    target = S3Uri.parse(uri)
    try:
        head = s3_client().head_object(Bucket=target.bucket, Key=target.key)
    except Exception as err:
        raise explain(err, target, "read") from None
    return head.get("VersionId") or head["ETag"].strip('"')


def download_file(uri: str, dest: str | Path) -> Path:
    target = S3Uri.parse(uri)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        s3_client().download_file(target.bucket, target.key, str(dest))
    except Exception as err:
        raise explain(err, target, "read") from None
    return dest


def upload_dir(local: str | Path, uri: str) -> list[str]:
    """Copy every file under ``local`` to ``uri/<relative path>``; returns the keys written."""
    target = S3Uri.parse(uri)
    client = s3_client()
    written = []
    for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
        rel = path.relative_to(local).as_posix()
        key = target.join(rel)
        try:
            client.upload_file(str(path), key.bucket, key.key)
        except Exception as err:
            raise explain(err, key, "write") from None
        written.append(str(key))
    return written


def download_dir(uri: str, local: str | Path) -> Path:
    """Copy every object under the prefix ``uri`` into ``local`` (keys become relative paths)."""
    target = S3Uri.parse(uri)
    keys = list_keys(uri)
    if not keys:
        raise StorageError(f"nothing under {target} (S3 endpoint {describe_endpoint()}, bucket '{target.bucket}')")
    local = Path(local)
    for rel in keys:
        if ".." in Path(rel).parts:
            continue
        download_file(str(target.join(rel)), local / rel)
    return local


def copy_to(local: str | Path, dest: str | Path) -> str:
    """Copy a local folder to a folder or URI; returns ``dest``. A local copy is written beside ``dest`` and
    swapped into place (``atomic.replace_dir``), so a crash never leaves half a folder, or none, there."""
    if is_uri(str(dest)):
        upload_dir(local, str(dest))
        return str(dest)
    dest = Path(dest)
    if dest.resolve() != Path(local).resolve():
        dest.parent.mkdir(parents=True, exist_ok=True)
        from .atomic import replace_dir

        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        try:
            shutil.copytree(local, staging / "tree")
            replace_dir(staging / "tree", dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return str(dest)


def localize(path: str | Path, scratch: str | Path | None = None) -> Path:
    """A local folder with the contents of ``path``: the folder itself, or a download of a URI into
    ``scratch`` (a fresh temporary folder if None)."""
    if not is_uri(str(path)):
        return Path(path)
    dest = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix="fora-s3-"))
    return download_dir(str(path), dest)


@contextlib.contextmanager
def local_input(location: str | Path | None) -> Iterator[Path | None]:
    """A step's input as a local folder for the block: the folder itself, or a temporary download of a URI
    (removed afterwards)."""
    if location is None or not is_uri(str(location)):
        yield Path(location) if location is not None else None
        return
    scratch = Path(tempfile.mkdtemp(prefix="fora-in-"))
    try:
        yield download_dir(str(location), scratch / "in")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def local_output(location: str | Path) -> Iterator[Path]:
    """A step's output folder for the block: the folder itself, or a temporary one uploaded to the URI when
    the block succeeds."""
    if not is_uri(str(location)):
        Path(location).mkdir(parents=True, exist_ok=True)
        yield Path(location)
        return
    scratch = Path(tempfile.mkdtemp(prefix="fora-out-"))
    try:
        yield scratch
        upload_dir(scratch, str(location))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
