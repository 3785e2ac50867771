"""The bus: one durable topic exchange, quorum queues, confirmed publishes, and the failure
policy every consumer shares.

Failure policy lives here once, never in handlers (handlers only raise):
- success: ack after the handler returned (its effect is durable by then);
- `Defer`: wait in a delay queue without spending an attempt (a peer holds a lease);
- `Retry` or any unexpected exception: republish to a delay queue (TTL, dead-lettered back to
  the work queue) with the attempt count, ack; after `bus_max_attempts` tries, park it;
- `Reject`, or an event that does not parse: park at once;
- parking = publish to `<queue>.dlq` with the reason in headers, confirmed, then ack.
A consumer that dies mid-message leaves it unacked, so the broker redelivers it; a message
that keeps killing consumers is dead-lettered by the broker's own `x-delivery-limit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import ValidationError

from .events import Envelope, Payload
from .observability import BUS_CONSUMED, BUS_HANDLE_SECONDS, BUS_PUBLISHED, correlated
from .settings import BusSettings

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Payload)
Handler = Callable[[Envelope[P]], Awaitable[None]]

ATTEMPT_HEADER = "x-casegate-attempt"
ROUTING_KEY_HEADER = "x-casegate-routing-key"
ERROR_HEADER = "x-casegate-error"
PARKED_AT_HEADER = "x-casegate-parked-at"


class Retry(Exception):
    """Temporary failure: try again later, with backoff, until the attempts run out."""


class Defer(Exception):
    """Not now, and not a failure (e.g. a peer holds a lease): come back after `seconds`
    without spending an attempt."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.seconds = seconds


class Reject(Exception):
    """Permanent failure: trying again cannot help, park the message now."""


class BusUnavailable(Exception):
    """The broker could not be reached or did not confirm in time."""


@dataclass
class Subscription(Generic[P]):
    name: str
    bindings: list[str]
    model: type[P]
    handler: Handler[P]
    queue: AbstractQueue | None = None
    channel: AbstractChannel | None = None
    inflight: set[asyncio.Task[None]] = field(default_factory=set)
    # Made once: parametrizing the envelope and looking metric children up by label cost
    # more per message than parsing a small event does.
    envelope: type[Envelope[Any]] = field(init=False, repr=False)
    handled: Any = field(init=False, repr=False)  # this queue's handler-time histogram
    acked: Any = field(init=False, repr=False)  # this queue's "ok" counter

    def __post_init__(self) -> None:
        self.envelope = Envelope[self.model]  # type: ignore[name-defined]
        self.handled = BUS_HANDLE_SECONDS.labels(self.name)
        self.acked = BUS_CONSUMED.labels(self.name, "ok")


def retry_delays_ms(settings: BusSettings) -> list[int]:
    """Backoff per failed attempt: base, 2*base, 4*base, ... (one delay queue each)."""
    return [settings.bus_retry_base_ms * 2**i for i in range(settings.bus_max_attempts - 1)]


