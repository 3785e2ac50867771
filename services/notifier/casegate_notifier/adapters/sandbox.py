"""The sandbox provider: every outbound message, on any channel, lands in a Redis list instead
of a mailbox, a phone or a Slack workspace.

A list shared in Redis (not process memory), so every notifier replica writes to, and every
replica's /sandbox shows, the same messages. It keeps the newest `max_messages`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..domain.delivery import Outbound, SendResult


class Sandbox:
    name = "sandbox"

    def __init__(self, redis: Redis, prefix: str, max_messages: int) -> None:
        self._redis = redis
        self._key = f"{prefix}:sandbox:messages"
        self._max = max_messages

    async def send(self, outbound: Outbound) -> SendResult:
        item = {
            "channel": outbound.channel.value,
            "to": outbound.to,
            "subject": outbound.subject,
            "body": outbound.text,
            "case_ref": outbound.case_ref,
            "event_type": outbound.event_type,
            "time": datetime.now(UTC).isoformat(),
            "dedupe_key": outbound.dedupe_key,
            "message_id": outbound.message_id,
        }
        if outbound.blocks is not None:
            item["blocks"] = outbound.blocks
        if outbound.thread is not None:
            item["thread"] = outbound.thread
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(self._key, json.dumps(item))
                pipe.ltrim(self._key, -self._max, -1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            return SendResult.failed(f"sandbox unavailable: {exc}", temporary=True)
        return SendResult.sent(outbound.message_id)

    async def messages(
        self, case_ref: str | None = None, channel: str | None = None
    ) -> list[dict[str, Any]]:
        """Every captured message, oldest first, optionally only one case's or one channel's."""
        raw = await self._redis.lrange(self._key, 0, -1)
        items = [json.loads(r) for r in raw]
        if case_ref is not None:
            items = [i for i in items if i.get("case_ref") == case_ref]
        if channel is not None:
            items = [i for i in items if i.get("channel") == channel]
        return items

    async def clear(self) -> int:
        return int(await self._redis.delete(self._key))
