"""Fixtures for tests against the real RabbitMQ, PostgreSQL and Redis on this machine.

Isolation without stand-ins: each test run gets its own RabbitMQ vhost (deleted at the
end), its own PostgreSQL database (created fresh and migrated), and its own Redis key
prefix. A server that is down is started by scripts/ensure-infra.sh; if that fails the run
fails loudly, never skips.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest
import redis.asyncio as aioredis

from casegate_shared.bus import Bus
from casegate_shared.settings import BusSettings

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = uuid.uuid4().hex[:8]
PG_ADMIN_URL = os.environ.get("CASEGATE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CASEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session", autouse=True)
def infrastructure() -> None:
    if not all(_port_open(p) for p in (5672, 5432, 6379)):
        subprocess.run([str(ROOT / "scripts/ensure-infra.sh")], check=True)
    for port, name in ((5672, "RabbitMQ"), (5432, "PostgreSQL"), (6379, "Redis")):
        if not _port_open(port):
            pytest.fail(f"{name} is not reachable on 127.0.0.1:{port}", pytrace=False)


@pytest.fixture(scope="session")
def amqp_url(infrastructure: None) -> Iterator[str]:
    """The default vhost; every test names its exchange and queues `t<run id>…`, and the
    run deletes all of its queues at the end. (Per-run vhosts were tried: creating and
    deleting many of them on RabbitMQ 3.10 can wedge `rabbitmqctl`.)"""
    url = "amqp://guest:guest@127.0.0.1:5672/"
    yield url
    asyncio.run(delete_queues(url, f"t{RUN_ID}"))


async def delete_queues(
    url: str, prefix: str | tuple[str, ...], *, exchanges: bool = True
) -> None:
    """Delete the queues (and exchanges) whose names start with `prefix`. Listing them takes
    a `rabbitmqctl` run, which boots an Erlang VM: about a second on two cores."""
    if shutil.which("rabbitmqctl") is None:
        return
    try:
        out = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "name"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return  # leftovers are harmless: names are unique per run
    names = [line.strip() for line in out.splitlines() if line.strip().startswith(prefix)]
    conn = await aio_pika.connect(url)
    try:
        channel = await conn.channel()
        for name in names:
            await channel.queue_delete(name)
        if not exchanges:
            return
        out = subprocess.run(
            ["rabbitmqctl", "-q", "list_exchanges", "name"],
            capture_output=True, text=True, timeout=30, check=False,
        ).stdout
        for name in out.split():
            if name.startswith(prefix):
                await channel.exchange_delete(name)
    finally:
        await conn.close()


# Prefixes of finished tests whose queues still wait to be deleted.
_FINISHED: list[str] = []
_DELETE_EVERY = 5


@pytest.fixture
def bus_settings(amqp_url: str) -> Iterator[BusSettings]:
    """Per-test exchange and queue prefix; fast retries so failure paths finish quickly.
    Finished tests' queues are deleted every few tests: a broker on two cores copes badly
    with hundreds of idle quorum queues piling up during one run, and one listing per test
    would cost a second each. Exchanges are cheap: they go at the end of the run."""
    tag = f"{RUN_ID}{uuid.uuid4().hex[:6]}"
    yield BusSettings(
        amqp_url=amqp_url,
        bus_exchange=f"t{tag}",
        bus_prefix=f"t{tag}",
        bus_retry_base_ms=50,
        bus_max_attempts=3,
        bus_delivery_limit=5,
    )
    _FINISHED.append(f"t{tag}")
    if len(_FINISHED) >= _DELETE_EVERY:
        asyncio.run(delete_queues(amqp_url, tuple(_FINISHED), exchanges=False))
        _FINISHED.clear()


@pytest.fixture(scope="session")
def database_url(infrastructure: None) -> Iterator[str]:
    """A fresh database for this run, migrated to head by case-store's migrations."""
    from casegate_case_store.store.migrations import upgrade

    name = f"casegate_test_{RUN_ID}"  # dropped at the end

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def clean_db(database_url: str) -> AsyncIterator[str]:
    """Empties every table before the test, but the migration version and the seeded reason
    codes."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename NOT IN ('alembic_version', 'reason_codes')"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
    yield database_url


@pytest.fixture(scope="session")
def redis_url(infrastructure: None) -> Iterator[str]:
    """Test database 15, shared with other runs: every test keys its data under a prefix
    holding the run id (never flushes, so concurrent runs do not wipe each other), and the
    run deletes its own keys at the end."""
    yield REDIS_URL
    asyncio.run(_delete_redis_keys(REDIS_URL, RUN_ID))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the tests' Redis database that answers str."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def _delete_redis_keys(url: str, run_id: str) -> None:
    client = aioredis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"*{run_id}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def publisher(bus_settings: BusSettings) -> AsyncIterator[Bus]:
    """A connected bus on the test's exchange, for publishing what a test feeds in."""
    bus = Bus(bus_settings, source="test")
    await bus.connect()
    yield bus
    await bus.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll `check` until it holds; fail the test if it does not within `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix (or any name) unique to this test and carrying the run id."""
    return f"t{RUN_ID}{uuid.uuid4().hex[:6]}"
