"""Parked messages: list them with their reasons, and replay them into their work queue.

Messages are read with basic.get and left unacked while we look, so closing the channel
puts every one we did not replay back where it was, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

import aio_pika

from .bus import ATTEMPT_HEADER, ERROR_HEADER, PARKED_AT_HEADER, ROUTING_KEY_HEADER, Bus


@dataclass(frozen=True)
class Parked:
    queue: str
    message_id: str | None
    type: str | None
    routing_key: str | None
    error: str | None
    parked_at: str | None
    attempts: int | None


def known_queues() -> list[str]:
    """Queue short names every installed service declares (entry points `casegate.topology`)."""
    names: list[str] = []
    for ep in entry_points(group="casegate.topology"):
        names.extend(ep.load())
    return sorted(names)


def _parked(queue: str, msg: aio_pika.abc.AbstractIncomingMessage) -> Parked:
    h = msg.headers or {}
    attempts = h.get(ATTEMPT_HEADER)
    return Parked(
        queue=queue,
        message_id=msg.message_id,
        type=msg.type,
        routing_key=str(h.get(ROUTING_KEY_HEADER) or "") or None,
        error=str(h.get(ERROR_HEADER)) if h.get(ERROR_HEADER) else None,
        parked_at=str(h.get(PARKED_AT_HEADER)) if h.get(PARKED_AT_HEADER) else None,
        attempts=int(attempts) if attempts is not None else None,  # type: ignore[call-overload]
    )


async def list_parked(bus: Bus, queues: list[str]) -> list[Parked]:
    assert bus.connection is not None
    found: list[Parked] = []
    channel = await bus.connection.channel()
    try:
        for name in queues:
            dlq = await channel.declare_queue(f"{bus.queue_name(name)}.dlq", passive=True)
            while (msg := await dlq.get(no_ack=False, fail=False)) is not None:
                found.append(_parked(name, msg))
    finally:
        await channel.close()  # everything we only looked at goes back
    return found


async def replay(bus: Bus, queue: str, message_ids: set[str] | None = None) -> int:
    """Move parked messages of `queue` (all, or those ids) back to its work queue."""
    assert bus.connection is not None
    qname = bus.queue_name(queue)
    replayed = 0
    channel = await bus.connection.channel()
    try:
        dlq = await channel.declare_queue(f"{qname}.dlq", passive=True)
        while (msg := await dlq.get(no_ack=False, fail=False)) is not None:
            if message_ids is not None and msg.message_id not in message_ids:
                continue
            headers = {
                k: v
                for k, v in (msg.headers or {}).items()
                if k not in (ATTEMPT_HEADER, ERROR_HEADER, PARKED_AT_HEADER)
            }
            await bus.publish_to_queue(
                qname,
                aio_pika.Message(
                    body=msg.body,
                    headers=headers,
                    content_type=msg.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=msg.message_id,
                    correlation_id=msg.correlation_id,
                    type=msg.type,
                    app_id=msg.app_id,
                ),
            )
            await msg.ack()
            replayed += 1
    finally:
        await channel.close()
    return replayed
