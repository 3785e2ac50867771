"""The router's business-time answer to a case that stopped waiting for the customer.

When the wait ends, case-store moves the SLA clocks on by the wall time waited at once (so
the sweeper never fires on a time from before the wait), holds them until the answer (that
shift may be early as well as late; `changes.ANSWER_GRACE` at most) and asks the router; the
router, which owns the regions' calendars, answers with the times counted in working time
(`case.sla_decided`).
The answer applies to the resume it names; a case that waited again before it came gets what
the answer corrects in that first wait's wall-time shift added to its times instead (later
waits only added their own shifts); a merged case keeps its clocks. Raised warnings and
breaches stay raised.
"""

from __future__ import annotations

import logging

import asyncpg

from casegate_shared.bus import Reject
from casegate_shared.events import Envelope, SlaDecided

from .domain.timeline import EntryKind, TimelineEntry, Visibility
from .store import inbox
from .store.cases import add_entry

log = logging.getLogger(__name__)

_APPLY = """
UPDATE cases SET
    first_response_warn_at = coalesce($3, first_response_warn_at),
    first_response_due = coalesce($4, first_response_due),
    resolution_warn_at = coalesce($5, resolution_warn_at),
    resolution_due = coalesce($6, resolution_due),
    clocks_hold_until = NULL
WHERE id = $1 AND clocks_resumed_at = $2 AND pending_since IS NULL AND merged_into_id IS NULL
RETURNING first_response_due, resolution_due
"""


# An answer to an older resume: the case waited again since, and its times have moved on by
# that wait too. What this answer corrects in the wall-time shift of its own wait still holds.
_CORRECT = """
UPDATE cases SET
    first_response_warn_at = first_response_warn_at + make_interval(secs => $3),
    first_response_due = first_response_due + make_interval(secs => $4),
    resolution_warn_at = resolution_warn_at + make_interval(secs => $5),
    resolution_due = resolution_due + make_interval(secs => $6)
WHERE id = $1 AND merged_into_id IS NULL
  AND (clocks_resumed_at > $2 OR (clocks_resumed_at = $2 AND pending_since IS NOT NULL))
RETURNING first_response_due, resolution_due
"""
_TIMES = ("first_response_warn_at", "first_response_due", "resolution_warn_at", "resolution_due")


def _when(label: str, at: object) -> str:
    return f"{label} due {at:%Y-%m-%d %H:%M} UTC" if at is not None else ""


async def apply_sla_decision(pool: asyncpg.Pool, event: Envelope[SlaDecided]) -> None:
    decided = event.data
    async with pool.acquire() as conn, conn.transaction():
        if not await inbox.claim(conn, "clocks", event.id):
            return
        case_id = await conn.fetchval(
            "SELECT id FROM cases WHERE ref = $1 FOR UPDATE", decided.ref
        )
        if case_id is None:
            raise Reject(f"no case with reference {decided.ref}")
        row = await conn.fetchrow(
            _APPLY, case_id, decided.resumed_at, decided.first_response_warn_at,
            decided.first_response_due, decided.resolution_warn_at, decided.resolution_due,
        )
        heading = "SLA clocks moved for the wait"
        if row is None and decided.corrections_s:
            row = await conn.fetchrow(_CORRECT, case_id, decided.resumed_at, *(
                decided.corrections_s.get(name, 0.0) for name in _TIMES))
            heading = "SLA clocks corrected for an earlier wait"
        if row is None:
            log.info("stale SLA decision ignored", extra={"ref": decided.ref})
            return
        dues = ", ".join(filter(None, (_when("first response", row["first_response_due"]),
                                       _when("resolution", row["resolution_due"]))))
        body = f"{heading}: {decided.reason}" + (f"; {dues}" if dues else "")
        entry = TimelineEntry(EntryKind.SLA, "router", Visibility.INTERNAL, body[:1000],
                              {"resumed_at": decided.resumed_at.isoformat()})
        await add_entry(conn, case_id, entry, event.correlationid)
    log.info("SLA clocks rescheduled", extra={"ref": decided.ref})
