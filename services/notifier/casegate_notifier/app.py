"""The notifier's application factory: Redis, the email provider, the bus, the ops routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.utils import parseaddr

from aiohttp import web
from redis.asyncio import Redis

from casegate_shared.bus import Bus
from casegate_shared.observability import add_ops_routes

from . import handlers
from .adapters.dedupe import DeliveryLedger
from .adapters.sandbox import Sandbox
from .adapters.smtp import SmtpSender
from .domain.delivery import EmailSender
from .domain.policy import TEMPLATES_IN_USE
from .domain.render import Renderer
from .http import SANDBOX, add_sandbox_routes
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
BUS = web.AppKey("bus", Bus)
EMAIL = web.AppKey("email", EmailSender)


async def _redis(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    redis = Redis.from_url(s.redis_url, decode_responses=True)
    app[REDIS] = redis
    app[SANDBOX] = Sandbox(redis, s.redis_prefix, s.sandbox_max)
    app[EMAIL] = (
        SmtpSender(s.smtp_url, s.smtp_from, s.smtp_timeout_s) if s.smtp_url else app[SANDBOX]
    )
    yield
    await redis.aclose()


async def _bus(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    bus = Bus(s, source="notifier")
    renderer = Renderer()
    for channel, names in TEMPLATES_IN_USE.items():
        renderer.check(channel.value, list(names))  # a broken template fails the start, not a send
    deps = handlers.Deps(
        ledger=DeliveryLedger(app[REDIS], s.redis_prefix, s.send_lease_s, s.dedupe_ttl_s),
        renderer=renderer,
        email=app[EMAIL],
        sender_domain=parseaddr(s.smtp_from)[1].rpartition("@")[2],
    )
    await bus.connect()
    app[BUS] = bus
    handlers.register(bus, deps)
    await bus.start_consumers()
    yield
    await bus.close()


async def init_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    # Order matters: consumers start last and stop first, while Redis is still there.
    app.cleanup_ctx.append(_redis)
    app.cleanup_ctx.append(_bus)
    if settings.smtp_url is None:
        add_sandbox_routes(app)

    async def bus_ready() -> None:
        await app[BUS].check_ready()

    async def redis_ready() -> None:
        await app[REDIS].ping()

    # No SMTP check: a provider that is down delays mail (retries), it is not unreadiness.
    add_ops_routes(app, {"bus": bus_ready, "redis": redis_ready})
    return app
