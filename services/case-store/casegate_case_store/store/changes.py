"""The building blocks every change to a case shares: find and lock the case the caller may
touch, write the timeline entry, the audit row and the `case.*` event, all inside the
caller's transaction so they commit together or not at all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from casegate_shared.events import CaseChange, CaseUpdated, derived_event_id, envelope

from ..domain.cases import CaseStatus
from ..domain.transitions import StatusStamp
from ..domain.timeline import TimelineEntry
from .cases import add_entry
from .outbox import write_event
from .snapshot import load_snapshot
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
    entry_id = await add_entry(conn, case.id, entry, correlation_id, actor_user_id)
    await conn.execute("UPDATE cases SET updated_at = now() WHERE id = $1", case.id)
    snapshot = await load_snapshot(conn, case.id)
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


async def apply_status(conn: asyncpg.Connection, case_id: int, status: str, reason: str | None,
                       stamp: StatusStamp) -> None:
    await conn.execute(
        "UPDATE cases SET status = $2, reason_code = $3, "
        "resolved_at = CASE WHEN $4 THEN NULL ELSE coalesce($5, resolved_at) END, "
        "closed_at = coalesce($6, closed_at), pending_since = $7, "
        "first_response_due = first_response_due + make_interval(secs => $8), "
        "resolution_due = resolution_due + make_interval(secs => $8) WHERE id = $1",
        case_id, status, reason, stamp.clear_resolved, stamp.resolved_at,
        stamp.closed_at, stamp.pending_since, stamp.resume_after_pause_s,
    )


async def describe_assignment(conn: asyncpg.Connection, case: LockedCase) -> str:
    row = await conn.fetchrow(
        "SELECT c.team, u.handle FROM cases c LEFT JOIN users u ON u.id = c.assignee_id "
        "WHERE c.id = $1", case.id,
    )
    return f"{row['team'] or '(no team)'}/{row['handle'] or '(unassigned)'}"
