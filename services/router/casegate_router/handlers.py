"""Bus consumers of the router: a case that opened gets a routing decision; a breached SLA
clock gets an escalation decision.

Deciding is pure and fast, so a redelivery simply decides again; the derived event id makes
the repeat the same event, and the consumer's inbox absorbs it. Each message takes the
policies in force once, so a reload in between never mixes two versions in one decision.
"""

from __future__ import annotations

import logging
from typing import Any

from casegate_shared.bus import Bus, Reject
from casegate_shared.events import (
    CaseOpened,
    CaseUpdated,
    Envelope,
    Payload,
    RouteDecided,
    SlaDecided,
    SlaResumed,
    derived_event_id,
    envelope,
)

from .domain import Message, decide, recorded_explanation
from .domain.escalation import NotABreach, decide_escalation
from .domain.policies import PoliciesProvider
from .domain.rules import Decision
from .domain.sla import (
    CLOCKS,
    SlaConfig,
    calendar_for,
    due_times,
    resume_clocks,
    span,
    warning_at,
)

log = logging.getLogger(__name__)

SOURCE = "router"
# With case-store's database configured, assigning.py adds the assignment consumers.
QUEUES: list[str] = [
    "router.cases", "router.escalations", "router.clocks", "router.assignment", "router.transfers",
]
_TIMES = ("first_response_warn_at", "first_response_due", "resolution_warn_at", "resolution_due")


def message_of(case: CaseOpened) -> Message:
    """What the rules look at: the message, its sender, and the case snapshot when sent."""
    snapshot = case.case
    contact = snapshot.customer if snapshot is not None else None
    return Message(
        channel=case.channel,
        subject=case.subject,
        body=case.body,
        sender_email=case.customer.email or (contact.email if contact else None),
        sender_phone=case.customer.phone or (contact.phone if contact else None),
        customer_tags=frozenset(contact.tags) if contact else frozenset(),
        customer_tier=contact.tier if contact else None,
        region=snapshot.region if snapshot is not None else None,
        priority=case.priority,
        at=case.opened_at,
    )


def sla_clocks(sla: SlaConfig, decision: Decision, case: CaseOpened) -> dict[str, Any]:
    """The case's SLA policy, region and due times, in business time of its region, counted
    from when the case opened. The hard limit (maximum) is what breaches; the warning fires
    at the policy's share of it. case-store keeps them; its sweeper raises the events."""
    policy_name = decision.sla_policy or sla.default_policy
    region_name = case.case.region if case.case is not None and case.case.region else None
    policy, region = sla.policy(policy_name), sla.region(region_name)
    due = due_times(policy, decision.priority, region, case.opened_at)
    warn = {
        clock: warning_at(policy, decision.priority, region, case.opened_at, clock)
        for clock in CLOCKS
    }
    return {
        "sla_policy": policy_name,
        "region": region_name or sla.default_region,
        "first_response_warn_at": warn["first_response"],
        "first_response_due": due.first_response.maximum,
        "resolution_warn_at": warn["resolution"],
        "resolution_due": due.resolution.maximum,
    }


def clocks_after_wait(sla: SlaConfig, resumed: SlaResumed) -> SlaDecided:
    """The case's SLA times moved on by the working time of its wait, in its region's calendar
    (or around the clock, where its policy says so for its priority)."""
    region = sla.region(resumed.region)
    calendar = calendar_for(sla.policy(resumed.sla_policy), resumed.priority, region)
    moved = resume_clocks(calendar, resumed.paused_at, resumed.resumed_at,
                          {name: getattr(resumed, name) for name in _TIMES})
    reason = (
        f"waited {span(moved.waited)} for the customer, {span(moved.waited_working)} of it "
        f"in working time of {resumed.region or sla.default_region}; the clocks stood still"
    )
    corrections = {name: shift.total_seconds() for name, shift in moved.corrections.items()}
    return SlaDecided(ref=resumed.ref, resumed_at=resumed.resumed_at, reason=reason,
                      corrections_s=corrections, **moved.times)


async def answer(bus: Bus, cause: Envelope[Any], decision: Payload, ref: str) -> None:
    """Publish the router's decision about `cause`: its id derives from the cause's, so a
    redelivered cause gives the same event, which the consumer's inbox absorbs."""
    await bus.publish(
        envelope(
            decision,
            source=SOURCE,
            correlation_id=cause.correlationid,
            subject=ref,
            event_id=derived_event_id(decision.event_type, cause.id),
        )
    )


def register(bus: Bus, policies: PoliciesProvider) -> None:
    @bus.subscriber("router.cases", ["case.opened"], CaseOpened)
    async def route_opened_case(event: Envelope[CaseOpened]) -> None:
        case = event.data
        current = policies()
        decision = decide(current.rules, message_of(case))
        clocks = sla_clocks(current.sla, decision, case)
        routed = RouteDecided(
            ref=case.ref,
            team=decision.team,
            priority=decision.priority,
            rule=decision.rule,
            tags=list(decision.tags),
            explanation=recorded_explanation(decision),
            rules_version=decision.rules_version,
            assignment=decision.assignment,
            **clocks,
        )
        await answer(bus, event, routed, case.ref)
        log.info(
            "case routed",
            extra={
                "ref": case.ref,
                "team": decision.team,
                "priority": decision.priority.value,
                "rule": decision.rule,
                "rules_version": decision.rules_version,
            },
        )

    @bus.subscriber("router.escalations", ["case.sla_breached"], CaseUpdated)
    async def escalate_breach(event: Envelope[CaseUpdated]) -> None:
        try:
            decided = decide_escalation(event.data, policies().sla.escalation)
        except NotABreach as exc:
            raise Reject(str(exc)) from None
        await answer(bus, event, decided, decided.ref)
        log.info(
            "escalation decided",
            extra={
                "ref": decided.ref,
                "clock": decided.clock,
                "team": decided.team,
                "assignee": decided.assignee,
                "priority": decided.priority.value if decided.priority else None,
            },
        )

    @bus.subscriber("router.clocks", ["case.sla_resumed"], SlaResumed)
    async def reschedule_after_wait(event: Envelope[SlaResumed]) -> None:
        decided = clocks_after_wait(policies().sla, event.data)
        await answer(bus, event, decided, decided.ref)
        log.info("SLA clocks rescheduled after a wait", extra={"ref": decided.ref})
