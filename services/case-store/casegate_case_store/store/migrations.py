"""Schema migrations, run programmatically: no alembic.ini is needed on disk.

Both entry points are synchronous so the CLI and test fixtures can call them plainly. When
called on a thread whose event loop is running, the work moves to a short-lived thread,
because alembic's env.py and the database creation drive an event loop of their own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

SCRIPT_LOCATION = Path(__file__).resolve().parent / "alembic"

T = TypeVar("T")

# Alembic keeps its running environment in module globals: one migration per process at a
# time. Across processes, env.py's advisory lock does the same job.
_ALEMBIC_LOCK = threading.Lock()


def async_url(database_url: str) -> str:
    """The same URL for SQLAlchemy's asyncpg driver (postgresql:// -> postgresql+asyncpg://)."""
    url = make_url(database_url).set(drivername="postgresql+asyncpg")
    return url.render_as_string(hide_password=False)


def plain_url(database_url: str, *, database: str | None = None) -> str:
    """A libpq-style URL asyncpg accepts, optionally pointing at another database."""
    url = make_url(database_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def describe(database_url: str) -> str:
    """host/database for messages: never the password."""
    url = make_url(database_url)
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"


def _outside_running_loop(fn: Callable[[], T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="casegate-migrate") as pool:
        return pool.submit(fn).result()


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    # Passed as an attribute, not an ini option: configparser would choke on a '%' in a password.
    cfg.attributes["database_url"] = async_url(database_url)
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database to `revision` (default: the newest). Running it again is a no-op."""
    def run() -> None:
        with _ALEMBIC_LOCK:
            command.upgrade(alembic_config(database_url), revision)

    _outside_running_loop(run)


def downgrade(database_url: str, revision: str) -> None:
    def run() -> None:
        with _ALEMBIC_LOCK:
            command.downgrade(alembic_config(database_url), revision)

    _outside_running_loop(run)


def create_database(database_url: str) -> bool:
    """Create the database the URL names, if missing. Returns whether it was created."""
    name = make_url(database_url).database
    if not name:
        raise ValueError("the database URL names no database")

    async def create() -> bool:
        conn = await asyncpg.connect(plain_url(database_url, database="postgres"))
        try:
            if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                return False
            quoted = '"' + name.replace('"', '""') + '"'
            try:
                await conn.execute(f"CREATE DATABASE {quoted}")
            except asyncpg.DuplicateDatabaseError:  # created by someone else meanwhile
                return False
            return True
        finally:
            await conn.close()

    return _outside_running_loop(lambda: asyncio.run(create()))


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None before the first migration."""

    async def read() -> str | None:
        conn = await asyncpg.connect(plain_url(database_url))
        try:
            if not await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
                return None
            value: str | None = await conn.fetchval("SELECT version_num FROM alembic_version")
            return value
        finally:
            await conn.close()

    return _outside_running_loop(lambda: asyncio.run(read()))
