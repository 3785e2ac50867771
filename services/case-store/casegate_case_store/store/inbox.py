"""The inbox: which messages each consumer has already applied.

Its primary key is the dedupe authority. A second transaction inserting the same key waits
for the first to finish, then inserts nothing, so concurrent redeliveries apply once.
"""

from __future__ import annotations

import asyncpg


async def claim(conn: asyncpg.Connection, consumer: str, key: str) -> bool:
    """Record `key` for `consumer` in the caller's transaction; False if it was seen before."""
    inserted = await conn.fetchval(
        "INSERT INTO inbox (consumer, key) VALUES ($1, $2) "
        "ON CONFLICT (consumer, key) DO NOTHING RETURNING true",
        consumer,
        key,
    )
    return inserted is not None
