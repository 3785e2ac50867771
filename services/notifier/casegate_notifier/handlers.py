"""The notifier's bus consumers: a case event in, each due notification delivered at most once,
its outcome (`notification.sent` / `notification.failed`) out.

At most once per (event, recipient, channel), under redelivery and across replicas, comes from
the delivery ledger: claim the key, send, record the result, then publish. A redelivered event
finds "done" or "failed" and only publishes the same outcome again, under the same event id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from casegate_shared.bus import Bus, Defer, Reject, Retry
from casegate_shared.events import (
    CaseOpened,
    CaseRouted,
    Envelope,
    NotificationOutcome,
    derived_event_id,
    envelope,
)

from .adapters.dedupe import Claim, DeliveryLedger
from .domain.delivery import EmailSender, OutboundEmail, SendResult, message_id_for
from .domain.policy import Notification, decide
from .domain.render import Rendered, Renderer, TemplateProblem

log = logging.getLogger(__name__)

QUEUES: list[str] = ["notifier.cases", "notifier.updates"]
SOURCE = "notifier"

NOTIFICATIONS = Counter(
    "casegate_notifications_total",
    "Notification attempts by channel, provider and result",
    ["channel", "provider", "result"],
)


@dataclass(frozen=True, slots=True)
class Deps:
    ledger: DeliveryLedger
    renderer: Renderer
    email: EmailSender
    sender_domain: str  # right-hand side of the Message-IDs we mint


def register(bus: Bus, deps: Deps) -> None:
    @bus.subscriber("notifier.cases", ["case.opened"], CaseOpened)
    async def on_case_opened(event: Envelope[CaseOpened]) -> None:
        await notify(bus, deps, event)

    # The policy has nothing for case.routed yet (the team's Slack post will hang here), but
    # the notifier is its subscriber: an event nobody is bound to would be unroutable.
    @bus.subscriber("notifier.updates", ["case.routed"], CaseRouted)
    async def on_case_routed(event: Envelope[CaseRouted]) -> None:
        await notify(bus, deps, event)


async def notify(bus: Bus, deps: Deps, event: Envelope[Any]) -> None:
    """Run the policy for this event and deliver each notification it gives."""
    for verdict in decide(event):
        if verdict.notification is None:
            log.info(
                "nobody to notify",
                extra={"ref": event.subject, "rule": verdict.rule, "reason": verdict.reason},
            )
            continue
        await deliver_once(bus, deps, event, verdict.notification)


def mask(address: str) -> str:
    """j***@example.com: enough to tell recipients apart in a log, not to harvest them."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


async def deliver_once(bus: Bus, deps: Deps, event: Envelope[Any], n: Notification) -> None:
    """Send `n` unless the ledger says it went (or failed for good) already; publish the outcome."""
    try:
        rendered = deps.renderer.render(n)
    except TemplateProblem as exc:
        raise Reject(str(exc)) from exc  # retrying a broken template cannot help; park it
    message_id = message_id_for(n.dedupe_key, n.case_ref, deps.sender_domain)
    claim = await deps.ledger.claim(n.dedupe_key)
    if claim is Claim.BUSY:
        # A peer is sending it, or crashed while sending: its lease expires, then we look
        # again. Waiting on a lease is no failure, so it spends no attempt.
        raise Defer(f"delivery {n.dedupe_key} is claimed by another attempt", deps.ledger.lease_s)
    if claim is Claim.DONE:
        result = SendResult.sent(message_id)  # Message-IDs are derived, so this is the real one
    elif claim is Claim.FAILED:
        result = SendResult.failed("failed permanently on an earlier attempt", temporary=False)
    else:
        result = await send_claimed(deps, n, rendered, message_id)
    await publish_outcome(bus, deps, event, n, result, repeated=claim is not Claim.CLAIMED)


async def send_claimed(
    deps: Deps, n: Notification, rendered: Rendered, message_id: str
) -> SendResult:
    """We hold the claim: send, and leave the ledger saying what happened (or give it back)."""
    outbound = OutboundEmail(
        to=n.recipient,
        to_name=n.recipient_name,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=message_id,
        case_ref=n.case_ref,
        dedupe_key=n.dedupe_key,
    )
    try:
        result = await deps.email.send(outbound)
    except Exception:
        await deps.ledger.release(n.dedupe_key)  # adapters should not raise; if one does, retry
        raise
    if result.ok:
        await deps.ledger.mark_done(n.dedupe_key)
    elif result.temporary:
        await deps.ledger.release(n.dedupe_key)
        NOTIFICATIONS.labels(n.channel.value, deps.email.name, "retry").inc()
        log.warning(
            "notification not sent yet, will retry",
            extra={"ref": n.case_ref, "to": mask(n.recipient), "reason": result.reason},
        )
        raise Retry(result.reason or "temporary failure")
    else:
        await deps.ledger.mark_failed(n.dedupe_key)
    return result


async def publish_outcome(
    bus: Bus,
    deps: Deps,
    event: Envelope[Any],
    n: Notification,
    result: SendResult,
    *,
    repeated: bool,
) -> None:
    outcome = "sent" if result.ok else "failed"
    payload = NotificationOutcome(
        ref=n.case_ref,
        notification_key=n.dedupe_key,
        channel=n.channel,
        recipient=n.recipient,
        template=n.template,
        provider=deps.email.name,
        outcome=outcome,
        provider_message_id=result.provider_message_id,
        reason=result.reason,
    )
    await bus.publish(
        envelope(
            payload,
            source=SOURCE,
            correlation_id=event.correlationid,
            subject=n.case_ref,
            event_id=derived_event_id("notification", n.dedupe_key, outcome),
            routing_key=f"notification.{outcome}",
        )
    )
    if not repeated:
        NOTIFICATIONS.labels(n.channel.value, deps.email.name, outcome).inc()
    log.info(
        "notification sent" if result.ok else "notification failed",
        extra={
            "ref": n.case_ref,
            "rule": n.rule,
            "channel": n.channel.value,
            "to": mask(n.recipient),
            "provider": deps.email.name,
            "repeated": repeated,
            "reason": result.reason,
        },
    )
