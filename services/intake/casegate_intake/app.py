"""Intake's application factory: the bus, the mailbox watchers, the web form, provider webhook
and tracking page routes, the ops routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from casegate_shared.bus import Bus
from casegate_shared.observability import add_ops_routes

from . import handlers
from .adapters.imap import MailboxWatcher
from .explain import add_explain_route
from .http import BUS, SETTINGS, add_routes
from .settings import Settings
from .tracking import add_tracking_routes
from .webhooks import add_webhook_routes

__all__ = ["BUS", "SETTINGS", "init_app"]


async def _bus(app: web.Application) -> AsyncIterator[None]:
    bus = Bus(app[SETTINGS], source="intake")
    await bus.connect()
    handlers.register(bus)
    await bus.start_consumers()
    app[BUS] = bus
    yield
    await bus.close()


async def _mailboxes(app: web.Application) -> AsyncIterator[None]:
    """One watcher per configured mailbox (none when CASEGATE_IMAP_MAILBOXES is empty); it
    stops before the bus closes, so nothing is marked processed without a confirm."""
    watcher = MailboxWatcher(app[SETTINGS], app[BUS])  # a bad mailbox URL stops the start
    await watcher.start()
    yield
    await watcher.stop()


async def init_app(settings: Settings) -> web.Application:
    # Every route here takes small bodies; the limit is deliberate (aiohttp's default is 1 MiB).
    app = web.Application(client_max_size=settings.webform_max_bytes)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_bus)
    app.cleanup_ctx.append(_mailboxes)
    add_routes(app)
    add_webhook_routes(app, settings)
    add_tracking_routes(app, settings)
    add_explain_route(app)

    async def bus_ready() -> None:
        await app[BUS].check_ready()

    add_ops_routes(app, {"bus": bus_ready})
    return app
