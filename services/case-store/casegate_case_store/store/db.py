"""The asyncpg pool every handler shares, with jsonb decoded to Python values."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
import orjson

from .migrations import plain_url

log = logging.getLogger(__name__)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool as it is. asyncpg's default reset costs one more round
    trip per transaction (RESET ALL, UNLISTEN, unlock); nothing here changes session state:
    transactions are scoped, advisory locks are transaction-level, and the relay's LISTEN
    connection unlistens itself before it goes back."""


async def create_pool(database_url: str, max_size: int, timeout: float = 30.0) -> asyncpg.Pool:
    """Open the pool, retrying with backoff while the database is still coming up."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                plain_url(database_url),
                min_size=min(2, max_size),
                max_size=max_size,
                init=_init_connection,
                reset=_keep_session,
                command_timeout=30,
            )
            return pool
        except (OSError, asyncpg.CannotConnectNowError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database not reachable, retrying", extra={"error": str(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def check_ready(pool: asyncpg.Pool) -> None:
    async with pool.acquire(timeout=5) as conn:
        await conn.fetchval("SELECT 1")
