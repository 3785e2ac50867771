"""Delivering one notification: at most once per route, falling back on permanent failures,
waiting out temporary ones until a deadline, sparing a provider whose breaker is open; then
its outcome on the bus.

The route loop is the whole fallback story. For each route in order: claim its delivery key
(event, recipient, channel) in the ledger, check a fresh claim against case-store's delivery
record (Redis may have forgotten a key the record still knows), send, settle the ledger. A
permanent failure moves on to the next route; a redelivered event replays the same loop and
finds every earlier route already settled, so it neither resends nor skips. A temporary
failure gives the claim back and asks the caller to come back later (`Wait`): the bus path
turns that into a Defer, the timer path into a later due time. Past the deadline it is
reported as failed instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Counter

from casegate_shared.bus import Bus
from casegate_shared.events import NotificationOutcome, derived_event_id, envelope

from .adapters.breaker import CircuitBreaker, Gate
from .adapters.card_versions import CardVersions
from .adapters.sent_replies import SentReplies
from .domain.delivery import (
    Claim,
    DeliveryRecord,
    Failure,
    Ledger,
    Medium,
    Outbound,
    Provider,
    Recorded,
    RecordUnavailable,
    Route,
    SendResult,
    delivery_key,
    message_id_for,
)
from .domain.facts import AgentDirectory
from .domain.policy import Notification, Policy
from .domain.render import Renderer
from .domain.retry import RetryPolicy, gave_up_reason, give_up, next_delay
from .domain.reply_route import reply_destination
from .domain.slack_blocks import case_blocks

log = logging.getLogger(__name__)
SOURCE = "notifier"

NOTIFICATIONS = Counter(
    "casegate_notifications_total",
    "Notification attempts by channel, provider and result",
    ["channel", "provider", "result"],
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What delivering needs, passed in (no globals): one per app."""

    policy: Policy
    renderer: Renderer
    ledger: Ledger
    providers: dict[Medium, Provider]
    breaker: CircuitBreaker
    retry: RetryPolicy
    clock: Callable[[], datetime]
    sender_domain: str  # right-hand side of the Message-IDs we mint
    # case-store's delivery record and agent addresses (CASEGATE_DATABASE_URL); None: the
    # ledger in Redis alone, and assignees only where they are participants too.
    record: DeliveryRecord | None = None
    agents: AgentDirectory | None = None
    sent_replies: SentReplies | None = None  # which thread a reply's later reports go to
    card_versions: CardVersions | None = None  # the newest change each Slack card drew


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class Settled:
    route: Route
    key: str
    provider: str
    result: SendResult
    repeated: bool  # an earlier attempt settled it; this only repeats the outcome
    failures: list[str] = field(default_factory=list)  # earlier routes, "<medium>: <reason>"
    fallback_from: Medium | None = None
    permanent: bool = False


def mask(address: str) -> str:
    """j***@example.com, +1***0100: enough to tell recipients apart in a log, not to harvest."""
    local, at, domain = address.partition("@")
    if at:
        return f"{local[:1]}***@{domain}"
    return f"{address[:2]}***{address[-4:]}" if len(address) > 8 else "***"


def webhook_document(n: Notification, key: str) -> dict[str, Any]:
    """What a subscriber receives: the event's public facts, no message text."""
    fields = ("subject", "status", "previous", "priority", "team", "assignee", "channel",
              "reason_code", "occurred_at")
    return {
        "id": derived_event_id("webhook", key),
        "type": n.event_type,
        "ref": n.case_ref,
        "event_id": n.event_id,
        "data": {k: n.values[k] for k in fields if n.values.get(k)},
    }


def outbound_for(d: Delivery, n: Notification, route: Route, key: str) -> Outbound:
    message_id = message_id_for(key, n.case_ref or "digest", d.sender_domain)
    if route.medium is Medium.WEBHOOK:
        return Outbound(
            to=route.address, subject=f"{n.event_type} {n.case_ref}", text="",
            message_id=message_id,
            case_ref=n.case_ref, dedupe_key=key, channel=route.medium, event_type=n.event_type,
            data=webhook_document(n, key),
        )
    r = d.renderer.render(n, route.medium)  # raises TemplateProblem: the caller decides
    text, blocks = r.text, r.blocks
    if route.medium is Medium.SLACK and n.card is not None:
        # A team's new case: the card agents act on, with its buttons.
        text = f"{n.card.ref} [{n.card.priority.value}] {n.card.subject}"
        blocks = case_blocks(n.card, reply_to=reply_destination(n.card, d.policy))
    # Into the case's Slack thread only where that thread lives; a person gets a message of
    # their own.
    thread = n.thread if n.thread and n.thread.partition(":")[0] == route.address else None
    return Outbound(
        to=route.address, to_name=n.recipient_name, subject=r.subject, text=text, html=r.html,
        blocks=blocks, message_id=message_id, case_ref=n.case_ref, dedupe_key=key,
        channel=route.medium, event_type=n.event_type, in_reply_to=n.in_reply_to,
        references=n.references, thread=thread,
    )


