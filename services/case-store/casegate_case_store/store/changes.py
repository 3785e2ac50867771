"""The building blocks every change to a case shares: find and lock the case the caller may
touch, write the timeline entry, the audit row and the `case.*` event, all inside the
caller's transaction so they commit together or not at all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from casegate_shared.events import (
    CaseChange,
    CaseUpdated,
    SlaResumed,
    derived_event_id,
    envelope,
)

from ..domain.cases import CaseStatus
from ..domain.transitions import StatusStamp
from ..domain.timeline import TimelineEntry
from .outbox import write_event
from .snapshot import SNAPSHOT_SELECT, snapshot_from
from .users import Principal

SOURCE = "case-store"

# Who may see a case: supervisors and admins all; others through their team, their
# assignment or their participation (object-level access, not only the role).
def visible_sql(first: int) -> str:
    """The visibility condition on `cases c`, its three parameters numbered from `first`
    (bind them with `access_args`)."""
    everything, teams, user = f"${first}", f"${first + 1}", f"${first + 2}"
    return (
        f"({everything}::boolean OR c.team = ANY({teams}::text[]) OR c.assignee_id = {user} "
        f"OR EXISTS (SELECT 1 FROM case_participants p WHERE p.case_id = c.id "
        f"AND p.user_id = {user}))"
    )


@dataclass(frozen=True, slots=True)
class LockedCase:
    id: int
    ref: str
    status: CaseStatus
    team: str | None
    assignee_id: int | None
    priority: str
    pending_since: datetime | None
    customer_id: int

    @classmethod
    def of(cls, row: asyncpg.Record) -> LockedCase:
        """From a row selected with CASE_COLUMNS."""
        return cls(row["id"], row["ref"], CaseStatus(row["status"]), row["team"],
                   row["assignee_id"], row["priority"], row["pending_since"], row["customer_id"])


# The columns LockedCase.of reads, for any query over `cases`.
CASE_COLUMNS = "id, ref, status, team, assignee_id, priority, pending_since, customer_id"


def access_args(who: Principal) -> tuple[bool, list[str], int]:
    return who.sees_everything, list(who.teams), who.user_id


async def lock_visible(conn: asyncpg.Connection, ref: str, who: Principal) -> LockedCase | None:
    """The case, locked for this transaction, if `who` may work on it; None otherwise (the
    API answers 404 either way, so a ref's existence does not leak)."""
    row = await conn.fetchrow(
        "SELECT c.id, c.ref, c.status, c.team, c.assignee_id, c.priority, c.pending_since, "
        f"c.customer_id FROM cases c WHERE c.ref = $1 AND {visible_sql(2)} FOR UPDATE OF c",
        ref, *access_args(who),
    )
    if row is None:
        return None
    return LockedCase.of(row)


async def lock_visible_any(conn: asyncpg.Connection, ref: str) -> LockedCase | None:
    """The case, locked, for the services themselves (no user's visibility applies)."""
    row = await conn.fetchrow(
        "SELECT id, ref, status, team, assignee_id, priority, pending_since, customer_id "
        "FROM cases WHERE ref = $1 FOR UPDATE", ref,
    )
    if row is None:
        return None
    return LockedCase.of(row)


async def audit(
    conn: asyncpg.Connection,
    who: Principal | None,
    action: str,
    target: str,
    detail: dict[str, Any],
    correlation_id: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor_user_id, actor_token_id, action, target, detail, "
        "correlation_id) VALUES ($1, $2, $3, $4, $5, $6)",
        who.user_id if who else None, who.token_id if who else None, action, target, detail,
        correlation_id,
    )


# The entry, the case's updated_at and the snapshot of the case as it then stands, in one
# round trip (what earlier statements of the transaction changed is seen; the entry is no
# part of the snapshot).
_ENTRY_AND_SNAPSHOT = f"""
WITH entry AS (
    INSERT INTO timeline_entries
        (case_id, kind, actor, visibility, body, data, correlation_id, actor_user_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id
), touched AS (
    UPDATE cases SET updated_at = now() WHERE id = $1 RETURNING *
)
SELECT (SELECT id FROM entry) AS entry_id, snapshot.*
FROM ({SNAPSHOT_SELECT.format(cases="touched")}) AS snapshot
"""


async def record(
    conn: asyncpg.Connection,
    case: LockedCase,
    entry: TimelineEntry,
    change: CaseChange,
    *,
    actor: str,
    actor_user_id: int | None,
    correlation_id: str,
    cause: str | None = None,
    **detail: Any,
) -> int:
    """Timeline entry plus `case.<change>` event; the event id derives from the entry, or from
    `cause` (the triggering event's id) so a replayed trigger cannot mint a second event."""
    row = await conn.fetchrow(
        _ENTRY_AND_SNAPSHOT, case.id, entry.kind.value, entry.actor, entry.visibility.value,
        entry.body, entry.data, correlation_id, actor_user_id,
    )
    entry_id: int = row["entry_id"]
    snapshot = snapshot_from(row)
    payload = CaseUpdated(
        change=change, ref=case.ref, actor=actor, case=snapshot, entry_id=entry_id, **detail
    )
    event_id = derived_event_id("case", change.value, cause or f"entry:{entry_id}")
    await write_event(
        conn,
        envelope(
            payload,
            source=SOURCE,
            subject=case.ref,
            correlation_id=correlation_id,
            event_id=event_id,
            routing_key=f"case.{change.value}",
        ),
    )
    return entry_id


# The customer's open cases (at most 50, the newest), locked in id order like every lock of
# several cases (a merge), so two such transactions cannot deadlock: what a change to the
# customer is announced on.
_OPEN_CASES_OF = """
SELECT id, ref, status, team, assignee_id, priority, pending_since, customer_id FROM cases
WHERE id IN (SELECT id FROM cases WHERE customer_id = $1
             AND status NOT IN ('resolved', 'closed') AND merged_into_id IS NULL
             ORDER BY id DESC LIMIT 50)
ORDER BY id FOR UPDATE
"""


async def record_contact_change(
    conn: asyncpg.Connection, customer_id: int, entry: TimelineEntry, correlation_id: str
) -> list[str]:
    """The entry and `case.contact_changed` on each of the customer's open cases, so their
    Slack cards say again where a reply would go; the refs it went on."""
    refs = []
    for row in await conn.fetch(_OPEN_CASES_OF, customer_id):
        case = LockedCase.of(row)
        await record(conn, case, entry, CaseChange.CONTACT_CHANGED, actor="customer",
                     actor_user_id=None, correlation_id=correlation_id)
        refs.append(case.ref)
    return refs


# How long a resumed case's clocks wait for the router's answer in working time before the
# wall-time shift counts (the router down or far behind).
ANSWER_GRACE = "30 minutes"

# A status change; when it ends a wait for the customer ($8 = when), every SLA time moves on
# by the wall time waited, the clocks hold for the router's answer, and the times as they
# stood before come back for `case.sla_resumed`.
_STATUS = f"""
WITH before AS (
    SELECT id, pending_since, sla_policy, region, priority, first_response_warn_at,
           first_response_due, resolution_warn_at, resolution_due,
           CASE WHEN $8::timestamptz IS NOT NULL AND pending_since IS NOT NULL
                THEN greatest($8::timestamptz - pending_since, interval '0') END AS waited
    FROM cases WHERE id = $1
)
UPDATE cases c SET status = $2, reason_code = coalesce($3, c.reason_code),
    resolved_at = CASE WHEN $4 THEN NULL ELSE coalesce($5, c.resolved_at) END,
    closed_at = coalesce($6, c.closed_at), pending_since = $7,
    first_response_warn_at = c.first_response_warn_at + coalesce(b.waited, interval '0'),
    first_response_due = c.first_response_due + coalesce(b.waited, interval '0'),
    resolution_warn_at = c.resolution_warn_at + coalesce(b.waited, interval '0'),
    resolution_due = c.resolution_due + coalesce(b.waited, interval '0'),
    clocks_resumed_at = CASE WHEN b.waited IS NULL THEN c.clocks_resumed_at ELSE $8 END,
    clocks_hold_until = CASE WHEN b.waited IS NULL THEN c.clocks_hold_until
                             ELSE $8::timestamptz + interval '{ANSWER_GRACE}' END
FROM before b WHERE c.id = b.id
RETURNING b.waited, b.pending_since, b.sla_policy, b.region, b.priority,
    b.first_response_warn_at, b.first_response_due, b.resolution_warn_at, b.resolution_due
"""


async def apply_status(conn: asyncpg.Connection, case: LockedCase, stamp: StatusStamp,
                       reason: str | None, correlation_id: str) -> None:
    """Set the status (a None reason keeps the current one). A change that ends a wait for
    the customer moves the SLA clocks on by the wall time waited at once, so the sweeper
    never fires on a time from before the wait, holds them (`ANSWER_GRACE` at most) and asks
    the router (`case.sla_resumed`) for the times in business time of the case's region."""
    row = await conn.fetchrow(
        _STATUS, case.id, stamp.status.value, reason, stamp.clear_resolved, stamp.resolved_at,
        stamp.closed_at, stamp.pending_since, stamp.resumed_at,
    )
    if row is None or row["waited"] is None or stamp.resumed_at is None:
        return
    resumed = SlaResumed(
        ref=case.ref, priority=row["priority"], sla_policy=row["sla_policy"],
        region=row["region"], paused_at=row["pending_since"], resumed_at=stamp.resumed_at,
        first_response_warn_at=row["first_response_warn_at"],
        first_response_due=row["first_response_due"],
        resolution_warn_at=row["resolution_warn_at"], resolution_due=row["resolution_due"],
    )
    event_id = derived_event_id(SlaResumed.event_type, case.ref, stamp.resumed_at.isoformat())
    await write_event(conn, envelope(resumed, source=SOURCE, subject=case.ref,
                                     correlation_id=correlation_id, event_id=event_id))


async def describe_assignment(conn: asyncpg.Connection, case: LockedCase) -> str:
    row = await conn.fetchrow(
        "SELECT c.team, u.handle FROM cases c LEFT JOIN users u ON u.id = c.assignee_id "
        "WHERE c.id = $1", case.id,
    )
    return f"{row['team'] or '(no team)'}/{row['handle'] or '(unassigned)'}"
