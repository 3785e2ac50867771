"""case-store's bus consumers. Each applies one event in one transaction: the inbox row
(dedupe), the change to the case and the events it causes (outbox) commit together, so a
redelivered or duplicated message changes nothing twice and no event is lost or invented."""

from __future__ import annotations

import logging

import asyncpg

from casegate_shared.bus import Bus, Reject
from casegate_shared.events import (
    CaseCustomer,
    CaseRouted,
    Envelope,
    MessageReceived,
    NotificationOutcome,
    RouteDecided,
    derived_event_id,
    envelope,
)

from .domain import cases as rules
from .domain import timeline
from .store import cases as repo
from .store import inbox
from .store.outbox import write_event

log = logging.getLogger(__name__)

SOURCE = "case-store"
QUEUES: list[str] = ["case-store.inbound", "case-store.decisions", "case-store.outcomes"]


def register(bus: Bus, pool: asyncpg.Pool) -> None:
    @bus.subscriber("case-store.inbound", ["message.received.*"], MessageReceived)
    async def inbound(event: Envelope[MessageReceived]) -> None:
        await receive_message(pool, event)

    @bus.subscriber("case-store.decisions", ["case.route_decided"], RouteDecided)
    async def decisions(event: Envelope[RouteDecided]) -> None:
        await apply_route_decision(pool, event)

    @bus.subscriber("case-store.outcomes", ["notification.sent", "notification.failed"], NotificationOutcome)
    async def outcomes(event: Envelope[NotificationOutcome]) -> None:
        await record_notification(pool, event)


async def receive_message(pool: asyncpg.Pool, event: Envelope[MessageReceived]) -> None:
    """Thread the message into the customer's named case, or open a new case for it."""
    msg = event.data
    async with pool.acquire() as conn, conn.transaction():
        if not await inbox.claim(conn, "inbound", msg.dedupe_key):
            log.info("duplicate message ignored", extra={"dedupe_key": msg.dedupe_key})
            return
        identities = rules.sender_identities(msg.sender)
        customer = await repo.find_or_create_customer(conn, identities, msg.sender.name)
        entry = timeline.message_in(msg)

        if ref := rules.normalize_ref(msg.case_ref):
            case_id = await repo.case_of_customer(conn, ref, customer.id)
            if case_id is not None:
                await repo.add_entry(conn, case_id, entry, event.correlationid)
                await repo.touch(conn, case_id)
                log.info("message added to case", extra={"ref": ref, "channel": msg.channel.value})
                return

        case = rules.new_case(msg)
        refs = rules.candidate_refs(msg.new_case_ref)
        opened = await repo.open_case(conn, refs, customer.id, case)
        await repo.add_entry(conn, opened.id, entry, event.correlationid)
        email, phone = rules.customer_contact(identities)
        payload = rules.case_opened(
            opened.ref,
            CaseCustomer(id=customer.id, name=customer.name, email=email, phone=phone),
            case,
            opened.created_at,
        )
        await write_event(
            conn,
            envelope(
                payload,
                source=SOURCE,
                subject=opened.ref,
                correlation_id=event.correlationid,
                event_id=derived_event_id("case.opened", opened.ref),
            ),
        )
    log.info("case opened", extra={"ref": opened.ref, "channel": msg.channel.value})


async def apply_route_decision(pool: asyncpg.Pool, event: Envelope[RouteDecided]) -> None:
    """Give the case its team, priority and rule, and announce `case.routed`."""
    decision = event.data
    async with pool.acquire() as conn, conn.transaction():
        if not await inbox.claim(conn, "decisions", event.id):
            log.info("duplicate route decision ignored", extra={"ref": decision.ref})
            return
        case = await repo.lock_case(conn, decision.ref)
        if case is None:
            raise Reject(f"no case with reference {decision.ref}")
        await repo.set_routing(
            conn,
            case.id,
            team=decision.team,
            priority=decision.priority.value,
            rule=decision.rule,
            status=rules.status_after_routing(case.status),
        )
        await repo.add_entry(conn, case.id, timeline.routed(decision), event.correlationid)
        routed = CaseRouted(
            ref=decision.ref, team=decision.team, priority=decision.priority, rule=decision.rule
        )
        await write_event(
            conn,
            envelope(
                routed,
                source=SOURCE,
                subject=decision.ref,
                correlation_id=event.correlationid,
                event_id=derived_event_id("case.routed", event.id),
            ),
        )
    log.info("case routed", extra={"ref": decision.ref, "team": decision.team})


async def record_notification(pool: asyncpg.Pool, event: Envelope[NotificationOutcome]) -> None:
    """Note on the case's (internal) timeline what was sent to the customer, or why not."""
    outcome = event.data
    async with pool.acquire() as conn, conn.transaction():
        if not await inbox.claim(conn, "outcomes", event.id):
            log.info("duplicate notification outcome ignored", extra={"ref": outcome.ref})
            return
        case_id = await repo.case_id(conn, outcome.ref)
        if case_id is None:
            raise Reject(f"no case with reference {outcome.ref}")
        await repo.add_entry(conn, case_id, timeline.notification(outcome), event.correlationid)
    log.info(
        "notification outcome recorded",
        extra={"ref": outcome.ref, "outcome": outcome.outcome, "template": outcome.template},
    )
