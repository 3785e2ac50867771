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
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from casegate_shared.settings import BusSettings

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
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
    """A vhost of our own, so queues of one run never meet another's. Where the broker runs
    elsewhere (no rabbitmqctl here), the default vhost with per-test names isolates enough."""
    if shutil.which("rabbitmqctl") is None:
        yield "amqp://guest:guest@127.0.0.1:5672/"
        return
    vhost = f"casegate-test-{RUN_ID}"
    ctl = ["rabbitmqctl", "-q"]
    subprocess.run([*ctl, "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        [*ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    subprocess.run([*ctl, "delete_vhost", vhost], check=False, capture_output=True)


@pytest.fixture
def bus_settings(amqp_url: str) -> BusSettings:
    """Per-test exchange and queue prefix; fast retries so failure paths finish quickly."""
    tag = uuid.uuid4().hex[:8]
    return BusSettings(
        amqp_url=amqp_url,
        bus_exchange=f"t{tag}",
        bus_prefix=f"t{tag}",
        bus_retry_base_ms=50,
        bus_max_attempts=3,
        bus_delivery_limit=5,
    )


@pytest.fixture(scope="session")
def database_url(infrastructure: None) -> Iterator[str]:
    """A fresh database for this run, migrated to head by case-store's migrations."""
    from casegate_case_store.store.migrations import upgrade

    name = f"casegate_test_{RUN_ID}"

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
    """Empties every table (but the migration version) before the test."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
    yield database_url


@pytest.fixture
async def redis_url(infrastructure: None) -> AsyncIterator[str]:
    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()
    yield REDIS_URL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
