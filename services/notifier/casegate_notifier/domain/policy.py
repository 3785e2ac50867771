"""Who hears what: the notification policy, an ordered table of rules per event type.

A rule looks at one event and returns a verdict: the notification to send, or the reason
why nobody is told. Rules never act; the handler logs every reason and delivers every
notification. Each notification carries the key that makes it unique (event, recipient,
channel): the delivery ledger allows at most one send per key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from casegate_shared.events import CaseOpened, Channel, Envelope

ACK_TEMPLATE = "case_opened"
SUBJECT_MAX = 150
NAME_MAX = 80

# Anything that could end a header line or hide in one: whitespace runs (which include
# CR, LF and the Unicode line separators) and every control character.
_BREAKS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
# Deliberately narrower than RFC 5322: no quoted local parts, comments or controls, so a
# usable address can go on an SMTP command line and into a header unchanged.
_ADDRESS = re.compile(r'[^\x00-\x20\x7f<>()\[\]\\,;:"@]+@[^\x00-\x20\x7f<>()\[\]\\,;:"@]+')


class Notification(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    rule: str
    case_ref: str
    channel: Channel
    recipient: str
    recipient_name: str | None
    template: str
    values: dict[str, str]
    dedupe_key: str


@dataclass(frozen=True, slots=True)
class Verdict:
    rule: str
    notification: Notification | None
    reason: str


Rule = Callable[[Envelope[Any]], Verdict]


def one_line(text: str, limit: int) -> str:
    """Customer text fit for a subject or a display name: one line, no controls, bounded."""
    flat = _BREAKS.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def email_address(raw: str | None) -> str | None:
    """The address normalized (domains are case-insensitive), or None if it is not usable."""
    if raw is None:
        return None
    candidate = raw.strip()
    if not _ADDRESS.fullmatch(candidate):
        return None
    local, domain = candidate.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def dedupe_key(event_id: str, channel: Channel, recipient: str) -> str:
    """Exactly one key per (event, recipient, channel): the unit of 'sent at most once'."""
    return f"{event_id}/{channel.value}/{recipient}"


def acknowledge_customer(event: Envelope[CaseOpened]) -> Verdict:
    """A new case: tell the customer we have it, and under which reference, by email."""
    rule = "acknowledge_customer"
    case = event.data
    if case.customer.email is None or not case.customer.email.strip():
        return Verdict(rule, None, "customer gave no email address")
    recipient = email_address(case.customer.email)
    if recipient is None:
        return Verdict(rule, None, "customer email address is not usable")
    name = one_line(case.customer.name or "", NAME_MAX) or None
    values = {
        "ref": case.ref,
        "subject": one_line(case.subject, SUBJECT_MAX) or "(no subject)",
        "customer_name": name or "",
        "channel": case.channel.value,
        "priority": case.priority.value,
        "opened_at": _utc(case.opened_at).strftime("%Y-%m-%d %H:%M UTC"),
    }
    notification = Notification(
        rule=rule,
        case_ref=case.ref,
        channel=Channel.EMAIL,
        recipient=recipient,
        recipient_name=name,
        template=ACK_TEMPLATE,
        values=values,
        dedupe_key=dedupe_key(event.id, Channel.EMAIL, recipient),
    )
    return Verdict(rule, notification, "customer has an email address")


RULES: dict[str, tuple[Rule, ...]] = {
    "case.opened": (acknowledge_customer,),
}
# Every template a rule may name, per channel: compiled at start so a bad one stops the start.
TEMPLATES_IN_USE: dict[Channel, tuple[str, ...]] = {Channel.EMAIL: (ACK_TEMPLATE,)}


def decide(event: Envelope[Any]) -> list[Verdict]:
    """Every rule for this event type, in order, each with its verdict and reason."""
    return [rule(event) for rule in RULES.get(event.type, ())]


def notifications_for(event: Envelope[CaseOpened]) -> list[Notification]:
    return [v.notification for v in decide(event) if v.notification is not None]
