"""Which Slack thread a sent reply's later delivery reports belong in.

A provider reports on a message (Twilio: delivered, undelivered, failed) through intake long
after the notifier sent it, naming only the case and the notification key. When an agent's
reply reaches the customer and the case has a Slack thread, the notifier remembers here, by
notification key, that thread and the masked recipient, so the report can be said where the
agent wrote. Best effort, like the echo itself: forgotten after the TTL or when Redis is
flushed; the case's timeline records the report either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis.asyncio import Redis

from ..domain.delivery import Medium


@dataclass(frozen=True, slots=True)
class SentReply:
    ref: str
    thread: str  # the case's Slack card, "channel:ts"
    medium: Medium
    to: str  # masked: enough for the agent to recognise, not to copy


class SentReplies:
    def __init__(self, redis: Redis, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s

    def _key(self, notification_key: str) -> str:
        return f"{self._prefix}:sent-reply:{notification_key}"

    async def remember(self, notification_key: str, reply: SentReply) -> None:
        doc = {"ref": reply.ref, "thread": reply.thread, "medium": reply.medium.value,
               "to": reply.to}
        await self._redis.set(self._key(notification_key), json.dumps(doc), ex=self._ttl_s)

    async def find(self, notification_key: str) -> SentReply | None:
        raw = await self._redis.get(self._key(notification_key))
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            return SentReply(str(doc["ref"]), str(doc["thread"]), Medium(doc["medium"]),
                             str(doc["to"]))
        except (ValueError, KeyError, TypeError):
            return None  # not ours to read: no echo rather than a stuck report
