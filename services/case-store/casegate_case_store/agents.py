"""Agent actions that arrive over the bus (Slack buttons, messages in a case's thread),
applied like the same action through the API: the Slack user is mapped to a user, the role
and the case's visibility are checked, and the change, its timeline entry, audit row and
event commit together. An action that cannot be applied is parked with the reason."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import asyncpg

from casegate_shared.bus import Reject
from casegate_shared.events import AgentAction, AgentActionKind, CaseChange, Envelope

from .domain import cases as rules
from .domain.cases import CaseStatus
from .domain.timeline import EntryKind, TimelineEntry, Visibility
from .domain.transitions import TransitionRefused, change_status
from .store import inbox
from .store.changes import (
    LockedCase, apply_status, audit, describe_assignment, lock_visible, record,
)
from .store.users import Principal, Role, user_by_slack

log = logging.getLogger(__name__)

WORKING_ROLES = frozenset({Role.RESOLVER, Role.SUPERVISOR, Role.ADMIN})
NEEDS_WORKER = {AgentActionKind.CLAIM, AgentActionKind.RESOLVE, AgentActionKind.ESCALATE}
DEFAULT_RESOLVE_REASON = "completed"


async def apply(pool: asyncpg.Pool, event: Envelope[AgentAction]) -> None:
    action = event.data
    async with pool.acquire() as conn, conn.transaction():
        if not await inbox.claim(conn, "agent", action.dedupe_key):
            log.info("duplicate agent action ignored", extra={"action": action.action.value})
            return
        who = await _actor(conn, action)
        if action.action in NEEDS_WORKER and not who.roles & WORKING_ROLES:
            raise Reject(f"{who.handle} may not {action.action.value} cases")
        case = await _case(conn, action, who)
        entry_id = await _apply(conn, case, who, action, event)
        await audit(conn, who, f"case.{action.action.value}", case.ref,
                    {"via": "slack", "entry_id": entry_id}, event.correlationid)
    log.info("agent action applied", extra={"ref": case.ref, "action": action.action.value})


async def _actor(conn: asyncpg.Connection, action: AgentAction) -> Principal:
    if action.actor_slack_user:
        who = await user_by_slack(conn, action.actor_slack_user)
        if who is not None:
            return who
    raise Reject("the acting Slack user is not a casegate user (PUT /v1/users with slack_user)")


async def _case(conn: asyncpg.Connection, action: AgentAction, who: Principal) -> LockedCase:
    ref = rules.normalize_ref(action.ref)
    if ref is None and action.thread_key:
        ref = await conn.fetchval("SELECT ref FROM cases WHERE slack_thread = $1",
                                  action.thread_key)
    case = await lock_visible(conn, ref or "", who) if ref else None
    if case is None:
        raise Reject(f"no case {ref or action.thread_key!r} that {who.handle} may work on")
    return case


def _entry(kind: EntryKind, who: Principal, body: str, public: bool = False) -> TimelineEntry:
    visibility = Visibility.PUBLIC if public else Visibility.INTERNAL
    return TimelineEntry(kind, f"agent:{who.handle}", visibility, body, {"via": "slack"})


async def _apply(conn: asyncpg.Connection, case: LockedCase, who: Principal,
                 action: AgentAction, event: Envelope[AgentAction]) -> int:
    common = {"actor": who.handle, "actor_user_id": who.user_id,
              "correlation_id": event.correlationid, "cause": event.id}
    kind = action.action
    if kind is AgentActionKind.CLAIM:
        if case.assignee_id not in (None, who.user_id) and not who.sees_everything:
            raise Reject(f"{who.handle} may not claim {case.ref}: it is assigned to someone "
                         "else (a supervisor can move it)")
        before = await describe_assignment(conn, case)
        await conn.execute(
            "UPDATE cases SET assignee_id = $2, status = CASE WHEN status = 'new' THEN 'open' "
            "ELSE status END WHERE id = $1", case.id, who.user_id,
        )
        after = await describe_assignment(conn, case)
        return await record(conn, case, _entry(EntryKind.ASSIGNMENT, who,
                            f"Claimed: {before} -> {after}"), CaseChange.ASSIGNED,
                            previous=before, **common)
    if kind is AgentActionKind.RESOLVE:
        reason = action.reason_code or DEFAULT_RESOLVE_REASON
        if not await conn.fetchval("SELECT active FROM reason_codes WHERE code = $1", reason):
            raise Reject(f"no active reason code {reason!r}")
        try:
            stamp = change_status(case.status, CaseStatus.RESOLVED, datetime.now(UTC),
                                  case.pending_since)
        except TransitionRefused as exc:
            raise Reject(str(exc)) from None
        await apply_status(conn, case, stamp, reason, event.correlationid)
        text = f"Status changed from {case.status.value} to resolved ({reason})"
        return await record(conn, case, _entry(EntryKind.STATUS, who, text, public=True),
                            CaseChange.STATUS_CHANGED, previous=case.status.value,
                            reason_code=reason, **common)
    if kind is AgentActionKind.ESCALATE:
        return await record(conn, case, _entry(EntryKind.ESCALATION, who,
                            f"Escalated by {who.handle}"), CaseChange.ESCALATED, **common)
    body = (action.body or "").strip()
    if not body:
        raise Reject("an empty reply or note")
    if kind is AgentActionKind.REPLY:
        await conn.execute("UPDATE cases SET first_response_at = coalesce(first_response_at, "
                           "now()) WHERE id = $1", case.id)
        return await record(conn, case, _entry(EntryKind.REPLY, who, body, public=True),
                            CaseChange.REPLY_ADDED, body=body, **common)
    return await record(conn, case, _entry(EntryKind.NOTE, who, body), CaseChange.NOTE_ADDED,
                        body=body, **common)
