"""One view of every event the notifier hears: what happened to which case, and who is involved.

`case.opened`, `case.routed`, every `case.<change>` and `notification.failed` carry different
payloads; the policy reads them all through `Facts`, so its conditions and audiences are
written once. Events before the case snapshot existed (case.opened, a case.routed without one)
get a contact built from what they do carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from casegate_shared.events import (
    CaseChange,
    CaseOpened,
    CaseRouted,
    CaseSnapshot,
    CaseUpdated,
    Contact,
    Envelope,
    NotificationOutcome,
    Participant,
    Priority,
)

OPENED = "case.opened"
ROUTED = "case.routed"
NOTIFICATION_FAILED = "notification.failed"
CHANGES = tuple(f"case.{c.value}" for c in CaseChange)
KNOWN_EVENTS = (OPENED, ROUTED, *CHANGES, NOTIFICATION_FAILED)

# What a customer may hear about. Everything else (notes, assignment, SLA clocks, escalation,
# routing, bounces, our own failures) is internal and never reaches a customer, whatever the
# policy file says.
CUSTOMER_VISIBLE = frozenset(
    {
        OPENED,
        "case.reply_added",
        "case.status_changed",
        "case.reopened",
        "case.message_added",
        "case.merged",
    }
)
REPLY = "case.reply_added"
TIME_FORMAT = "%Y-%m-%d %H:%M UTC"


@dataclass(frozen=True, slots=True)
class AgentContact:
    """How to reach an agent who is not (or not only) a participant: the case's assignee."""

    user: str
    email: str | None = None
    slack_user: str | None = None


class AgentDirectory(Protocol):
    """Where an agent's addresses are found by handle (None: no such active agent). Raises
    `delivery.RecordUnavailable` when it cannot be asked."""

    async def agent(self, handle: str) -> AgentContact | None: ...


@dataclass(frozen=True, slots=True)
class Facts:
    event_id: str
    event_type: str
    ref: str
    occurred_at: datetime
    subject: str = ""
    status: str | None = None
    previous: str | None = None
    priority: Priority | None = None
    channel: str | None = None  # the channel of the message or reply, else the case's
    reason_code: str | None = None
    team: str | None = None
    assignee: str | None = None
    # The assignee's addresses: from a participant with the same handle, else looked up by the
    # handler (the snapshot names the assignee but carries no addresses for them).
    assignee_contact: AgentContact | None = None
    customer: Contact | None = None
    participants: tuple[Participant, ...] = ()
    case: CaseSnapshot | None = None
    body: str | None = None  # an agent's reply, to be delivered as written
    reply_channel: str | None = None
    reply_to: str | None = None
    actor: str | None = None
    details: dict[str, str] = field(default_factory=dict)  # due time, escalation target, ...
    failed: NotificationOutcome | None = None
    tracking_token: str | None = None  # the customer's, on events they may see

    @property
    def tier(self) -> str | None:
        return self.customer.tier if self.customer is not None else None

    @property
    def customer_visible(self) -> bool:
        return self.event_type in CUSTOMER_VISIBLE


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _assignee_contact(case: CaseSnapshot) -> AgentContact | None:
    for p in case.participants:
        if case.assignee is not None and p.user == case.assignee:
            return AgentContact(user=p.user, email=p.email, slack_user=p.slack_user)
    return None


def _from_snapshot(case: CaseSnapshot) -> dict[str, Any]:
    return {
        "subject": case.subject,
        "status": case.status,
        "priority": case.priority,
        "channel": case.channel.value,
        "reason_code": case.reason_code,
        "team": case.team,
        "assignee": case.assignee,
        "assignee_contact": _assignee_contact(case),
        "customer": case.customer,
        "participants": tuple(case.participants),
        "case": case,
        "tracking_token": case.tracking_token,
    }


def facts_of(event: Envelope[Any]) -> Facts:
    """The facts of any event the notifier binds; raises TypeError for anything else."""
    data = event.data
    base: dict[str, Any] = {
        "event_id": event.id,
        "event_type": event.type,
        "ref": event.subject or getattr(data, "ref", ""),
        "occurred_at": _utc(event.time),
    }
    if isinstance(data, CaseOpened):
        c = data.customer
        contact = Contact(
            customer_id=c.id,
            name=c.name,
            email=c.email,
            phone=c.phone,
            preferred_channel=data.channel,  # where they wrote from, until they say otherwise
        )
        details = {"opened_at": _utc(data.opened_at).strftime(TIME_FORMAT)}
        return Facts(
            **{**base, "ref": data.ref},
            subject=data.subject,
            status=data.status,
            priority=data.priority,
            channel=data.channel.value,
            customer=contact,
            details=details,
            tracking_token=data.case.tracking_token if data.case is not None else None,
        )
    if isinstance(data, CaseRouted):
        known = _from_snapshot(data.case) if data.case is not None else {}
        known.update(team=data.team, priority=data.priority)
        return Facts(**{**base, "ref": data.ref}, **known, details={"rule": data.rule})
    if isinstance(data, CaseUpdated):
        known = _from_snapshot(data.case)
        if data.channel is not None and data.actor == "customer":
            known["channel"] = data.channel.value  # the channel they last wrote from
        if data.reason_code is not None:
            known["reason_code"] = data.reason_code
        details = {
            name: value
            for name, value in (
                ("clock", data.clock),
                ("due_at", _utc(data.due_at).strftime(TIME_FORMAT) if data.due_at else None),
                ("escalated_to", data.escalated_to),
                ("merged_into", data.merged_into),
            )
            if value
        }
        return Facts(
            **{**base, "ref": data.ref},
            **known,
            previous=data.previous,
            body=data.body,
            reply_channel=data.channel.value if data.channel is not None else None,
            reply_to=data.reply_to,
            actor=data.actor,
            details=details,
        )
    if isinstance(data, NotificationOutcome):
        details = {"reason": data.reason or ""}
        return Facts(**{**base, "ref": data.ref}, failed=data, details=details)
    raise TypeError(f"no facts for {type(data).__name__}")
