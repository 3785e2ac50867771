"""The router's aiohttp application: policy files loaded, watched, bus consumers started,
routes added; with case-store's database configured, automatic assignment and its sweep.

The policy files are read first: a bad file stops the start (RulesError) before anything
connects, rather than routing with half a table. Afterwards a bad edit is refused and the
files in force stay (see reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from casegate_shared.bus import Bus
from casegate_shared.events import utcnow
from casegate_shared.observability import ReadinessCheck, add_ops_routes

from . import assigning, handlers, http
from .adapters.workload import Workload
from .assigning import Assigner, Clock, QueueSweep
from .domain import PolicyFiles, load_policies
from .reload import PolicyStore
from .settings import Settings

log = logging.getLogger(__name__)

BUS = web.AppKey("bus", Bus)
POLICIES = web.AppKey("policies", PolicyStore)
WORKLOAD = web.AppKey("workload", Workload)
ASSIGNER = web.AppKey("assigner", Assigner)

# The dry run takes one message; an email body can be long, but never more than this.
MAX_REQUEST_BYTES = 1024 * 1024


def _workload_ctx(url: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def workload_ctx(app: web.Application) -> AsyncIterator[None]:
        app[WORKLOAD] = await Workload.open(url)
        try:
            yield
        finally:
            await app[WORKLOAD].close()

    return workload_ctx


def _bus_ctx(settings: Settings, clock: Clock) -> Callable[[web.Application], AsyncIterator[None]]:
    async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
        bus = Bus(settings, source=handlers.SOURCE)
        await bus.connect()
        try:
            handlers.register(bus, app[POLICIES].current)
            if WORKLOAD in app:
                app[ASSIGNER] = Assigner(bus, app[POLICIES].current, app[WORKLOAD], clock)
                assigning.register(bus, app[ASSIGNER])
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


def _sweep_ctx(interval_s: float) -> Callable[[web.Application], AsyncIterator[None]]:
    async def sweep_ctx(app: web.Application) -> AsyncIterator[None]:
        sweep = QueueSweep(app[ASSIGNER], interval_s)
        sweep.start()
        try:
            yield
        finally:
            await sweep.stop()

    return sweep_ctx


async def init_app(settings: Settings, *, clock: Clock = utcnow) -> web.Application:
    """`clock` is what assignment takes as now (who is on shift); tests move it."""
    files = PolicyFiles(settings.rules_file, settings.sla_file, settings.teams_file)
    store = PolicyStore(files, load_policies(files))
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[POLICIES] = store
    if settings.rules_reload:
        app.cleanup_ctx.append(_watch_ctx)
    if settings.database_url:
        app.cleanup_ctx.append(_workload_ctx(settings.database_url))
    else:
        log.warning("no database_url: automatic assignment is off, cases wait for an agent")
    app.cleanup_ctx.append(_bus_ctx(settings, clock))
    if settings.database_url:
        app.cleanup_ctx.append(_sweep_ctx(settings.assign_interval_s))
    app.add_routes(http.routes(store.current))

    async def bus_ready() -> None:
        await app[BUS].check_ready()

    async def workload_ready() -> None:
        await app[WORKLOAD].check_ready()

    checks: dict[str, ReadinessCheck] = {"bus": bus_ready}
    if settings.database_url:
        checks["database"] = workload_ready
    add_ops_routes(app, checks)
    return app