class Bus:
    """A connection with one confirming publisher channel and a channel per subscription."""

    def __init__(self, settings: BusSettings, source: str) -> None:
        self.settings = settings
        self.source = source
        self.connection: AbstractRobustConnection | None = None
        self._pub_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._default_exchange: AbstractExchange | None = None
        self._subscriptions: list[Subscription[Any]] = []

    # --- lifecycle ------------------------------------------------------------------

    def queue_name(self, name: str) -> str:
        return f"{self.settings.bus_prefix}.{name}"

    async def connect(self, timeout: float = 30.0) -> None:
        """Connect, retrying with backoff: a robust connection does not retry its first try."""
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            try:
                self.connection = await aio_pika.connect_robust(
                    self.settings.amqp_url, client_properties={"connection_name": self.source}
                )
                break
            except (OSError, aio_pika.exceptions.AMQPConnectionError) as exc:
                if time.monotonic() + delay > deadline:
                    raise BusUnavailable(f"cannot reach the broker: {exc}") from exc
                log.warning("broker not reachable, retrying", extra={"error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._pub_channel = await self.connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._exchange = await self._pub_channel.declare_exchange(
            self.settings.bus_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._default_exchange = self._pub_channel.default_exchange

    async def close(self) -> None:
        for sub in self._subscriptions:
            if sub.queue is not None and sub.channel is not None and not sub.channel.is_closed:
                await sub.queue.cancel(sub.name)
        for sub in self._subscriptions:
            if sub.inflight:
                await asyncio.wait(sub.inflight, timeout=5)
        if self.connection is not None:
            await self.connection.close()

    # --- publishing -----------------------------------------------------------------

    async def publish(self, event: Envelope[Any], *, timeout: float = 10.0) -> None:
        """Persistent, mandatory, confirmed. Raises BusUnavailable if not confirmed."""
        await self.publish_raw(
            event.type,
            event.model_dump_json().encode(),
            event_id=event.id,
            correlation_id=event.correlationid,
            timeout=timeout,
        )

    async def publish_raw(
        self,
        routing_key: str,
        body: bytes,
        *,
        event_id: str,
        correlation_id: str,
        timeout: float = 10.0,
    ) -> None:
        """Publish an already serialized envelope (the outbox relay stores them so)."""
        if self._exchange is None:
            raise BusUnavailable("bus is not connected")
        message = aio_pika.Message(
            body=body,
            content_type="application/cloudevents+json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event_id,
            correlation_id=correlation_id,
            type=routing_key,
            app_id=self.source,
        )
        try:
            await self._exchange.publish(message, routing_key, mandatory=True, timeout=timeout)
        except aio_pika.exceptions.PublishError:
            raise  # unroutable: a missing binding is a bug, never a silent drop
        except (asyncio.TimeoutError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            raise BusUnavailable(f"publish of {routing_key} not confirmed: {exc!r}") from exc
        BUS_PUBLISHED.labels(routing_key).inc()

    async def publish_to_queue(self, queue: str, message: aio_pika.Message) -> None:
        """Direct publish through the default exchange (retry, park, replay)."""
        assert self._default_exchange is not None
        await self._default_exchange.publish(message, queue, mandatory=True, timeout=10)

    # --- consuming ------------------------------------------------------------------

    def subscriber(
        self, name: str, bindings: list[str], model: type[P]
    ) -> Callable[[Handler[P]], Handler[P]]:
        """Decorator: bind `handler` to queue `<prefix>.<name>` receiving `bindings`."""

        def register(handler: Handler[P]) -> Handler[P]:
            self._subscriptions.append(Subscription(name, bindings, model, handler))
            return handler

        return register

    async def declare(self, sub: Subscription[Any], channel: AbstractChannel) -> AbstractQueue:
        """Declare the work queue, its delay queues and its parking queue, and bind it."""
        s = self.settings
        qname = self.queue_name(sub.name)
        await channel.declare_queue(
            f"{qname}.dlq", durable=True, arguments={"x-queue-type": "quorum"}
        )
        for delay in retry_delays_ms(s) or [s.bus_retry_base_ms]:  # Defer needs one
            # Delay queues only hold copies for seconds; classic queues with TTL and a
            # dead-letter target are the light, long-proven way (a quorum queue each would
            # triple the broker's Raft groups for no gain in safety worth having here).
            await channel.declare_queue(
                f"{qname}.retry.{delay}ms",
                durable=True,
                arguments={
                    "x-queue-type": "classic",
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": qname,
                },
            )
        queue = await channel.declare_queue(
            qname,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                # 3.10 quorum queues redeliver a poison message forever without this.
                "x-delivery-limit": s.bus_delivery_limit,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{qname}.dlq",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        exchange = await channel.declare_exchange(
            s.bus_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for key in sub.bindings:
            await queue.bind(exchange, key)
        return queue

    async def start_consumers(self) -> None:
        assert self.connection is not None, "connect() first"
        for sub in self._subscriptions:
            sub.channel = await self.connection.channel()
            await sub.channel.set_qos(prefetch_count=self.settings.bus_prefetch)
            sub.queue = await self.declare(sub, sub.channel)
            await sub.queue.consume(self._on_message(sub), consumer_tag=sub.name)

    async def declare_all(self) -> None:
        """Declare every subscription's topology without consuming (used by `make up`)."""
        assert self.connection is not None
        channel = await self.connection.channel()
        for sub in self._subscriptions:
            await self.declare(sub, channel)
        await channel.close()

    async def check_ready(self) -> None:
        """Readiness: the connection and every consuming channel are open."""
        if self.connection is None or self.connection.is_closed:
            raise BusUnavailable("no broker connection")
        if self._pub_channel is None or self._pub_channel.is_closed:
            raise BusUnavailable("publisher channel closed")
        for sub in self._subscriptions:
            if sub.channel is None or sub.channel.is_closed:
                raise BusUnavailable(f"consumer {sub.name} is not consuming")

    def _on_message(
        self, sub: Subscription[Any]
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            # aiormq runs each delivery in its own task, so up to `prefetch` overlap.
            task = asyncio.current_task()
            if task is not None:
                sub.inflight.add(task)
            try:
                with sub.handled.time():
                    await self._handle(sub, message)
            finally:
                if task is not None:
                    sub.inflight.discard(task)

        return on_message

    async def _handle(self, sub: Subscription[Any], message: AbstractIncomingMessage) -> None:
        try:
            event = sub.envelope.model_validate_json(message.body)
        except ValidationError as exc:
            await self._park(sub, message, f"unparseable event: {exc}"[:1000])
            return
        with correlated(event.correlationid):
            try:
                await sub.handler(event)
            except Reject as exc:
                await self._park(sub, message, f"rejected: {exc}")
                return
            except Defer as exc:
                await self._defer(sub, message, exc)
                return
            except Exception as exc:  # the consumer base owns failure policy, see module doc
                await self._retry_or_park(sub, message, exc)
                return
            await message.ack()
            sub.acked.inc()

    async def _retry_or_park(
        self, sub: Subscription[Any], message: AbstractIncomingMessage, exc: Exception
    ) -> None:
        attempt = int((message.headers or {}).get(ATTEMPT_HEADER, 1) or 1)  # type: ignore[arg-type]
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        delays = retry_delays_ms(self.settings)
        if attempt > len(delays):
            await self._park(sub, message, f"gave up after {attempt} attempts: {reason}")
            return
        log.warning(
            "handler failed, will retry",
            extra={"queue": sub.name, "attempt": attempt, "error": reason},
            exc_info=not isinstance(exc, Retry),
        )
        target = f"{self.queue_name(sub.name)}.retry.{delays[attempt - 1]}ms"
        await self._forward(message, target, {ATTEMPT_HEADER: attempt + 1, ERROR_HEADER: reason})
        BUS_CONSUMED.labels(sub.name, "retried").inc()

    async def _defer(self, sub: Subscription[Any], message: AbstractIncomingMessage, exc: Defer) -> None:
        """Wait in the shortest delay queue that covers the wait (or the longest there is)."""
        delays = retry_delays_ms(self.settings) or [self.settings.bus_retry_base_ms]
        wanted = exc.seconds * 1000
        delay = next((d for d in delays if d >= wanted), delays[-1])
        target = f"{self.queue_name(sub.name)}.retry.{delay}ms"
        await self._forward(message, target, {})
        BUS_CONSUMED.labels(sub.name, "deferred").inc()

    async def _park(self, sub: Subscription[Any], message: AbstractIncomingMessage, reason: str) -> None:
        log.error("message parked", extra={"queue": sub.name, "error": reason})
        await self._forward(
            message,
            f"{self.queue_name(sub.name)}.dlq",
            {ERROR_HEADER: reason, PARKED_AT_HEADER: datetime.now(UTC).isoformat()},
        )
        BUS_CONSUMED.labels(sub.name, "parked").inc()

    async def _forward(
        self, message: AbstractIncomingMessage, queue: str, headers: dict[str, Any]
    ) -> None:
        """Copy the message to `queue` (confirmed), then ack it; if that fails, requeue it."""
        merged = dict(message.headers or {})
        merged.setdefault(ROUTING_KEY_HEADER, message.routing_key)
        merged.update(headers)
        copy = aio_pika.Message(
            body=message.body,
            headers=merged,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            type=message.type,
            app_id=message.app_id,
        )
        try:
            await self.publish_to_queue(queue, copy)
        except Exception:
            log.exception("could not forward message, leaving it to the broker", extra={"queue": queue})
            with contextlib.suppress(Exception):  # a dead channel requeues it anyway
                await message.nack(requeue=True)
            return
        await message.ack()
