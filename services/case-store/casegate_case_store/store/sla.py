"""The SLA sweeper: raises `case.sla_warning` and `case.sla_breached` once per case and clock.

Due times live on the case (set from the router's decision); nothing is a timer in memory.
Each pass claims due clocks with FOR UPDATE SKIP LOCKED, sets the clock's flag and writes the
event in the same transaction, so several replicas share the work, a crash mid-pass rolls
back to "not yet raised", and a raised clock is never raised again. Event ids derive from
(case, clock, kind), so even a replayed pass cannot mint a second event.

Clocks stand still while the case waits for the customer (`pending_customer`), and stop when
they are met: the first public reply stops the first-response clock, resolution the other.
Once the wait ends they hold until the router has counted it in working time (at most
`changes.ANSWER_GRACE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter

from casegate_shared.events import CaseChange

from ..domain.timeline import EntryKind, TimelineEntry, Visibility
from .changes import LockedCase, record

log = logging.getLogger(__name__)

SLA_EVENTS = Counter("casegate_sla_events_total", "SLA warnings and breaches raised",
                     ["clock", "kind"])

RUNNING = "status NOT IN ('pending_customer', 'resolved', 'closed') AND merged_into_id IS NULL"
# A resumed case's clocks wait for the router's answer (store/changes.ANSWER_GRACE at most).
UNHELD = "(clocks_hold_until IS NULL OR clocks_hold_until <= now())"
STOPPED = {"first_response": "first_response_at IS NULL", "resolution": "resolved_at IS NULL"}


@dataclass(frozen=True, slots=True)
class Step:
    clock: str  # first_response | resolution
    kind: CaseChange  # SLA_WARNING | SLA_BREACHED

    @property
    def at(self) -> str:
        return f"{self.clock}_warn_at" if self.kind is CaseChange.SLA_WARNING else f"{self.clock}_due"

    @property
    def pending(self) -> str:
        """The clocks this step still has to raise. Migration 0003 indexes `at` under exactly
        this condition, so finding the next due one never scans the open cases."""
        flag = "warned" if self.kind is CaseChange.SLA_WARNING else "breached"
        return f"NOT {self.clock}_{flag} AND {STOPPED[self.clock]} AND {RUNNING}"

    @property
    def sql(self) -> str:
        flag = "warned" if self.kind is CaseChange.SLA_WARNING else "breached"
        # The warning goes first even when both are overdue (a sweeper that was down).
        extra = f"AND {self.clock}_warned" if self.kind is CaseChange.SLA_BREACHED else ""
        return (
            f"WITH due AS (SELECT id FROM cases WHERE {self.at} <= now() AND {self.pending} "
            f"AND {UNHELD} {extra} ORDER BY {self.at} LIMIT $1 FOR UPDATE SKIP LOCKED) "
            f"UPDATE cases c SET {self.clock}_{flag} = true FROM due WHERE c.id = due.id "
            f"RETURNING c.id, c.ref, c.status, c.team, c.assignee_id, c.priority, "
            f"c.pending_since, c.customer_id, c.{self.clock}_due AS due_at"
        )


STEPS = [Step(c, k) for c in ("first_response", "resolution")
         for k in (CaseChange.SLA_WARNING, CaseChange.SLA_BREACHED)]
# Only clocks still to be raised count: a clock stopped by a reply before its warning time
# must not keep the sweeper awake, nor a held one before its hold ends.
_NEXT = "SELECT least({}, {}) - now()".format(", ".join(
    f"(SELECT min({step.at}) FROM cases WHERE {step.pending} AND {UNHELD})" for step in STEPS
), "(SELECT min(clocks_hold_until) FROM cases WHERE clocks_hold_until > now())")


def _words(step: Step) -> str:
    clock = step.clock.replace("_", " ")
    return f"{clock} time limit {'passed' if step.kind is CaseChange.SLA_BREACHED else 'near'}"


class SlaSweeper:
    def __init__(self, pool: asyncpg.Pool, interval_s: float = 1.0, batch: int = 200) -> None:
        self.pool, self.interval_s, self.batch = pool, interval_s, batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="sla-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check_ready(self) -> None:
        if self._task is None or self._task.done():
            raise RuntimeError("SLA sweeper is not running")

    async def run(self) -> None:
        while True:
            try:
                raised = await self.sweep_once()
                if raised:
                    continue  # more may be due right behind this batch
                await asyncio.sleep(await self._until_next())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: try again on the next tick
                log.warning("SLA sweep failed, retrying", extra={"error": repr(exc)[:300]})
                await asyncio.sleep(self.interval_s)

    async def _until_next(self) -> float:
        """Sleep until the next clock is due, but never longer than the interval (due times
        set by other replicas, or shifted by a pause, are picked up within one interval)."""
        wait = await self.pool.fetchval(_NEXT)
        if wait is None:
            return self.interval_s
        return max(0.01, min(self.interval_s, wait.total_seconds()))

    async def sweep_once(self) -> int:
        raised = 0
        for step in STEPS:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(step.sql, self.batch)
                for row in rows:
                    await self._raise(conn, step, row)
            raised += len(rows)
            if rows:
                SLA_EVENTS.labels(step.clock, step.kind.value).inc(len(rows))
                log.info("SLA clocks raised", extra={"clock": step.clock,
                                                     "kind": step.kind.value, "count": len(rows)})
        return raised

    async def _raise(self, conn: asyncpg.Connection, step: Step, row: asyncpg.Record) -> None:
        case = LockedCase.of(row)
        entry = TimelineEntry(EntryKind.SLA, "sla", Visibility.INTERNAL,
                              f"{_words(step).capitalize()} (due {row['due_at']:%Y-%m-%d %H:%M} UTC)",
                              {"clock": step.clock, "kind": step.kind.value})
        await record(conn, case, entry, step.kind, actor="sla", actor_user_id=None,
                     correlation_id=f"sla:{case.ref}", cause=f"{case.ref}:{step.clock}",
                     clock=step.clock, due_at=row["due_at"])
