"""The blob store: where attachments live, streamed in and out, never whole in memory.

Blobs are content-addressed (the key is their sha256), so the same file stored twice takes
the space once and a key can be checked against its bytes. The local directory store is the
default; another backend (S3-compatible) implements the same three calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import filetype

CHUNK = 64 * 1024
SNIFF_BYTES = 8192
FALLBACK_TYPE = "application/octet-stream"


class BlobTooLarge(Exception):
    """The stream ran past the size limit; nothing was kept."""


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


class LocalBlobStore:
    """Blobs as files under one directory, fanned out by the first hash bytes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise KeyError(key)  # never let a key walk the file system
        return self.root / key[:2] / key[2:4] / key

    async def put(
        self, chunks: AsyncIterable[bytes], max_bytes: int, claimed_type: str | None = None
    ) -> StoredBlob:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        head = b""
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
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
            key = digest.hexdigest()
            final = self._path(key)
            await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(os.replace, tmp, final)
        except BaseException:
            await asyncio.to_thread(_unlink, tmp)
            raise
        return StoredBlob(key, size, key, detect_type(head, claimed_type))

    async def open(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        with await asyncio.to_thread(path.open, "rb") as src:
            while chunk := await asyncio.to_thread(src.read, CHUNK):
                yield chunk

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(_unlink, self._path(key))


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
