"""Event contracts: the CloudEvents 1.0 envelope and the payload of every event type.

These models are the single source of truth for what travels on the bus; the JSON Schema
in docs/schemas/ is generated from them (`casegate schema`). Payloads are provider-neutral:
adapters normalize before anything is published.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

# Deterministic event ids (uuid5) let a handler that is redelivered publish the *same*
# event again, so the consumer's inbox dedupe absorbs the repeat.
EVENT_NAMESPACE = uuid.UUID("6f1c3c5e-6a57-4d0b-9a51-4f7e0c2b9d10")


def derived_event_id(*parts: str) -> str:
    """A stable event id derived from what caused the event."""
    return str(uuid.uuid5(EVENT_NAMESPACE, "/".join(parts)))


# Case references are read aloud and typed from SMS: no 0/O, 1/I/L, U/V.
CASE_REF_ALPHABET = "23456789ABCDEFGHJKMNPQRSTWXYZ"
CASE_REF_PATTERN = r"CS-[23456789ABCDEFGHJKMNPQRSTWXYZ]{6}"


def new_case_ref() -> str:
    """A random human-friendly case reference such as CS-7K3M9Q (29^6, about 595 million)."""
    return "CS-" + "".join(secrets.choice(CASE_REF_ALPHABET) for _ in range(6))


def utcnow() -> datetime:
    return datetime.now(UTC)


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    SLACK = "slack"
    WEBFORM = "webform"
    CHAT = "chat"


class Priority(StrEnum):
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"


class Payload(BaseModel):
    """Base of every event payload; `event_type` is the routing key (may hold a `{}` slot)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str]


# --- intake -> case-store -------------------------------------------------------------


class Sender(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str | None = None
    email: str | None = None
    phone: str | None = None


class MessageReceived(Payload):
    """A customer message on any channel, normalized by an intake adapter."""

    event_type: ClassVar[str] = "message.received.{channel}"
    channel: Channel
    dedupe_key: str = Field(description="Provider-level identity of the message, e.g. webform:<uuid>")
    sender: Sender
    subject: str
    body: str
    received_at: datetime
    case_ref: str | None = Field(None, description="Reference the customer named (reply to a case)")
    new_case_ref: str | None = Field(
        None, description="Reference promised to the customer if this opens a new case"
    )


# --- case-store -> everyone -----------------------------------------------------------


class CaseCustomer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: int
    name: str | None = None
    email: str | None = None
    phone: str | None = None


class CaseOpened(Payload):
    event_type: ClassVar[str] = "case.opened"
    ref: str
    customer: CaseCustomer
    channel: Channel
    subject: str
    body: str
    priority: Priority
    status: str
    opened_at: datetime


class RuleVerdict(BaseModel):
    """One line of a routing explanation: did this rule match, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rule: str
    matched: bool
    reason: str


class RouteDecided(Payload):
    event_type: ClassVar[str] = "case.route_decided"
    ref: str
    team: str
    priority: Priority
    rule: str
    tags: list[str] = Field(default_factory=list)
    explanation: list[RuleVerdict]


class CaseRouted(Payload):
    event_type: ClassVar[str] = "case.routed"
    ref: str
    team: str
    priority: Priority
    rule: str


# --- notifier -> case-store -----------------------------------------------------------


class NotificationOutcome(Payload):
    event_type: ClassVar[str] = "notification.{outcome}"
    ref: str
    notification_key: str
    channel: Channel
    recipient: str
    template: str
    provider: str
    outcome: Annotated[str, Field(pattern="^(sent|failed)$")]
    provider_message_id: str | None = None
    reason: str | None = None


P = TypeVar("P", bound=Payload)


class Envelope(BaseModel, Generic[P]):
    """CloudEvents 1.0 structured-mode envelope with a correlation id extension."""

    model_config = ConfigDict(frozen=True)
    specversion: str = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    source: str
    type: str
    subject: str | None = Field(None, description="The case reference, when there is one")
    time: datetime = Field(default_factory=utcnow)
    datacontenttype: str = "application/json"
    correlationid: str
    data: P


def envelope(
    payload: Payload,
    *,
    source: str,
    correlation_id: str | None = None,
    subject: str | None = None,
    event_id: str | None = None,
    routing_key: str | None = None,
) -> Envelope[Any]:
    """Wrap a payload; the routing key defaults to the payload's event type."""
    kwargs: dict[str, Any] = {}
    if event_id:
        kwargs["id"] = event_id
    ev = Envelope[type(payload)](  # type: ignore[misc]
        source=source,
        type=routing_key or payload.event_type,
        subject=subject,
        correlationid=correlation_id or str(uuid.uuid4()),
        data=payload,
        **kwargs,
    )
    return ev


ALL_PAYLOADS: tuple[type[Payload], ...] = (
    MessageReceived,
    CaseOpened,
    RouteDecided,
    CaseRouted,
    NotificationOutcome,
)
