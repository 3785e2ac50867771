"""Bus consumers of the router: a case that opened gets a routing decision.

Deciding is pure and fast, so a redelivery simply decides again; the derived event id makes
the repeat the same event, and the consumer's inbox absorbs it.
"""

from __future__ import annotations

import logging

from casegate_shared.bus import Bus
from casegate_shared.events import CaseOpened, Envelope, RouteDecided, derived_event_id, envelope

from .domain import Message, RulesProvider, decide

log = logging.getLogger(__name__)

SOURCE = "router"
QUEUES: list[str] = ["router.cases"]


def register(bus: Bus, rules: RulesProvider) -> None:
    @bus.subscriber("router.cases", ["case.opened"], CaseOpened)
    async def route_opened_case(event: Envelope[CaseOpened]) -> None:
        case = event.data
        decision = decide(rules(), Message(case.channel, case.subject, case.body))
        await bus.publish(
            envelope(
                RouteDecided(
                    ref=case.ref,
                    team=decision.team,
                    priority=decision.priority,
                    rule=decision.rule,
                    tags=list(decision.tags),
                    explanation=decision.explanation,
                ),
                source=SOURCE,
                correlation_id=event.correlationid,
                subject=case.ref,
                event_id=derived_event_id(RouteDecided.event_type, event.id),
            )
        )
        log.info(
            "case routed",
            extra={
                "ref": case.ref,
                "team": decision.team,
                "priority": decision.priority.value,
                "rule": decision.rule,
            },
        )
