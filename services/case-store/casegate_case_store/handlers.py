"""case-store's bus consumers. Each applies one event in one transaction: the inbox row
(dedupe), the change to the case and the events it causes (outbox) commit together, so a
redelivered or duplicated message changes nothing twice and no event is lost or invented."""

from __future__ import annotations

import logging

import asyncpg

from casegate_shared.bus import Bus, Reject
from casegate_shared.events import (
    AgentAction,
    AssignmentDecided,
    CaseChange,
    CaseRouted,
    DeliveryUpdated,
    EscalationDecided,
    Envelope,
    MessageReceived,
    NotificationOutcome,
    RouteDecided,
    SlaDecided,
    derived_event_id,
    envelope,
)

from . import agents, assignments
from .clocks import apply_sla_decision
from .domain import timeline
from .store import cases as repo
from .store import inbox
from .inbound import ThreadingRules, receive
from .domain.timeline import EntryKind, TimelineEntry, Visibility
from .store.changes import describe_assignment, lock_visible_any, record
from .store.snapshot import snapshot_from

log = logging.getLogger(__name__)

SOURCE = "case-store"
QUEUES: list[str] = [
    "case-store.inbound", "case-store.decisions", "case-store.outcomes", "case-store.agents",
    "case-store.escalations", "case-store.deliveries", "case-store.clocks",
    "case-store.assignments",
]


def register(bus: Bus, pool: asyncpg.Pool, threading: ThreadingRules) -> None:
    @bus.subscriber("case-store.inbound", ["message.received.*"], MessageReceived)
    async def inbound(event: Envelope[MessageReceived]) -> None:
        await receive(pool, event, threading)

    @bus.subscriber("case-store.agents", ["agent.action"], AgentAction)
    async def agent_actions(event: Envelope[AgentAction]) -> None:
        await agents.apply(pool, event)

    @bus.subscriber("case-store.clocks", ["case.sla_decided"], SlaDecided)
    async def clocks(event: Envelope[SlaDecided]) -> None:
        await apply_sla_decision(pool, event)

    @bus.subscriber("case-store.assignments", ["case.assignment_decided"], AssignmentDecided)
    async def assignment_decisions(event: Envelope[AssignmentDecided]) -> None:
        await assignments.apply(pool, event)

    @bus.subscriber("case-store.escalations", ["case.escalation_decided"], EscalationDecided)
    async def escalations(event: Envelope[EscalationDecided]) -> None:
        await apply_escalation(pool, event)

    @bus.subscriber("case-store.deliveries", ["notification.delivery_updated"], DeliveryUpdated)
    async def deliveries(event: Envelope[DeliveryUpdated]) -> None:
        await record_delivery_update(pool, event)

    @bus.subscriber("case-store.decisions", ["case.route_decided"], RouteDecided)
    async def decisions(event: Envelope[RouteDecided]) -> None:
        await apply_route_decision(pool, event)

    outcomes_keys = ["notification.sent", "notification.failed"]

    @bus.subscriber("case-store.outcomes", outcomes_keys, NotificationOutcome)
    async def outcomes(event: Envelope[NotificationOutcome]) -> None:
        await record_notification(pool, event)


async def apply_route_decision(pool: asyncpg.Pool, event: Envelope[RouteDecided]) -> None:
    """Give the case its team, priority, rule and SLA clocks, and announce `case.routed`."""
    decision = event.data
    async with pool.acquire() as conn, conn.transaction():
        row = await repo.claim_and_route(conn, "decisions", event.id, decision)
        if row is None:
            if await repo.case_id(conn, decision.ref) is None:
                raise Reject(f"no case with reference {decision.ref}")
            log.info("duplicate route decision ignored", extra={"ref": decision.ref})
            return
        routed = CaseRouted(
            ref=decision.ref,
            team=decision.team,
            priority=decision.priority,
            rule=decision.rule,
            case=snapshot_from(row),
        )
        await repo.add_entry_and_event(
            conn, row["id"], timeline.routed(decision), event.correlationid,
            envelope(
                routed,
                source=SOURCE,
                subject=decision.ref,
                correlation_id=event.correlationid,
                event_id=derived_event_id("case.routed", event.id),
            ),
        )
    # The router logged its decision at info already; applying it is routine.
    log.debug("case routed", extra={"ref": decision.ref, "team": decision.team})


async def record_notification(pool: asyncpg.Pool, event: Envelope[NotificationOutcome]) -> None:
    """Note on the case's (internal) timeline what was sent to the customer, or why not.
    One statement: it is its own transaction, and an unknown case leaves no trace."""
    outcome = event.data
    applied = await repo.record_outcome(
        pool, "outcomes", event.id, outcome, timeline.notification(outcome), event.correlationid
    )
    if applied is None:
        raise Reject(f"no case with reference {outcome.ref}")
    if not applied:
        log.info("duplicate notification outcome ignored", extra={"ref": outcome.ref})
        return
    # The notifier logged the send at info already; recording it is routine.
    log.debug(
        "notification outcome recorded",
        extra={"ref": outcome.ref, "outcome": outcome.outcome, "template": outcome.template},
    )


async def apply_escalation(pool: asyncpg.Pool, event: Envelope[EscalationDecided]) -> None:
    """Move a breached case where the router says, raise its priority, tell everyone."""
    decision = event.data
    async with pool.acquire() as conn, conn.transaction():
        if not await inbox.claim(conn, "escalations", event.id):
            return
        case = await lock_visible_any(conn, decision.ref)
        if case is None:
            raise Reject(f"no case with reference {decision.ref}")
        assignee_id = None
        if decision.assignee:
            assignee_id = await conn.fetchval(
                "SELECT id FROM users WHERE handle = $1 AND active", decision.assignee
            )
        before = await describe_assignment(conn, case)
        await conn.execute(
            "UPDATE cases SET team = coalesce($2, team), assignee_id = CASE WHEN $2 IS NULL "
            "THEN coalesce($3, assignee_id) ELSE $3 END, priority = coalesce($4, priority) "
            "WHERE id = $1",
            case.id, decision.team, assignee_id,
            decision.priority.value if decision.priority else None,
        )
        after = await describe_assignment(conn, case)
        target = decision.assignee or decision.team or before
        body = f"Escalated ({decision.clock} breached): {before} -> {after}. {decision.reason}"
        entry = TimelineEntry(EntryKind.ESCALATION, "router", Visibility.INTERNAL, body[:1000],
                              {"clock": decision.clock, "priority": case.priority})
        await record(conn, case, entry, CaseChange.ESCALATED, actor="router", actor_user_id=None,
                     correlation_id=event.correlationid, cause=event.id, previous=before,
                     escalated_to=target, clock=decision.clock)
    log.info("case escalated", extra={"ref": decision.ref, "to": target})


async def record_delivery_update(pool: asyncpg.Pool, event: Envelope[DeliveryUpdated]) -> None:
    """A provider's later word on a sent message (delivered, undelivered, failed)."""
    update = event.data
    async with pool.acquire() as conn, conn.transaction():
        if not await inbox.claim(conn, "deliveries", event.id):
            return
        case_id = await repo.case_id(conn, update.ref)
        if case_id is None:
            raise Reject(f"no case with reference {update.ref}")
        await conn.execute(
            "UPDATE deliveries SET status = $3, reason = coalesce($4, reason), updated_at = now() "
            "WHERE provider = $1 AND provider_message_id = $2",
            update.provider, update.provider_message_id, update.status, update.error_code,
        )
        await repo.add_entry(conn, case_id, timeline.delivery_update(update), event.correlationid)
    log.info("delivery update recorded", extra={"ref": update.ref, "status": update.status})
