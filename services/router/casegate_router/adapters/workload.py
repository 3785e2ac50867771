"""What assignment needs from case-store's PostgreSQL, read only: each member's open cases
per channel, who is an active user, the team's most recently assigned agent (the round-robin
cursor), and the cases waiting in a team's queue.

case-store stays the system of record and the router never writes to it: its decisions go
back over the bus. Every read runs in one read-only repeatable-read transaction, so a
decision sees one consistent moment. The sweep's turn is a transaction-level advisory lock:
one router replica sweeps at a time, and the lock goes with the transaction whatever happens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg

from casegate_shared.events import Channel
from casegate_shared.settings import libpq_url

from ..domain.team_queue import NOTE_RULE, QueuedCase, TeamLoad, noted_strategy

SWEEP_LOCK = 0x726F757465720001  # "router" + 1: the queue sweep's turn

# Open means not yet resolved: pending and on-hold cases still belong to their agent.
_OPEN_CASES = """
SELECT u.handle, c.channel, count(*) AS n
FROM users u JOIN cases c ON c.assignee_id = u.id
WHERE u.handle = ANY($1::text[]) AND c.status NOT IN ('resolved', 'closed')
GROUP BY u.handle, c.channel
"""
_ACTIVE = "SELECT handle FROM users WHERE handle = ANY($1::text[]) AND active"
# Among the team's members: a supervisor's claim or an escalation's assignee is nobody's
# turn in the team's rota.
_LAST_ASSIGNED = """
SELECT u.handle FROM cases c JOIN users u ON u.id = c.assignee_id
WHERE c.team = $1 AND c.assigned_at IS NOT NULL AND u.handle = ANY($2::text[])
ORDER BY c.assigned_at DESC, c.id DESC LIMIT 1
"""
# The rule's strategy counts only while the case is on the team that rule routed it to.
# Pages follow the queue's order by its key ($4-$6, after the last case of the page before),
# leaving out the cases ($7) whose decision is already on its way.
_QUEUED = f"""
SELECT c.ref, c.channel, c.tags, c.priority, c.created_at, c.id,
       CASE WHEN r.team = c.team THEN r.note END AS note,
       (SELECT t.correlation_id FROM timeline_entries t WHERE t.case_id = c.id
        ORDER BY t.id LIMIT 1) AS correlation_id
FROM cases c
LEFT JOIN LATERAL (
    SELECT t.data->>'team' AS team,
           (SELECT v->>'reason' FROM jsonb_array_elements(t.data->'explanation') v
            WHERE v->>'rule' = '{NOTE_RULE}' LIMIT 1) AS note
    FROM timeline_entries t WHERE t.case_id = c.id AND t.kind = 'routed'
    ORDER BY t.id DESC LIMIT 1
) r ON true
WHERE c.team = $1 AND c.assignee_id IS NULL AND c.status IN ('new', 'open')
  AND c.merged_into_id IS NULL AND ($2::text IS NULL OR c.ref = $2)
  AND ($4::text IS NULL OR (c.priority, c.created_at, c.id) > ($4, $5::timestamptz, $6::bigint))
  AND c.ref <> ALL($7::text[])
ORDER BY c.priority, c.created_at, c.id
LIMIT $3
"""


# Where a page of a team's queue ended: (priority, created_at, id), its sort key.
QueueKey = tuple[str, datetime, int]


class Reader:
    """Reads inside one read-only transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def take_sweep_turn(self) -> bool:
        """The sweep's turn until this transaction ends, if no other replica has it."""
        return bool(await self._conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SWEEP_LOCK))

    async def team_load(self, team: str, handles: Sequence[str]) -> TeamLoad:
        names = list(handles)
        open_cases: dict[str, dict[Channel, int]] = {}
        for row in await self._conn.fetch(_OPEN_CASES, names):
            open_cases.setdefault(row["handle"], {})[Channel(row["channel"])] = row["n"]
        active = frozenset(r["handle"] for r in await self._conn.fetch(_ACTIVE, names))
        last = await self._conn.fetchval(_LAST_ASSIGNED, team, names)
        return TeamLoad(open_cases, active, last)

    async def unassigned(self, refs: Sequence[str]) -> set[str]:
        """Which of these cases nobody has yet (a decision for them is not applied yet)."""
        if not refs:
            return set()
        rows = await self._conn.fetch(
            "SELECT ref FROM cases WHERE ref = ANY($1::text[]) AND assignee_id IS NULL", list(refs)
        )
        return {r["ref"] for r in rows}

    async def queued(self, team: str, limit: int, ref: str | None = None) -> list[QueuedCase]:
        """The team's waiting cases, most urgent then oldest first; with `ref`, that case
        if it still waits."""
        cases, _ = await self.queue_page(team, limit, ref=ref)
        return cases

    async def queue_page(
        self, team: str, limit: int, *, ref: str | None = None, after: QueueKey | None = None,
        skip: Sequence[str] = (),
    ) -> tuple[list[QueuedCase], QueueKey | None]:
        """Up to `limit` waiting cases after `after`, leaving out `skip`, and the key to read
        the next page after (None when this page was the last)."""
        key = after or (None, None, None)
        rows = await self._conn.fetch(_QUEUED, team, ref, limit, *key, list(skip))
        cases = [
            QueuedCase(
                r["ref"], Channel(r["channel"]), frozenset(r["tags"] or ()),
                noted_strategy(r["note"]), r["correlation_id"],
            )
            for r in rows
        ]
        last = rows[-1] if len(rows) == limit else None
        return cases, (last["priority"], last["created_at"], last["id"]) if last else None


class Workload:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, database_url: str) -> Workload:
        # No connection at start: routing must not wait for this database, and a read
        # that cannot reach it waits for it (`assigning.UNREACHABLE`).
        pool = await asyncpg.create_pool(
            libpq_url(database_url), min_size=0, max_size=4, command_timeout=30
        )
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def check_ready(self) -> None:
        async with self._pool.acquire(timeout=5) as conn:
            await conn.fetchval("SELECT 1")

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Reader]:
        async with self._pool.acquire() as conn, conn.transaction(
            readonly=True, isolation="repeatable_read"
        ):
            yield Reader(conn)

    @asynccontextmanager
    async def sweep_turn(self) -> AsyncIterator[Reader | None]:
        """A reader if this replica has the sweep's turn (held until the block ends), else
        None: another replica is sweeping right now."""
        async with self.reading() as reader:
            yield reader if await reader.take_sweep_turn() else None
