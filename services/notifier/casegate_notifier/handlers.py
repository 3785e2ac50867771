"""The notifier's bus consumers: a case event in, the policy's verdicts logged, each due
notification sent, held, digested or deferred, and its outcome (`notification.sent` /
`notification.failed`) out.

Every event case-store publishes about a case is bound, so none is unroutable; the policy
decides which ones matter, and one it gives nothing for is simply acknowledged. Customer-facing
changes and internal ones have their own queues, so a burst of SLA warnings never delays an
agent's reply to a customer.

At most once per (event, recipient, channel), under redelivery and across replicas, comes from
the delivery ledger (see dispatch): a redelivered event finds each route settled and only
publishes the same outcome again, under the same event id.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from casegate_shared.bus import Bus, Defer, Reject
from casegate_shared.events import (
    CaseChange,
    CaseOpened,
    CaseRouted,
    CaseUpdated,
    DeliveryUpdated,
    Envelope,
    NotificationOutcome,
)

from .dispatch import Delivery
from .domain.delivery import RecordUnavailable
from .domain.facts import CUSTOMER_VISIBLE, NOTIFICATION_FAILED, AgentDirectory, Facts, facts_of
from .domain.policy import Policy, decide, names_role
from .domain.render import TemplateProblem
from .pending import Pending
from .threads import DELIVERY_REPORTS, THREAD_KEYS, ThreadSync

log = logging.getLogger(__name__)
AGENT_LOOKUP_RETRY_S = 5.0
# Misses that mean a person or a team cannot be reached, as opposed to nobody to reach.
UNREACHED = (
    "no reachable channel", "no customer contact", "no Slack user or email",
    "no known Slack user", "no usable Slack channel", "has no channel in the policy",
    "names no escalation group",
)

CHANGE_KEYS = [f"case.{c.value}" for c in CaseChange]
CUSTOMER_CHANGES = [k for k in CHANGE_KEYS if k in CUSTOMER_VISIBLE]
INTERNAL_CHANGES = [k for k in CHANGE_KEYS if k not in CUSTOMER_VISIBLE]
QUEUES: list[str] = [
    "notifier.cases",
    "notifier.updates",
    "notifier.changes",
    "notifier.internal",
    "notifier.failures",
    "notifier.threads",
    "notifier.deliveries",
]


def register(bus: Bus, delivery: Delivery, pending: Pending) -> None:
    @bus.subscriber("notifier.cases", ["case.opened"], CaseOpened)
    async def on_case_opened(event: Envelope[CaseOpened]) -> None:
        await notify(delivery, pending, event)

    @bus.subscriber("notifier.updates", ["case.routed"], CaseRouted)
    async def on_case_routed(event: Envelope[CaseRouted]) -> None:
        await notify(delivery, pending, event)

    @bus.subscriber("notifier.changes", CUSTOMER_CHANGES, CaseUpdated)
    async def on_customer_change(event: Envelope[CaseUpdated]) -> None:
        await notify(delivery, pending, event)

    @bus.subscriber("notifier.internal", INTERNAL_CHANGES, CaseUpdated)
    async def on_internal_change(event: Envelope[CaseUpdated]) -> None:
        await notify(delivery, pending, event)

    # The team's Slack card and thread: their own queue, so a slow Slack never holds up
    # notifications to people.
    threads = ThreadSync(delivery)

    @bus.subscriber("notifier.threads", THREAD_KEYS, CaseUpdated)
    async def on_card_change(event: Envelope[CaseUpdated]) -> None:
        await threads.on_change(event)

    # A provider's later report (delivered, undelivered) on a reply sent from a case's thread.
    @bus.subscriber("notifier.deliveries", DELIVERY_REPORTS, DeliveryUpdated)
    async def on_delivery_report(event: Envelope[DeliveryUpdated]) -> None:
        await threads.on_delivery_report(event)

    @bus.subscriber("notifier.failures", [NOTIFICATION_FAILED], NotificationOutcome)
    async def on_notification_failed(event: Envelope[NotificationOutcome]) -> None:
        await notify(delivery, pending, event)


async def notify(delivery: Delivery, pending: Pending, event: Envelope[Any]) -> None:
    """Run the policy for this event and accept each notification it gives."""
    facts = await with_assignee(delivery.policy, delivery.agents, facts_of(event))
    verdicts = decide(delivery.policy, facts)
    for v in verdicts:
        if v.notification is None:
            # Someone who should hear it and cannot (no address, no channel configured) is
            # worth a line; a role nobody holds yet, or a rule that does not apply, is
            # routine, and at info would be a line per event.
            log.log(
                logging.INFO if v.audience and any(p in v.reason for p in UNREACHED) else
                logging.DEBUG,
                "nobody to notify",
                extra={"ref": facts.ref, "event": event.type, "rule": v.rule,
                       "audience": v.audience, "reason": v.reason},
            )
    if not verdicts:
        log.debug(
            "the policy has nothing for this event", extra={"ref": facts.ref, "event": event.type}
        )
    for v in verdicts:
        if v.notification is None:
            continue
        try:
            await pending.accept(v.notification, event.correlationid, facts.occurred_at)
        except TemplateProblem as exc:
            raise Reject(str(exc)) from exc  # retrying a broken template cannot help; park it


async def with_assignee(policy: Policy, agents: AgentDirectory | None, facts: Facts) -> Facts:
    """The assignee's addresses, looked up when a rule for this event names the assignee and
    the case does not carry them (it names the assignee, but only participants come with
    addresses)."""
    if (
        agents is None
        or facts.assignee is None
        or facts.assignee_contact is not None
        or facts.assignee == facts.actor
        or not names_role(policy, facts.event_type, "assignee")
    ):
        return facts
    try:
        contact = await agents.agent(facts.assignee)
    except RecordUnavailable as exc:
        # Without it the assignee would silently miss this one: wait for the database.
        raise Defer(f"agent addresses unreadable: {exc}", AGENT_LOOKUP_RETRY_S) from exc
    return facts if contact is None else dataclasses.replace(facts, assignee_contact=contact)
