"""Listening in on a test's exchange: every event matching the binding keys, parsed, in the
order it arrived (an exclusive queue, gone with the connection)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika

from casegate_shared.settings import BusSettings


@asynccontextmanager
async def published(bus_settings: BusSettings, *keys: str) -> AsyncIterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    connection = await aio_pika.connect(bus_settings.amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            bus_settings.bus_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        for key in keys:
            await queue.bind(exchange, key)

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            seen.append(json.loads(message.body))

        await queue.consume(keep, no_ack=True)
        yield seen
    finally:
        await connection.close()
