"""The router's aiohttp application: rules loaded, bus consumers started, routes added.

The rules file is read first: a bad file stops the start (RulesError) before anything
connects, rather than routing with half a table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from casegate_shared.bus import Bus
from casegate_shared.observability import add_ops_routes

from . import handlers, http
from .domain import RuleSet, load_rules
from .settings import Settings

BUS = web.AppKey("bus", Bus)
RULES = web.AppKey("rules", RuleSet)

# The dry run takes one message; an email body can be long, but never more than this.
MAX_REQUEST_BYTES = 1024 * 1024


def _bus_ctx(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
        bus = Bus(settings, source=handlers.SOURCE)
        await bus.connect()
        try:
            handlers.register(bus, lambda: app[RULES])
            await bus.start_consumers()
            app[BUS] = bus
            yield
        finally:
            await bus.close()

    return bus_ctx


async def init_app(settings: Settings) -> web.Application:
    ruleset = load_rules(settings.rules_file)
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[RULES] = ruleset
    app.cleanup_ctx.append(_bus_ctx(settings))
    app.add_routes(http.routes(lambda: app[RULES]))

    async def bus_ready() -> None:
        await app[BUS].check_ready()

    add_ops_routes(app, {"bus": bus_ready})
    return app
