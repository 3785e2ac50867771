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
            await warn_without_autovacuum(pool)
            return pool
        except (OSError, asyncpg.CannotConnectNowError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database not reachable, retrying", extra={"error": str(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def warn_without_autovacuum(pool: asyncpg.Pool) -> bool:
    """Warn (and answer True) when the server runs without autovacuum. Then no table is ever
    analyzed: the plans a connection caches while a table is small (a new install) stay
    sequential scans as it grows, and every message pays a scan of its customers."""
    if await pool.fetchval("SELECT current_setting('autovacuum')::bool"):
        return False
    log.warning(
        "autovacuum is off on the database server: turn it on, or run ANALYZE after loads "
        "and restart case-store, or plans made for small tables stay in use as they grow"
    )
    return True


async def check_ready(pool: asyncpg.Pool) -> None:
    async with pool.acquire(timeout=5) as conn:
        await conn.fetchval("SELECT 1")
