"""Both blob stores, through the same tests: the local directory, and the S3 store against
moto's S3 server over real HTTP (a stand-in for a provider we cannot reach from here,
speaking S3's wire format) with boto3 pointed at it. Then case-store's attachment API with
its blobs in the bucket."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import boto3
import pytest
from pydantic import SecretStr
from tests.conftest import free_port
from tests.integration.test_case_store_api import token_for
from tests.integration.test_case_store_service import running

from casegate_case_store.api.routing import BLOBS
from casegate_case_store.settings import Settings as CaseStoreSettings
from casegate_case_store.store.users import Role
from casegate_shared.blobs import (
    CHUNK,
    BlobStore,
    BlobStoreUnavailable,
    BlobTooLarge,
    LocalBlobStore,
    S3BlobStore,
    blob_store,
    one_chunk,
)
from casegate_shared.settings import BusSettings, ServiceSettings

MB = 1024 * 1024
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on a free loopback port for this module's tests. Its own process
    (rather than moto's in-process thread) so that the memory the server spends holding
    objects does not count as ours when a test measures what `put` holds."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto's S3 server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def s3_settings(endpoint: str, bucket: str, spool: Path, **extra: Any) -> ServiceSettings:
    return ServiceSettings(
        blob_url=f"s3://{bucket}/attachments/v1?endpoint={endpoint}&region=eu-west-1",
        blob_access_key=SecretStr("test-access"), blob_secret_key=SecretStr("test-secret"),
        blob_dir=str(spool), **extra,
    )


def make_bucket(endpoint: str) -> str:
    bucket = f"casegate-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="eu-west-1",
        aws_access_key_id="test-access", aws_secret_access_key="test-secret",
    ).create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return bucket


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        made = blob_store(ServiceSettings(blob_dir=str(tmp_path / "blobs")))
        assert isinstance(made, LocalBlobStore)
        return made
    endpoint = request.getfixturevalue("s3_endpoint")
    made = blob_store(s3_settings(endpoint, make_bucket(endpoint), tmp_path / "spool"))
    assert isinstance(made, S3BlobStore)
    return made


def stored_names(store: BlobStore) -> list[str]:
    """Everything the store holds: object names in the bucket, files under the directory
    (including half-written temporary files), and anything left in the S3 spool."""
    if isinstance(store, S3BlobStore):
        listing = store.client.list_objects_v2(Bucket=store.bucket)
        objects = [o["Key"] for o in listing.get("Contents", [])]
        return objects + [str(p) for p in store.spool_dir.rglob("*") if p.is_file()]
    assert isinstance(store, LocalBlobStore)
    return [str(p) for p in store.root.rglob("*") if p.is_file()]


async def random_chunks(size: int, seed: bytes = b"") -> AsyncIterator[bytes]:
    """`size` bytes made up as they are sent, never whole in memory."""
    sent = 0
    counter = 0
    while sent < size:
        block = b"".join(
            hashlib.sha256(seed + (counter * 1000 + i).to_bytes(8, "big")).digest()
            for i in range(CHUNK // 32)
        )[: min(CHUNK, size - sent)]
        counter += 1
        sent += len(block)
        yield block


async def read_all(store: BlobStore, key: str) -> tuple[bytes, list[int]]:
    data = bytearray()
    sizes = []
    async for chunk in store.open(key):
        sizes.append(len(chunk))
        data += chunk
    return bytes(data), sizes


async def test_a_multi_megabyte_blob_round_trips_in_chunks_with_flat_memory(
    store: BlobStore,
) -> None:
    size = 12 * MB + 123  # over boto3's multipart threshold: sent in parts
    expected = hashlib.sha256()
    async for chunk in random_chunks(size):
        expected.update(chunk)
    tracemalloc.start()
    try:
        blob = await store.put(random_chunks(size), max_bytes=16 * MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * MB, f"put held {peak} bytes at once for a {size}-byte blob"
    assert (blob.key, blob.sha256, blob.size) == (expected.hexdigest(),) * 2 + (size,)
    assert blob.content_type == "application/octet-stream"
    data, sizes = await read_all(store, blob.key)
    assert hashlib.sha256(data).hexdigest() == blob.key and len(data) == size
    assert len(sizes) > 1 and max(sizes) <= CHUNK


async def test_the_content_type_comes_from_the_bytes_not_the_claim(store: BlobStore) -> None:
    image = await store.put(one_chunk(PNG_HEAD + b"\x00" * 100), 4096, "text/plain")
    assert image.content_type == "image/png"
    text = await store.put(one_chunk(b"plain words"), 4096, "text/plain; charset=utf-8")
    assert text.content_type == "text/plain"
    if isinstance(store, S3BlobStore):
        head = store.client.head_object(Bucket=store.bucket, Key=store.prefix + image.key)
        assert head["ContentType"] == "image/png"


async def test_over_the_limit_is_refused_and_nothing_is_kept(store: BlobStore) -> None:
    with pytest.raises(BlobTooLarge):
        await store.put(random_chunks(2 * MB), max_bytes=MB)
    assert stored_names(store) == []
    exactly = await store.put(random_chunks(MB), max_bytes=MB)  # the limit itself is allowed
    assert exactly.size == MB


async def test_the_same_content_stored_twice_is_one_object(store: BlobStore) -> None:
    uploads: list[str] = []
    if isinstance(store, S3BlobStore):
        def count(event_name: str, **_: Any) -> None:
            uploads.append(event_name)

        store.client.meta.events.register("before-call.s3.PutObject", count)
        store.client.meta.events.register("before-call.s3.CreateMultipartUpload", count)
    first = await store.put(random_chunks(300_000, b"same"), MB)
    second = await store.put(random_chunks(300_000, b"same"), MB)
    assert first == second
    assert len(stored_names(store)) == 1
    if isinstance(store, S3BlobStore):
        assert len(uploads) == 1, "the second put sent the bytes again"
        assert stored_names(store) == [f"attachments/v1/{first.key}"]


async def test_delete_removes_the_blob_and_is_idempotent(store: BlobStore) -> None:
    blob = await store.put(one_chunk(b"to be erased"), 4096)
    await store.delete(blob.key)
    assert stored_names(store) == []
    with pytest.raises(KeyError):
        await read_all(store, blob.key)
    await store.delete(blob.key)  # already gone: no error (erasure may run twice)


async def test_an_unknown_key_raises_key_error(store: BlobStore) -> None:
    with pytest.raises(KeyError):
        await read_all(store, hashlib.sha256(b"never stored").hexdigest())


@pytest.mark.parametrize(
    "key",
    ["", "abc", "../" * 20 + "etc/passwd", "A" * 64, "g" * 64, "0" * 63 + "/", "0" * 65,
     "0" * 62 + "\n0"],
)
async def test_keys_that_are_not_64_hex_digits_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(KeyError):
        await read_all(store, key)
    with pytest.raises(KeyError):
        await store.delete(key)


async def test_an_unreachable_bucket_is_a_clear_os_error(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    store = blob_store(s3_settings(closed, "nowhere", tmp_path / "spool"))
    with pytest.raises(BlobStoreUnavailable) as caught:
        await store.put(one_chunk(b"lost"), 4096)
    assert isinstance(caught.value, OSError) and "unreachable" in str(caught.value)
    assert list((tmp_path / "spool").iterdir()) == []  # the spooled copy is gone too


async def test_a_missing_bucket_is_a_clear_os_error(s3_endpoint: str, tmp_path: Path) -> None:
    store = blob_store(s3_settings(s3_endpoint, "no-such-bucket", tmp_path))
    with pytest.raises(BlobStoreUnavailable, match="NoSuchBucket"):
        await store.put(one_chunk(b"lost"), 4096)


@pytest.mark.parametrize(
    "url",
    ["http://bucket/prefix", "s3:///prefix", "s3://user@bucket/p", "s3://bucket?colour=blue",
     "s3://bucket?endpoint=ftp://host", "s3://bucket?addressing=sideways", "s3://bucket?endpoint"],
)
def test_a_malformed_blob_url_is_refused_at_start(url: str) -> None:
    with pytest.raises(ValueError, match="CASEGATE_BLOB_URL"):
        blob_store(ServiceSettings(blob_url=url))


def test_the_blob_url_names_bucket_prefix_and_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "CASEGATE_BLOB_URL", "s3://media/cases/?endpoint=http://127.0.0.1:9&region=eu-central-1"
    )
    store = blob_store(ServiceSettings(blob_dir=str(tmp_path)))
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix, store.spool_dir) == ("media", "cases/", tmp_path)
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert store.client.meta.region_name == "eu-central-1"
    assert isinstance(blob_store(ServiceSettings(blob_dir=str(tmp_path))), S3BlobStore)
    monkeypatch.delenv("CASEGATE_BLOB_URL")
    assert isinstance(blob_store(ServiceSettings(blob_dir=str(tmp_path))), LocalBlobStore)


# --- case-store with its attachments in the bucket ---------------------------------------


async def test_case_store_keeps_attachments_in_the_bucket(
    s3_endpoint: str, bus_settings: BusSettings, clean_db: str, tmp_path: Path
) -> None:
    bucket = make_bucket(s3_endpoint)
    blobs = s3_settings(s3_endpoint, bucket, tmp_path / "spool", attachment_max_bytes=MB)
    settings = CaseStoreSettings(
        **bus_settings.model_dump(), **blobs.model_dump(include={
            "blob_url", "blob_access_key", "blob_secret_key", "blob_dir", "attachment_max_bytes"
        }),
        database_url=clean_db, case_store_port=free_port(),
    )
    conn = await asyncpg.connect(clean_db)
    try:
        token = await token_for(conn, "cora", Role.CREATOR, Role.SUPERVISOR)
    finally:
        await conn.close()
    headers = {"Authorization": f"Bearer {token}"}
    content = os.urandom(300_000)
    async with running(settings) as app, aiohttp.ClientSession(headers=headers) as http:
        assert isinstance(app[BLOBS], S3BlobStore)
        base = f"http://127.0.0.1:{settings.case_store_port}"
        case = {"customer": {"name": "Dana", "email": "dana@example.com"},
                "subject": "Photo", "description": "See the attached photo."}
        async with http.post(f"{base}/v1/cases", json=case) as resp:
            assert resp.status == 201, await resp.text()
            ref = (await resp.json())["ref"]
        async with http.post(f"{base}/v1/cases/{ref}/attachments?filename=photo.bin",
                             data=content,
                             headers={"Content-Type": "application/octet-stream"}) as resp:
            assert resp.status == 201, await resp.text()
            info = await resp.json()
        assert info["sha256"] == hashlib.sha256(content).hexdigest()
        listing = boto3.client(
            "s3", endpoint_url=s3_endpoint, region_name="eu-west-1",
            aws_access_key_id="x", aws_secret_access_key="y",
        ).list_objects_v2(Bucket=bucket)
        assert [o["Key"] for o in listing["Contents"]] == [f"attachments/v1/{info['sha256']}"]
        async with http.get(f"{base}/v1/cases/{ref}/attachments/{info['id']}") as resp:
            assert resp.status == 200
            assert await resp.read() == content
        async with http.post(f"{base}/v1/cases/{ref}/attachments?filename=big.bin",
                             data=os.urandom(MB + 1),
                             headers={"Content-Type": "application/octet-stream"}) as resp:
            assert resp.status == 413
