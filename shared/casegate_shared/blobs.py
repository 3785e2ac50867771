"""The blob store: where attachments live, streamed in and out, never whole in memory.

Blobs are content-addressed (the key is their sha256), so the same file stored twice takes
the space once and a key can be checked against its bytes. A local directory (the default)
and an S3-compatible bucket implement the same three calls; `blob_store` picks one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit

import boto3
import filetype
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .settings import ServiceSettings

CHUNK = 64 * 1024
SNIFF_BYTES = 8192
FALLBACK_TYPE = "application/octet-stream"
T = TypeVar("T")


class BlobTooLarge(Exception):
    """The stream ran past the size limit; nothing was kept."""


class BlobStoreUnavailable(OSError):
    """The bucket could not be reached or refused us; an OSError like a failing disk, so
    callers that already note an unwritable local store handle it the same way."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    size: int
    sha256: str
    content_type: str  # detected from the bytes, not taken from the sender's claim


class BlobStore(Protocol):
    async def put(
        self, chunks: AsyncIterable[bytes], max_bytes: int, claimed_type: str | None = None
    ) -> StoredBlob: ...

    def open(self, key: str) -> AsyncIterator[bytes]: ...

    async def delete(self, key: str) -> None: ...


def detect_type(head: bytes, claimed: str | None = None) -> str:
    """The content type the bytes show; plain text falls back to a text/* claim."""
    kind = filetype.guess(head)
    if kind is not None:
        return str(kind.mime)
    if claimed and claimed.startswith("text/"):
        return claimed.split(";")[0].strip().lower()
    return FALLBACK_TYPE


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """Adapt bytes already in memory (a small MIME part) to `put`."""
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]
    if not data:
        yield b""


def checked_key(key: str) -> str:
    """A key is 64 lowercase hex digits; anything else never reaches a path or a bucket."""
    if len(key) != 64 or not set(key) <= set("0123456789abcdef"):
        raise KeyError(key)
    return key


