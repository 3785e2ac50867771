"""Applying the router's automatic assignments (`case.assignment_decided`).

One transaction: the inbox row, the locked case, the change and its `case.assigned` event
commit together. The case is locked before it is judged, so a decision racing an agent's
claim, a transfer or another decision sees the case as the winner left it, and then stands
aside; the agent's row is locked before their cap is checked (see domain.assignment). An
assignment is announced like a manual one (`case.assigned`, actor `router`), so the team's
Slack card and the agent hear of it the same way.
"""

from __future__ import annotations

import logging

import asyncpg

from casegate_shared.bus import Reject
from casegate_shared.events import AssignmentDecided, CaseChange, Envelope

from .domain import assignment as rules
from .store import inbox
from .store.cases import add_entry
from .store.changes import audit, describe_assignment, lock_visible_any, record

log = logging.getLogger(__name__)

INBOX = "assignments"


async def apply(pool: asyncpg.Pool, event: Envelope[AssignmentDecided]) -> None:
    decision = event.data
    async with pool.acquire() as conn, conn.transaction():
        if not await inbox.claim(conn, INBOX, event.id):
            log.info("duplicate assignment decision ignored", extra={"ref": decision.ref})
            return
        case = await lock_visible_any(conn, decision.ref)
        if case is None:
            raise Reject(f"no case with reference {decision.ref}")
        stale = rules.no_longer_applies(
            decision, case.team, case.status, case.assignee_id is not None
        )
        if stale is not None:
            log.info("assignment decision no longer applies",
                     extra={"ref": decision.ref, "assignee": decision.assignee, "why": stale})
            return
        if decision.assignee is None:
            await add_entry(conn, case.id, rules.waiting(decision), event.correlationid)
            log.info("case waits in its team's queue",
                     extra={"ref": decision.ref, "team": decision.team})
            return
        user_id = await conn.fetchval(
            "SELECT id FROM users WHERE handle = $1 AND active", decision.assignee
        )
        if user_id is None:
            await add_entry(conn, case.id, rules.unknown_agent(decision), event.correlationid)
            log.warning("assignment to an unknown or inactive user",
                        extra={"ref": decision.ref, "assignee": decision.assignee})
            return
        if decision.cap is not None:
            channel, open_now = await _open_on_channel(conn, user_id, case.id)
            if rules.over_cap(decision, open_now):
                await add_entry(conn, case.id, rules.at_cap(decision, open_now, channel),
                                event.correlationid)
                log.info("assignment refused: the agent is at their cap",
                         extra={"ref": decision.ref, "assignee": decision.assignee})
                return
        before = await describe_assignment(conn, case)
        await conn.execute(
            "UPDATE cases SET assignee_id = $2, "
            "status = CASE WHEN status = 'new' THEN 'open' ELSE status END WHERE id = $1",
            case.id, user_id,
        )
        after = await describe_assignment(conn, case)
        entry_id = await record(
            conn, case, rules.assigned(decision, before, after), CaseChange.ASSIGNED,
            actor=rules.ACTOR, actor_user_id=None, correlation_id=event.correlationid,
            cause=event.id, previous=before,
        )
        await audit(conn, None, "case.assign", case.ref,
                    {"via": "router", "assignee": decision.assignee,
                     "strategy": decision.strategy, "entry_id": entry_id},
                    event.correlationid)
    log.info("case assigned by the router",
             extra={"ref": decision.ref, "assignee": decision.assignee,
                    "strategy": decision.strategy})


async def _open_on_channel(
    conn: asyncpg.Connection, user_id: int, case_id: int
) -> tuple[str, int]:
    """The case's channel and the agent's unresolved cases on it. Locks the agent's row first
    (NO KEY: references to the user are not held up), so assignments to one agent take turns
    and two cannot both see room for one more."""
    await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE", user_id)
    row = await conn.fetchrow(
        "SELECT c.channel, (SELECT count(*) FROM cases o WHERE o.assignee_id = $1 "
        "AND o.channel = c.channel AND o.status NOT IN ('resolved', 'closed')) AS n "
        "FROM cases c WHERE c.id = $2", user_id, case_id,
    )
    return row["channel"], row["n"]