async def deliver(d: Delivery, n: Notification, since: datetime) -> Settled | Wait:
    """Walk the routes; `since` is when trying began (the deadline counts from it)."""
    failures: list[str] = []
    last: Settled | None = None
    keys = [delivery_key(n.event_id, r) for r in n.routes]
    recorded: dict[str, Recorded] | None = None  # read once, at the first fresh claim
    for index, route in enumerate(n.routes):
        key = keys[index]
        provider = d.providers.get(route.medium)
        name = provider.name if provider is not None else "none"
        fallback_from = last.route.medium if last is not None else None
        if provider is None:
            result = SendResult.failed(f"no provider for {route.medium.value}", temporary=False)
            last = Settled(route, key, name, result, False, list(failures), fallback_from, True)
            failures.append(f"{route.medium.value}: {result.reason}")
            continue
        claim = await d.ledger.claim(key)
        if claim is Claim.CLAIMED and d.record is not None:
            if recorded is None:
                try:
                    recorded = await d.record.recorded(keys)
                except RecordUnavailable as exc:
                    # No deadline here: the record is read because Redis may have forgotten
                    # a send, and reporting a failure for what may have gone out would tell
                    # the escalation group a customer was not reached. It goes late instead.
                    why = f"delivery record unreadable: {exc}"
                    waited = max(0.0, (d.clock() - since).total_seconds())
                    await d.ledger.release(key)
                    log.warning("delivery record unreadable, will retry",
                                extra={"ref": n.case_ref, "reason": str(exc)})
                    return Wait(next_delay(d.retry, waited), why)
            claim = await _recall(d.ledger, key, recorded, keys[index + 1:])
            if claim is not Claim.CLAIMED:
                log.info("delivery known from the record, not sent again",
                         extra={"ref": n.case_ref, "to": mask(route.address),
                                "channel": route.medium.value, "state": claim.value})
        if claim is Claim.BUSY:
            # A peer is sending it, or crashed while sending: its lease ends, then we look
            # again. Waiting on a lease is no failure, so it spends nothing.
            return Wait(float(d.ledger.lease_s), f"delivery {key} is claimed by another attempt")
        if claim is Claim.DONE:
            message_id = await d.ledger.sent_id(key) or message_id_for(
                key, n.case_ref or "digest", d.sender_domain)
            sent = SendResult.sent(message_id)
            return Settled(route, key, name, sent, True, failures, fallback_from)
        if claim is Claim.FAILED:
            earlier = await d.ledger.failure(key)
            result = SendResult.failed(earlier.reason, temporary=not earlier.permanent)
            last = Settled(
                route, key, name, result, True, list(failures), fallback_from, earlier.permanent
            )
            if not earlier.permanent:
                return last  # it gave up: reported failed, no fallback
            failures.append(f"{route.medium.value}: {earlier.reason}")
            continue
        step = await _send_claimed(d, n, route, key, provider, since)
        if isinstance(step, Wait):
            return step
        last = Settled(
            route, key, name, step, False, list(failures), fallback_from, not step.temporary
        )
        if step.ok or step.temporary:  # sent, or gave up at the deadline: nothing left to try
            return last
        failures.append(f"{route.medium.value}: {step.reason}")
    assert last is not None  # a notification has at least one route
    return last


async def _recall(
    ledger: Ledger, key: str, recorded: dict[str, Recorded], later: list[str]
) -> Claim:
    """We hold a fresh claim, yet case-store may have recorded this delivery: then Redis forgot
    it (a restart without persistence, an eviction, a redelivery after the TTL). The ledger is
    set back to what the record says, and that is the answer; with no record the claim stands."""
    found = recorded.get(key)
    if found is None and any(k in recorded for k in later):
        # The record names a later route: the loop moved past this one, so it failed for good.
        found = Recorded(Claim.FAILED, Failure("failed for good on an earlier attempt"))
    if found is None:
        return Claim.CLAIMED
    if found.claim is Claim.DONE:
        await ledger.mark_done(key, found.provider_message_id)
    else:
        await ledger.mark_failed(key, found.failure or Failure("failed on an earlier attempt"))
    return found.claim


