"""Whether Redis keeps the notifier's state across a restart.

Held notifications (quiet hours), open digests, the acknowledgement cap and the fast half of
the delivery ledger live only in Redis. Without the append-only file a restart forgets them:
held notifications and digested updates are lost, and every delivery claim has to be checked
against case-store's record again (or, without that record, may be sent twice). The notifier
runs either way; it says so once, at start.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class Persistence(StrEnum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"  # the server refuses CONFIG (managed services often do), or is away


async def appendonly(redis: Redis) -> tuple[Persistence, str]:
    """The server's `appendonly` setting, with what we know about why when we cannot tell."""
    try:
        found = await redis.config_get("appendonly")
    except RedisError as exc:
        return Persistence.UNKNOWN, f"CONFIG GET refused or failed: {type(exc).__name__}"
    value = found.get("appendonly") if isinstance(found, dict) else None
    if isinstance(value, bytes):
        value = value.decode()
    if value is None:
        return Persistence.UNKNOWN, "CONFIG GET appendonly returned nothing"
    return (Persistence.ON if value == "yes" else Persistence.OFF), f"appendonly {value}"


async def check_persistence(redis: Redis) -> Persistence:
    """Log one warning when Redis would forget the notifier's state on a restart."""
    state, detail = await appendonly(redis)
    if state is Persistence.OFF:
        log.warning(
            "Redis runs without the append-only file: a restart forgets held notifications, "
            "open digests and delivery claims; run it with --appendonly yes",
            extra={"redis_persistence": detail},
        )
    elif state is Persistence.UNKNOWN:
        log.info("Redis persistence not checked", extra={"redis_persistence": detail})
    return state
