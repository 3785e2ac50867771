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
    phone: str | None = Field(None, description="E.164 where the adapter could normalize it")
    slack_user: str | None = Field(None, description="Slack user id (U…), for Slack messages")


class MessageKind(StrEnum):
    """What intake's loop rules made of a message; only `message` may be acknowledged."""

    MESSAGE = "message"
    AUTO_REPLY = "auto_reply"  # RFC 3834 Auto-Submitted, vacation responders, bulk/list mail
    BOUNCE = "bounce"  # a delivery status notification about mail we sent
    OPT_OUT = "opt_out"  # SMS STOP and its synonyms: never text this number again
    OPT_IN = "opt_in"  # SMS START: texting is allowed again
    HELP = "help"  # SMS HELP: the provider answers it; recorded, nothing opened


class AttachmentRef(BaseModel):
    """An attachment already stored in the blob store; the bus carries only its key."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    blob_key: str | None = Field(None, description="Blob store key; None when it was omitted")
    filename: str
    content_type: str
    size: int = Field(ge=0)
    sha256: str | None = None
    inline: bool = False
    content_id: str | None = None
    omitted_reason: str | None = Field(None, description="Why it was not stored (size limit, …)")


class EmailHeaders(BaseModel):
    """The threading-relevant headers of an email, normalized (angle brackets kept)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    message_id: str | None = None
    in_reply_to: list[str] = Field(default_factory=list)
    references: list[str] = Field(default_factory=list)
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    mailbox: str | None = Field(None, description="Which configured mailbox it came from")


class Bounce(BaseModel):
    """What a delivery status notification says about one of our messages."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    recipient: str | None = Field(None, description="The address that could not be reached")
    original_message_id: str | None = None
    status: str | None = Field(None, description="RFC 3464 Status, e.g. 5.1.1")
    permanent: bool = True
    diagnostic: str | None = None


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
    kind: MessageKind = MessageKind.MESSAGE
    full_body: str | None = Field(
        None, description="Whole text with quoted history and signature, when `body` is trimmed"
    )
    html: str | None = Field(None, description="Sanitized HTML for display, when there was HTML")
    email: EmailHeaders | None = None
    bounce: Bounce | None = None
    attachments: list[AttachmentRef] = Field(default_factory=list)
    thread_key: str | None = Field(
        None, description="Provider conversation key (Slack channel:thread_ts) naming the case"
    )


# --- case-store -> everyone -----------------------------------------------------------


class CaseCustomer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: int
    name: str | None = None
    email: str | None = None
    phone: str | None = None


class Contact(BaseModel):
    """How to reach one customer: addresses, preferences and what must not be used."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    customer_id: int
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    slack_user: str | None = None
    preferred_channel: Channel | None = None
    fallback: list[Channel] = Field(default_factory=list)
    language: str = "en"
    timezone: str = "UTC"
    quiet_hours: tuple[str, str] | None = Field(None, description="Local HH:MM start, end")
    opted_out: list[Channel] = Field(default_factory=list, description="Never send on these")
    bouncing: list[str] = Field(default_factory=list, description="Addresses that bounced")
    tier: str | None = None
    tags: list[str] = Field(default_factory=list)


class Participant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    role: Annotated[str, Field(pattern="^(owner|administrator|watcher)$")]
    user: str = Field(description="User handle in case-store")
    email: str | None = None
    slack_user: str | None = None


class CaseSnapshot(BaseModel):
    """The case as it stands after a change: enough for the notifier and the router to act
    without calling case-store back."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    ref: str
    subject: str
    channel: Channel
    status: str
    reason_code: str | None = None
    priority: Priority
    team: str | None = None
    assignee: str | None = None
    tags: list[str] = Field(default_factory=list)
    region: str | None = None
    customer: Contact
    participants: list[Participant] = Field(default_factory=list)
    first_response_due: datetime | None = None
    resolution_due: datetime | None = None
    last_customer_message_id: str | None = Field(None, description="For In-Reply-To")
    references: list[str] = Field(default_factory=list, description="For References")
    slack_thread: str | None = Field(None, description="channel:ts of the case's Slack post")
    tracking_token: str | None = Field(None, description="Only on events the customer may see")


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
    case: CaseSnapshot | None = Field(None, description="Carries the customer's tracking token")


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
    rules_version: str | None = Field(None, description="sha256 (12 hex) of the rules that decided")
    sla_policy: str | None = Field(None, description="SLA policy the case's clocks follow")
    assignment: str | None = Field(
        None, description="round_robin|least_open|skills|capacity; None: the team's own"
    )
    region: str | None = None
    first_response_warn_at: datetime | None = None
    first_response_due: datetime | None = Field(None, description="The hard limit (maximum)")
    resolution_warn_at: datetime | None = None
    resolution_due: datetime | None = None


class CaseRouted(Payload):
    event_type: ClassVar[str] = "case.routed"
    ref: str
    team: str
    priority: Priority
    rule: str
    case: CaseSnapshot | None = None


class CaseChange(StrEnum):
    MESSAGE_ADDED = "message_added"  # a customer message joined an existing case
    REOPENED = "reopened"
    REPLY_ADDED = "reply_added"  # an agent's public reply, to be delivered to the customer
    NOTE_ADDED = "note_added"  # internal: never reaches a customer
    STATUS_CHANGED = "status_changed"
    ASSIGNED = "assigned"  # team and/or agent changed (also transfers)
    PRIORITY_CHANGED = "priority_changed"
    SLA_WARNING = "sla_warning"
    SLA_BREACHED = "sla_breached"
    ESCALATED = "escalated"
    MERGED = "merged"
    LINKED = "linked"  # parent case set or cleared
    PARTICIPANTS_CHANGED = "participants_changed"
    ATTACHMENT_ADDED = "attachment_added"
    BOUNCED = "bounced"  # a message we sent could not be delivered
    # The customer's reachability changed (an SMS stop or start keyword, preferences set on
    # the tracking page): where a reply would go may differ. Internal.
    CONTACT_CHANGED = "contact_changed"


class CaseUpdated(Payload):
    """Every change to a case after it opened; `change` is the routing key's second part."""

    event_type: ClassVar[str] = "case.{change}"
    change: CaseChange
    ref: str
    actor: str = Field(description="user handle, 'customer', or the service that decided")
    case: CaseSnapshot
    entry_id: int | None = Field(None, description="The timeline entry this change wrote")
    body: str | None = Field(None, description="Reply or note text; a customer message's text")
    channel: Channel | None = Field(None, description="Channel of the message or reply")
    reply_to: str | None = Field(None, description="Where a reply goes: address or number")
    previous: str | None = Field(None, description="Status, team/assignee or priority before")
    reason_code: str | None = None
    clock: Annotated[str | None, Field(pattern="^(first_response|resolution)$")] = None
    due_at: datetime | None = None
    escalated_to: str | None = None
    merged_into: str | None = None
    attachments: list[AttachmentRef] = Field(default_factory=list)