async def _send_claimed(
    d: Delivery, n: Notification, route: Route, key: str, provider: Provider, since: datetime
) -> SendResult | Wait:
    """We hold the claim: send, and leave the ledger saying what happened (or give it back)."""
    # Each webhook subscriber is its own endpoint: one that is down must not stop the others.
    webhook = route.medium is Medium.WEBHOOK
    circuit = f"{provider.name}:{route.address}" if webhook else provider.name
    admission = await d.breaker.admit(circuit)
    if not admission.may_send:
        waited = max(0.0, (d.clock() - since).total_seconds())
        why = f"{circuit} breaker is {admission.gate.value}"
        if give_up(d.retry, waited, 0):  # the deadline holds while a provider is down, too
            return await _give_up(d, route, key, provider, waited, why)
        await d.ledger.release(key)
        return Wait(max(admission.wait_s, 0.05), why)
    try:
        outbound = outbound_for(d, n, route, key)
        result = await provider.send(outbound)
    except BaseException:
        await d.ledger.release(key)  # adapters should not raise; if one does, retry
        raise
    channel = route.medium.value
    if result.ok:
        await _sent(d, key, circuit, admission.gate, n.case_ref, result.provider_message_id)
        return result
    if admission.gate is Gate.PROBE and not result.temporary:
        await d.breaker.succeeded(circuit)  # it answered, even if only to refuse one address
    if not result.temporary:
        await d.ledger.mark_failed(key, Failure(result.reason or "refused", permanent=True))
        return result
    await d.breaker.failed(circuit)
    if result.retry_after_s:
        await d.breaker.pause(circuit, result.retry_after_s)
    waited = max(0.0, (d.clock() - since).total_seconds())
    delay = next_delay(d.retry, waited, result.retry_after_s)
    if give_up(d.retry, waited, delay):
        return await _give_up(d, route, key, provider, waited, result.reason)
    await d.ledger.release(key)
    NOTIFICATIONS.labels(channel, provider.name, "retry").inc()
    log.warning(
        "notification not sent yet, will retry",
        extra={"ref": n.case_ref, "to": mask(route.address), "reason": result.reason,
               "in_s": round(delay, 2)},
    )
    return Wait(delay, result.reason or "temporary failure")


async def _sent(
    d: Delivery, key: str, circuit: str, gate: Gate, ref: str | None, provider_id: str | None
) -> None:
    """The provider took it: from here nothing may raise, or a redelivery would send it again.
    A ledger that cannot be written keeps our claim until its lease ends; the outcome, still
    published, puts the send in case-store's record, which answers the redelivery then."""
    try:
        await d.ledger.mark_done(key, provider_id)
    except Exception as exc:  # noqa: BLE001 - Redis, mostly: the send stands regardless
        log.warning("sent, but the dedupe ledger could not be written",
                    extra={"ref": ref, "key": key, "error": type(exc).__name__})
    if gate is Gate.PROBE:
        try:
            await d.breaker.succeeded(circuit)
        except Exception as exc:  # noqa: BLE001 - the next probe closes it instead
            log.warning("circuit breaker not closed after a good probe",
                        extra={"circuit": circuit, "error": type(exc).__name__})


async def _give_up(
    d: Delivery, route: Route, key: str, provider: Provider, waited: float, why: str | None
) -> SendResult:
    """Past the deadline: remember it as failed (not permanent: no fallback) and say so."""
    reason = gave_up_reason(waited, why)
    await d.ledger.mark_failed(key, Failure(reason, permanent=False))
    NOTIFICATIONS.labels(route.medium.value, provider.name, "gave_up").inc()
    return SendResult.failed(reason, temporary=True)


async def publish_outcome(
    bus: Bus,
    n: Notification,
    s: Settled,
    correlation_id: str,
    *,
    template: str | None = None,
    reason: str | None = None,
    provider_message_id: str | None = None,
) -> None:
    """notification.sent / notification.failed for one settled route (repeats publish the same
    event id, so case-store records it once)."""
    outcome = "sent" if s.result.ok else "failed"
    if not s.repeated:
        NOTIFICATIONS.labels(s.route.medium.value, s.provider, outcome).inc()
    why = reason or s.result.reason
    if s.failures:
        why = "; ".join([*s.failures, *([why] if why else [])])
    log.info(
        "notification sent" if s.result.ok else "notification failed",
        extra={"ref": n.case_ref, "rule": n.rule, "channel": s.route.medium.value,
               "to": mask(s.route.address), "provider": s.provider, "repeated": s.repeated,
               "reason": why, "fallback_from": s.fallback_from},
    )
    channel = s.route.medium.channel
    if channel is None:
        return  # a webhook: no channel in the outcome contract, its log line and metric only
    fallback_from = s.fallback_from.channel if s.fallback_from is not None else None
    if fallback_from is None and n.passed_over is not None and n.passed_over is not channel:
        # Their first channel was never tried (opted out, bouncing): still a fallback.
        fallback_from = n.passed_over
        why = "; ".join(w for w in (f"{n.passed_over.value}: {n.passed_over_reason}", why) if w)
    payload = NotificationOutcome(
        ref=n.case_ref,
        notification_key=s.key,
        channel=channel,
        recipient=s.route.address,
        template=template or n.template,
        provider=s.provider,
        outcome=outcome,
        provider_message_id=provider_message_id or s.result.provider_message_id,
        reason=why,
        permanent=s.permanent and not s.result.ok,
        fallback_from=fallback_from,
    )
    await bus.publish(
        envelope(
            payload,
            source=SOURCE,
            correlation_id=correlation_id,
            subject=n.case_ref,
            event_id=derived_event_id("notification", s.key, outcome),
            routing_key=f"notification.{outcome}",
        )
    )