async def _spool(
    chunks: AsyncIterable[bytes], max_bytes: int, claimed_type: str | None, directory: Path
) -> tuple[str, StoredBlob]:
    """Write the stream to a temporary file (which the caller moves or removes) while hashing
    it; past `max_bytes`, keep nothing."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    digest, size, head = hashlib.sha256(), 0, b""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise BlobTooLarge(f"over {max_bytes} bytes")
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                digest.update(chunk)
                await asyncio.to_thread(out.write, chunk)
    except BaseException:
        await asyncio.to_thread(_unlink, tmp)
        raise
    key = digest.hexdigest()
    return tmp, StoredBlob(key, size, key, detect_type(head, claimed_type))


class LocalBlobStore:
    """Blobs as files under one directory, fanned out by the first hash bytes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        checked_key(key)  # never let a key walk the file system
        return self.root / key[:2] / key[2:4] / key

    async def put(
        self, chunks: AsyncIterable[bytes], max_bytes: int, claimed_type: str | None = None
    ) -> StoredBlob:
        tmp, blob = await _spool(chunks, max_bytes, claimed_type, self.root)
        final = self._path(blob.key)
        try:
            await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(os.replace, tmp, final)
        except BaseException:
            await asyncio.to_thread(_unlink, tmp)
            raise
        return blob

    async def open(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            src = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise KeyError(key) from None
        with src:
            while chunk := await asyncio.to_thread(src.read, CHUNK):
                yield chunk

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(_unlink, self._path(key))


class S3BlobStore:
    """Blobs as objects `<prefix>/<key>` in an S3-compatible bucket; boto3 blocks, so every
    call runs in a thread. A blob is spooled to a file under `spool_dir` first: memory stays
    flat, a refused stream never reaches the bucket, and the key is known before uploading
    (an object already there is the same bytes, so it is not sent again)."""

    def __init__(self, client: Any, bucket: str, prefix: str, spool_dir: str | Path) -> None:
        self.client = client  # a boto3 S3 client; clients (unlike sessions) are thread-safe
        self.bucket, self.spool_dir = bucket, Path(spool_dir)
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        # Few parts in flight: each multipart part is read into memory while it is sent.
        self.transfer = TransferConfig(multipart_chunksize=8 * 1024 * 1024, max_concurrency=2)

    def _name(self, key: str) -> str:
        return self.prefix + checked_key(key)

    async def put(
        self, chunks: AsyncIterable[bytes], max_bytes: int, claimed_type: str | None = None
    ) -> StoredBlob:
        tmp, blob = await _spool(chunks, max_bytes, claimed_type, self.spool_dir)
        name = self._name(blob.key)
        try:  # a missing object is 403, not 404, to a key without s3:ListBucket: grant it
            await _s3(lambda: self.client.head_object(Bucket=self.bucket, Key=name), name)
        except KeyError:  # not there yet: send it
            extra = {"ContentType": blob.content_type}
            await _s3(lambda: self.client.upload_file(
                tmp, self.bucket, name, ExtraArgs=extra, Config=self.transfer))
        finally:
            await asyncio.to_thread(_unlink, tmp)
        return blob

    async def open(self, key: str) -> AsyncIterator[bytes]:
        name = self._name(key)
        answer = await _s3(lambda: self.client.get_object(Bucket=self.bucket, Key=name), key)
        body = answer["Body"]
        try:
            while chunk := await _s3(lambda: body.read(CHUNK)):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        name = self._name(key)
        await _s3(lambda: self.client.delete_object(Bucket=self.bucket, Key=name))


async def _s3(call: Callable[[], T], key: str | None = None) -> T:
    """Run one boto3 call in a thread: a missing object is KeyError(key), anything else that
    goes wrong with the store is BlobStoreUnavailable."""
    try:
        return await asyncio.to_thread(call)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if key is not None and code in ("404", "NoSuchKey", "NotFound"):
            raise KeyError(key) from None
        raise BlobStoreUnavailable(f"S3 refused: {code or exc}") from exc
    except Boto3Error as exc:  # a failed managed upload
        raise BlobStoreUnavailable(f"S3 refused: {exc}") from exc
    except BotoCoreError as exc:
        raise BlobStoreUnavailable(f"S3 unreachable: {exc}") from exc


def blob_store(settings: ServiceSettings) -> BlobStore:
    """The store the settings name: `blob_url` s3://bucket/prefix?endpoint=…&region=…
    (uploads are spooled under `blob_dir`), or the local directory `blob_dir`."""
    if not settings.blob_url:
        return LocalBlobStore(settings.blob_dir)
    url = urlsplit(settings.blob_url)
    if url.scheme != "s3" or not url.netloc or any(c in url.netloc for c in "@:/"):
        raise ValueError("CASEGATE_BLOB_URL must be s3://bucket[/prefix][?endpoint=…&region=…]")
    options = dict(parse_qsl(url.query, keep_blank_values=True))
    endpoint, region = options.pop("endpoint", None), options.pop("region", None)
    # Path-style requests suit most S3-compatible servers at a custom endpoint.
    addressing = options.pop("addressing", "path" if endpoint else "auto")
    bad_endpoint = endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https")
    if options or bad_endpoint or addressing not in ("path", "virtual", "auto"):
        raise ValueError("CASEGATE_BLOB_URL options: endpoint=http(s)://host:port, region=name, "
                         "addressing=path|virtual|auto")
    keys: dict[str, str] = {}
    if settings.blob_access_key and settings.blob_secret_key:
        keys = {"aws_access_key_id": settings.blob_access_key.get_secret_value(),
                "aws_secret_access_key": settings.blob_secret_key.get_secret_value()}
    config = Config(s3={"addressing_style": addressing}, connect_timeout=5, read_timeout=60,
                    retries={"mode": "standard", "max_attempts": 3})
    client = boto3.session.Session().client(  # otherwise boto3's usual environment and files
        "s3", endpoint_url=endpoint, region_name=region, config=config, **keys
    )
    return S3BlobStore(client, url.netloc, url.path, settings.blob_dir)


def _unlink(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
