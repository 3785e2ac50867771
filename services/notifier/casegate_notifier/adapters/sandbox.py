"""The sandbox email provider: every outbound email lands in a Redis list instead of a mailbox.

A list shared in Redis (not process memory), so every notifier replica writes to, and every
replica's /sandbox shows, the same messages. It keeps the newest `max_messages`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..domain.delivery import OutboundEmail, SendResult


class Sandbox:
    name = "sandbox"

    def __init__(self, redis: Redis, prefix: str, max_messages: int) -> None:
        self._redis = redis
        self._key = f"{prefix}:sandbox:messages"
        self._max = max_messages

    async def send(self, message: OutboundEmail) -> SendResult:
        item = {
            "channel": "email",
            "to": message.to,
            "subject": message.subject,
            "body": message.text,
            "case_ref": message.case_ref,
            "time": datetime.now(UTC).isoformat(),
            "dedupe_key": message.dedupe_key,
            "message_id": message.message_id,
        }
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(self._key, json.dumps(item))
                pipe.ltrim(self._key, -self._max, -1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            return SendResult.failed(f"sandbox unavailable: {exc}", temporary=True)
        return SendResult.sent(message.message_id)

    async def messages(self, case_ref: str | None = None) -> list[dict[str, Any]]:
        """Every captured message, oldest first, optionally only those of one case."""
        raw = await self._redis.lrange(self._key, 0, -1)
        items = [json.loads(r) for r in raw]
        if case_ref is not None:
            items = [i for i in items if i.get("case_ref") == case_ref]
        return items

    async def clear(self) -> int:
        return int(await self._redis.delete(self._key))
