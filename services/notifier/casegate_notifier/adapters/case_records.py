"""Reading case-store's PostgreSQL, read-only: the delivery record behind the ledger, and the
addresses of the agent a case is assigned to.

case-store owns both tables and writes them; the notifier only reads, on sessions that are
read-only (`default_transaction_read_only`), so a mistake here cannot touch the system of
record. The pool connects lazily: a database that is down at start delays notifications, it
does not stop the notifier. Every database problem is raised as `RecordUnavailable`; the
caller waits and asks again, it never sends blind.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from casegate_shared.settings import libpq_url

from ..domain.delivery import Recorded, RecordUnavailable, recorded_state
from ..domain.facts import AgentContact

POOL_SIZE = 4  # one primary-key read per fresh claim: a few connections keep up with prefetch

_DELIVERIES = (
    "SELECT notification_key, status, provider_message_id, reason FROM deliveries "
    "WHERE notification_key = ANY($1::text[])"
)
_AGENT = "SELECT handle, email, slack_user FROM users WHERE handle = $1 AND active"


class CaseRecords:
    def __init__(self, pool: asyncpg.Pool, timeout_s: float) -> None:
        self._pool = pool
        # Waiting for a connection counts too: the read happens while a send is claimed,
        # and a claim outliving its lease lets a peer send the same message.
        self._timeout_s = timeout_s

    @classmethod
    async def open(cls, database_url: str, timeout_s: float) -> CaseRecords:
        pool = await asyncpg.create_pool(
            libpq_url(database_url),
            min_size=0,
            max_size=POOL_SIZE,
            timeout=timeout_s,
            command_timeout=timeout_s,
            server_settings={
                "default_transaction_read_only": "on",
                "application_name": "casegate-notifier",
            },
        )
        return cls(pool, timeout_s)

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def recorded(self, keys: Sequence[str]) -> dict[str, Recorded]:
        """What case-store recorded for each of `keys` (keys it has no row for are absent)."""
        try:
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                rows = await conn.fetch(_DELIVERIES, list(keys))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise RecordUnavailable(f"deliveries: {type(exc).__name__}") from exc
        return {
            r["notification_key"]: recorded_state(
                r["status"], r["provider_message_id"], r["reason"]
            )
            for r in rows
        }

    async def agent(self, handle: str) -> AgentContact | None:
        """An active agent's addresses, or None when there is no such agent."""
        try:
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                row = await conn.fetchrow(_AGENT, handle)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise RecordUnavailable(f"users: {type(exc).__name__}") from exc
        if row is None:
            return None
        return AgentContact(user=row["handle"], email=row["email"], slack_user=row["slack_user"])
