"""Timeline entries: what each event adds to a case's history, and the one-line summaries
agents read. Summaries never carry a message body or a full customer address."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from casegate_shared.events import (
    Bounce,
    Channel,
    DeliveryUpdated,
    MessageReceived,
    NotificationOutcome,
    RouteDecided,
)

REASON_MAX = 200

CHANNEL_WORDS: dict[Channel, str] = {
    Channel.EMAIL: "email",
    Channel.SMS: "SMS",
    Channel.SLACK: "Slack",
    Channel.WEBFORM: "web form",
    Channel.CHAT: "chat",
}


class Visibility(StrEnum):
    PUBLIC = "public"  # shown to the customer on the tracking page
    INTERNAL = "internal"


class EntryKind(StrEnum):
    MESSAGE_IN = "message_in"
    ROUTED = "routed"
    NOTIFICATION = "notification"
    REPLY = "reply"  # an agent's public answer to the customer
    NOTE = "note"  # internal, never shown to a customer
    STATUS = "status"
    ASSIGNMENT = "assignment"
    PRIORITY = "priority"
    ESCALATION = "escalation"
    SLA = "sla"
    ATTACHMENT = "attachment"
    LINK = "link"  # parent/child, merges
    PARTICIPANT = "participant"
    # A provider's later report (delivered, undelivered, bounced), or a change in how the
    # customer can be reached (stop and start keywords, preferences).
    DELIVERY = "delivery"


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    kind: EntryKind
    actor: str
    visibility: Visibility
    body: str
    data: dict[str, Any] = field(default_factory=dict)


def message_in(msg: MessageReceived, joined_by: str | None = None) -> TimelineEntry:
    """The customer's message, as they wrote it: the timeline is where the body belongs.
    `joined_by` says why it is on this case (which header, token or rule)."""
    data: dict[str, Any] = {
        "channel": msg.channel.value,
        "subject": msg.subject,
        "dedupe_key": msg.dedupe_key,
        "received_at": msg.received_at.isoformat(),
        "kind": msg.kind.value,
    }
    if joined_by:
        data["joined_by"] = joined_by
    if msg.email and msg.email.message_id:
        data["message_id"] = msg.email.message_id
    if msg.full_body and msg.full_body != msg.body:
        data["full_body"] = msg.full_body
    if msg.attachments:
        data["attachments"] = [a.model_dump(mode="json") for a in msg.attachments]
    return TimelineEntry(
        kind=EntryKind.MESSAGE_IN,
        actor="customer",
        visibility=Visibility.PUBLIC,
        body=msg.body,
        data=data,
    )


def delivery_update(update: DeliveryUpdated) -> TimelineEntry:
    code = f" (error {update.error_code})" if update.error_code else ""
    return TimelineEntry(
        kind=EntryKind.DELIVERY,
        actor=update.provider,
        visibility=Visibility.INTERNAL,
        body=f"{update.provider} reports the message {update.status}{code}",
        data={"provider_message_id": update.provider_message_id, "status": update.status,
              "error_code": update.error_code, "notification_key": update.notification_key},
    )


def bounce(info: Bounce) -> TimelineEntry:
    to = mask_recipient(info.recipient or "")
    status = f" ({info.status})" if info.status else ""
    return TimelineEntry(
        kind=EntryKind.DELIVERY,
        actor="mailer",
        visibility=Visibility.INTERNAL,
        body=f"Email to {to} bounced{status}",
        data={"recipient": to, "status": info.status, "permanent": info.permanent},
    )


def registered(msg: MessageReceived, handle: str) -> TimelineEntry:
    """A case an agent registered for the customer: the description is the first message."""
    entry = message_in(msg)
    return TimelineEntry(
        kind=entry.kind,
        actor=f"agent:{handle}",
        visibility=entry.visibility,
        body=entry.body,
        data={**entry.data, "registered_by": handle},
    )


def routing_summary(decision: RouteDecided) -> str:
    return (
        f"Routed to team {decision.team} at priority {decision.priority.value} "
        f"by rule {decision.rule!r}"
    )


def routed(decision: RouteDecided) -> TimelineEntry:
    return TimelineEntry(
        kind=EntryKind.ROUTED,
        actor="router",
        visibility=Visibility.INTERNAL,
        body=routing_summary(decision),
        data={
            "team": decision.team,
            "priority": decision.priority.value,
            "rule": decision.rule,
            "explanation": [v.model_dump(mode="json") for v in decision.explanation],
        },
    )


def mask_recipient(recipient: str) -> str:
    """Enough of an address for an agent to recognise it, not enough to copy it."""
    value = recipient.strip()
    local, at, domain = value.rpartition("@")
    if at and local:
        return f"{local[0]}***@{domain}"
    digits = value.lstrip("+")
    if digits.isdigit() and len(digits) >= 7:
        prefix = value[: len(value) - len(digits) + 2]  # keeps the + and two digits
        return f"{prefix}***{digits[-3:]}"
    return f"{value[:1]}***" if value else "***"


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def notification_summary(outcome: NotificationOutcome) -> str:
    channel = CHANNEL_WORDS.get(outcome.channel, outcome.channel.value)
    to = mask_recipient(outcome.recipient)
    line = f"{outcome.template} {outcome.outcome} by {channel} to {to}"
    if outcome.fallback_from is not None:
        instead = CHANNEL_WORDS.get(outcome.fallback_from, outcome.fallback_from.value)
        line += f" instead of {instead}"
        if outcome.outcome == "sent" and outcome.reason:
            line += f" ({_one_line(outcome.reason, REASON_MAX)})"
    if outcome.outcome == "failed" and outcome.reason:
        line += f": {_one_line(outcome.reason, REASON_MAX)}"
    return line


def notification(outcome: NotificationOutcome) -> TimelineEntry:
    return TimelineEntry(
        kind=EntryKind.NOTIFICATION,
        actor="notifier",
        visibility=Visibility.INTERNAL,
        body=notification_summary(outcome),
        data={
            "notification_key": outcome.notification_key,
            "channel": outcome.channel.value,
            "recipient": mask_recipient(outcome.recipient),
            "template": outcome.template,
            "provider": outcome.provider,
            "outcome": outcome.outcome,
            "provider_message_id": outcome.provider_message_id,
            "reason": outcome.reason,
            "permanent": outcome.permanent,
            "fallback_from": outcome.fallback_from.value if outcome.fallback_from else None,
        },
    )
