"""The notifier's application factory: the policy and its templates (checked before anything
starts), Redis, the providers, the bus consumers, the timer task for held notifications and
digests, and the ops routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import TYPE_CHECKING

from aiohttp import web
from redis.asyncio import Redis

from casegate_shared.bus import Bus
from casegate_shared.observability import add_ops_routes

from . import handlers
from .adapters.acklimit import AckLimiter
from .adapters.breaker import CircuitBreaker
from .adapters.card_versions import CardVersions
from .adapters.dedupe import DeliveryLedger
from .adapters.digest import DigestStore
from .adapters.redis_persistence import check_persistence
from .adapters.sandbox import Sandbox
from .adapters.schedule import HeldNotifications
from .adapters.sent_replies import SentReplies
from .cli import check_policy
from .dispatch import Delivery
from .domain.policy import Policy
from .domain.policy_file import load_policy
from .domain.render import Renderer
from .domain.retry import RetryPolicy
from .http import SANDBOX, add_sandbox_routes
from .pending import Pending
from .providers import build_providers
from .settings import Settings

if TYPE_CHECKING:
    from .adapters.case_records import CaseRecords

Clock = Callable[[], datetime]

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
BUS = web.AppKey("bus", Bus)
POLICY = web.AppKey("policy", Policy)
DELIVERY = web.AppKey("delivery", Delivery)
PENDING = web.AppKey("pending", Pending)
CLOCK = web.AppKey("clock", Clock)
RECORDS: web.AppKey[CaseRecords] = web.AppKey("records")
RECORD_TIMEOUT_S = 5.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def load_checked(settings: Settings) -> tuple[Policy, Renderer]:
    """The policy and its templates, or an error that stops the start (never a bad send)."""
    policy = load_policy(settings.notify_policy_file)
    renderer = Renderer(default_language=policy.default_language, public_url=settings.public_url)
    problems = check_policy(policy, renderer)
    if problems:
        raise ValueError(f"{settings.notify_policy_file}: " + "\n".join(problems))
    return policy, renderer


async def open_records(settings: Settings) -> CaseRecords | None:
    """case-store's database, read-only, when configured (asyncpg is imported only then)."""
    if not settings.database_url:
        return None
    try:
        from .adapters.case_records import CaseRecords
    except ImportError as exc:
        raise RuntimeError(
            "CASEGATE_DATABASE_URL is set but the PostgreSQL driver (asyncpg) is not installed"
        ) from exc
    return await CaseRecords.open(settings.database_url, RECORD_TIMEOUT_S)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    policy, renderer = load_checked(s)
    redis = Redis.from_url(s.redis_url, decode_responses=True)
    app[REDIS] = redis
    app[POLICY] = policy
    app[SANDBOX] = Sandbox(redis, s.redis_prefix, s.sandbox_max)
    await check_persistence(redis)
    async with contextlib.AsyncExitStack() as stack:
        records = await open_records(s)
        if records is not None:
            app[RECORDS] = records
            stack.push_async_callback(records.close)
        providers = await build_providers(s, redis, app[SANDBOX], policy, stack)
        app[DELIVERY] = Delivery(
            policy=policy,
            renderer=renderer,
            ledger=DeliveryLedger(redis, s.redis_prefix, s.send_lease_s, s.dedupe_ttl_s),
            providers=providers,
            breaker=CircuitBreaker(
                redis, s.redis_prefix,
                failures=s.breaker_failures, window_s=s.breaker_window_s, probe_s=s.breaker_probe_s,
            ),
            retry=RetryPolicy(s.retry_base_s, s.retry_cap_s, s.delivery_deadline_s),
            clock=app[CLOCK],
            sender_domain=parseaddr(s.smtp_from)[1].rpartition("@")[2],
            record=records,
            agents=records,
            sent_replies=SentReplies(redis, s.redis_prefix, s.dedupe_ttl_s),
            card_versions=CardVersions(redis, s.redis_prefix, s.dedupe_ttl_s),
        )
        yield
    await redis.aclose()


async def _bus(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    bus = Bus(s, source="notifier")
    pending = Pending(
        bus,
        app[DELIVERY],
        HeldNotifications(app[REDIS], s.redis_prefix),
        DigestStore(app[REDIS], s.redis_prefix, s.dedupe_ttl_s),
        tick_s=s.scheduler_tick_s,
        lease_s=s.send_lease_s,
        acks=(AckLimiter(app[REDIS], s.redis_prefix, app[POLICY].ack_limit_per_hour)
              if app[POLICY].ack_limit_per_hour else None),
    )
    app[PENDING] = pending
    await bus.connect()
    app[BUS] = bus
    handlers.register(bus, app[DELIVERY], pending)
    await bus.start_consumers()
    timer = asyncio.create_task(pending.run(), name="notifier-pending")
    yield
    await pending.stop(timer)
    await bus.close()


async def init_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """`clock` is for tests that move time (quiet hours, digests); it defaults to real UTC."""
    app = web.Application()
    app[SETTINGS] = settings
    app[CLOCK] = clock or _utcnow
    # Order matters: consumers and the timer stop first, while Redis and providers are there.
    app.cleanup_ctx.append(_resources)
    app.cleanup_ctx.append(_bus)
    if settings.smtp_url is None:
        # Development mode: the sandbox page shows what went out. With a real mail server it
        # is not served (SMS or Slack without their providers still land in the sandbox list).
        add_sandbox_routes(app)

    async def bus_ready() -> None:
        await app[BUS].check_ready()

    async def redis_ready() -> None:
        await app[REDIS].ping()

    async def record_ready() -> None:
        if RECORDS in app:
            await app[RECORDS].ping()

    # No provider check: a provider that is down delays notifications (retries, breaker), it
    # is not unreadiness. case-store's database is a store: without it nothing is sent.
    checks = {"bus": bus_ready, "redis": redis_ready}
    if settings.database_url:
        checks["delivery_record"] = record_ready
    add_ops_routes(app, checks)
    return app
