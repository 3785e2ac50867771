"""case-store's application factory: the pool, the bus with its consumers, the outbox relay
and the ops routes. Used alike by `__main__` and by the tests."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from casegate_shared.bus import Bus
from casegate_shared.observability import add_ops_routes

from casegate_shared.blobs import blob_store

from . import api, handlers
from .inbound import ThreadingRules
from .api.attachments import UPLOAD_LIMIT
from .api.routing import BLOBS, THREADING
from .api.routing import POOL as API_POOL
from .settings import Settings
from .store.db import check_ready, create_pool
from .store.outbox import OutboxRelay
from .store.sla import SlaSweeper

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
BUS = web.AppKey("bus", Bus)
RELAY = web.AppKey("relay", OutboxRelay)
SWEEPER = web.AppKey("sweeper", SlaSweeper)


def threading_rules(settings: Settings) -> ThreadingRules:
    same_sender = settings.thread_same_sender_hours
    return ThreadingRules(
        reopen_window=timedelta(days=settings.reopen_window_days),
        same_sender_window=timedelta(hours=same_sender) if same_sender > 0 else None,
    )


async def database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await create_pool(settings.database_url, settings.db_pool_max)
    app[POOL] = pool
    app[API_POOL] = pool
    yield
    try:
        await asyncio.wait_for(pool.close(), timeout=10)
    except TimeoutError:  # a connection that will not come back must not hold up shutdown
        pool.terminate()


async def bus(app: web.Application) -> AsyncIterator[None]:
    b = Bus(app[SETTINGS], source="case-store")
    await b.connect()
    try:
        handlers.register(b, app[POOL], app[THREADING])
        await b.start_consumers()
        app[BUS] = b
        yield
    finally:
        await b.close()  # lets in-flight handlers finish before the pool closes


async def outbox_relay(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    relay = OutboxRelay(app[POOL], app[BUS], settings.outbox_batch, settings.outbox_poll_s)
    relay.start()
    app[RELAY] = relay
    yield
    await relay.stop()


async def sla_sweeper(app: web.Application) -> AsyncIterator[None]:
    sweeper = SlaSweeper(app[POOL], app[SETTINGS].sla_sweep_s)
    sweeper.start()
    app[SWEEPER] = sweeper
    yield
    await sweeper.stop()


async def init_app(settings: Settings) -> web.Application:
    # Uploads stream to the blob store and never meet this limit; it bounds JSON bodies.
    app = web.Application(client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    app[BLOBS] = blob_store(settings)
    app[UPLOAD_LIMIT] = settings.attachment_max_bytes
    app[THREADING] = threading_rules(settings)
    api.install(app)
    # Started in this order, stopped in reverse: the relay stops publishing, then the
    # consumers drain, then the pool closes.
    app.cleanup_ctx.extend([database, bus, outbox_relay, sla_sweeper])

    async def bus_ready() -> None:
        await app[BUS].check_ready()

    async def database_ready() -> None:
        await check_ready(app[POOL])

    async def outbox_ready() -> None:
        await app[RELAY].check_ready()

    async def sweeper_ready() -> None:
        await app[SWEEPER].check_ready()

    add_ops_routes(app, {"bus": bus_ready, "database": database_ready, "outbox": outbox_ready,
                         "sla": sweeper_ready})
    return app