class EscalationDecided(Payload):
    """The router's answer to a breach: where the case goes now, and how urgent it becomes."""

    event_type: ClassVar[str] = "case.escalation_decided"
    ref: str
    clock: str
    team: str | None = None
    assignee: str | None = None
    priority: Priority | None = None
    reason: str


class SlaResumed(Payload):
    """A case stopped waiting for the customer: its SLA clocks as they stood when the wait
    began. case-store has already moved them on by the wall time waited; the router answers
    with the times in business time of the case's region (`SlaDecided`)."""

    event_type: ClassVar[str] = "case.sla_resumed"
    ref: str
    priority: Priority
    sla_policy: str | None = None
    region: str | None = None
    paused_at: datetime
    resumed_at: datetime
    first_response_warn_at: datetime | None = None
    first_response_due: datetime | None = None
    resolution_warn_at: datetime | None = None
    resolution_due: datetime | None = None


class SlaDecided(Payload):
    """The router's due times for a case's clocks after a wait for the customer, counted in
    business time of the case's region. case-store applies them only to the resume they
    answer (`resumed_at`); a case that waited again before the answer came gets the
    corrections (`corrections_s`) added to its times instead, since later waits only added
    their own shifts."""

    event_type: ClassVar[str] = "case.sla_decided"
    ref: str
    resumed_at: datetime
    first_response_warn_at: datetime | None = None
    first_response_due: datetime | None = None
    resolution_warn_at: datetime | None = None
    resolution_due: datetime | None = None
    reason: str
    corrections_s: dict[str, float] = Field(
        default_factory=dict,
        description="Per time: seconds to add to what the wall-time shift of this wait set. "
        "For a case that waited again before this answer came: the times above are stale "
        "then, the correction is not",
    )


class AssignmentDecided(Payload):
    """The router's choice of agent for a case within its team, or that the case waits in the
    team's queue. case-store applies it only while the case is still the team's and
    unassigned, so a late or repeated decision never takes a case from someone, and only
    while the agent is under `cap`, so deciders racing each other cannot overload anyone."""

    event_type: ClassVar[str] = "case.assignment_decided"
    ref: str
    team: str
    assignee: str | None = Field(None, description="Agent handle; None: waits in the queue")
    strategy: str = Field(description="round_robin|least_open|skills|capacity")
    reason: str
    cap: int | None = Field(
        None, ge=0, description="The agent's most open cases on the case's channel; None: no cap"
    )


class AgentActionKind(StrEnum):
    CLAIM = "claim"
    RESOLVE = "resolve"
    ESCALATE = "escalate"
    REPLY = "reply"
    NOTE = "note"


class AgentAction(Payload):
    """An agent did something outside the API (a Slack button, a thread message); case-store
    maps the actor to a user and checks the role before applying it."""

    event_type: ClassVar[str] = "agent.action"
    action: AgentActionKind
    ref: str | None = Field(None, description="Case reference, when the source names it")
    thread_key: str | None = Field(None, description="Slack channel:thread_ts naming the case")
    actor_slack_user: str | None = None
    actor_user: str | None = None
    dedupe_key: str = Field(description="Provider identity of the action (Slack event id, …)")
    body: str | None = None
    reason_code: str | None = None
    at: datetime = Field(default_factory=utcnow)


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
    permanent: bool = Field(False, description="A failure no retry will fix (fallback instead)")
    fallback_from: Channel | None = Field(None, description="Channel this one replaced, and why")


class DeliveryUpdated(Payload):
    """A provider's later report on a sent message (Twilio status callback, DSN)."""

    event_type: ClassVar[str] = "notification.delivery_updated"
    ref: str
    notification_key: str | None = None
    provider: str
    provider_message_id: str
    status: str = Field(description="queued, sent, delivered, undelivered, failed, bounced")
    error_code: str | None = None
    at: datetime = Field(default_factory=utcnow)


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
    SlaResumed,
    SlaDecided,
    AssignmentDecided,
    CaseRouted,
    CaseUpdated,
    EscalationDecided,
    AgentAction,
    NotificationOutcome,
    DeliveryUpdated,
)
