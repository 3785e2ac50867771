"""Fixtures for tests that drive a running case-store through the bus: a database
connection, an observer of every `case.*` event, and the service itself. Import them into a
test module by name."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web
from tests.integration.test_case_store_service import Observer, running, settings  # noqa: F401

from casegate_case_store.settings import Settings
from casegate_shared.settings import BusSettings


@pytest.fixture
async def db(clean_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(clean_db)
    yield conn
    await conn.close()


@pytest.fixture
async def observer(bus_settings: BusSettings) -> AsyncIterator[Observer]:
    obs = Observer(bus_settings, ["case.#"])
    await obs.start()
    yield obs
    await obs.close()


@pytest.fixture
async def service(settings: Settings, observer: Observer) -> AsyncIterator[web.Application]:  # noqa: F811
    async with running(settings) as app:
        yield app
