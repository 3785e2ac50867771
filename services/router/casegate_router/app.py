"""The router's aiohttp application: policy files loaded, watched, bus consumers started,
routes added.

The policy files are read first: a bad file stops the start (RulesError) before anything
connects, rather than routing with half a table. Afterwards a bad edit is refused and the
files in force stay (see reload).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from casegate_shared.bus import Bus
from casegate_shared.observability import add_ops_routes

from . import handlers, http
from .domain import PolicyFiles, load_policies
from .reload import PolicyStore
from .settings import Settings

BUS = web.AppKey("bus", Bus)
POLICIES = web.AppKey("policies", PolicyStore)

# The dry run takes one message; an email body can be long, but never more than this.
MAX_REQUEST_BYTES = 1024 * 1024


def _bus_ctx(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
        bus = Bus(settings, source=handlers.SOURCE)
        await bus.connect()
        try:
            handlers.register(bus, app[POLICIES].current)
            await bus.start_consumers()
            app[BUS] = bus
            yield
        finally:
            await bus.close()

    return bus_ctx


async def _watch_ctx(app: web.Application) -> AsyncIterator[None]:
    stop = asyncio.Event()
    watcher = asyncio.create_task(app[POLICIES].watch(stop), name="policy-files-watch")
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(watcher, timeout=5)
        except TimeoutError:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def init_app(settings: Settings) -> web.Application:
    files = PolicyFiles(settings.rules_file, settings.sla_file, settings.teams_file)
    store = PolicyStore(files, load_policies(files))
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[POLICIES] = store
    if settings.rules_reload:
        app.cleanup_ctx.append(_watch_ctx)
    app.cleanup_ctx.append(_bus_ctx(settings))
    app.add_routes(http.routes(store.current))

    async def bus_ready() -> None:
        await app[BUS].check_ready()

    add_ops_routes(app, {"bus": bus_ready})
    return app
