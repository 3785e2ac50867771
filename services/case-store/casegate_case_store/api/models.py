"""What the agent API accepts and answers: the models behind validation and /openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from casegate_shared.events import CASE_REF_PATTERN, Channel, Priority

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Handle = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Code = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
Ref = Annotated[str, StringConstraints(pattern=f"^{CASE_REF_PATTERN}$")]
Status = Literal["new", "open", "pending_customer", "on_hold", "resolved", "closed"]
RoleName = Literal["creator", "resolver", "supervisor", "admin"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- cases ---------------------------------------------------------------------------


class CaseQuery(Strict):
    status: Status | None = None
    team: Short | None = None
    assignee: Handle | None = None
    customer: int | None = Field(None, ge=1, le=2**62)
    channel: Channel | None = None
    priority: Priority | None = None
    tag: Short | None = None
    breached: bool | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    q: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        None, description="Full-text search over subjects and messages"
    )
    sort: Literal["created", "-created", "updated", "-updated"] = "-created"
    limit: int = Field(50, ge=1, le=200)
    cursor: Annotated[str, StringConstraints(max_length=200)] | None = None


class CaseSummary(BaseModel):
    ref: str
    subject: str
    channel: str
    status: str
    reason_code: str | None
    priority: str
    team: str | None
    assignee: str | None
    customer_id: int
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    first_response_due: datetime | None
    resolution_due: datetime | None
    breached: bool


class CaseList(BaseModel):
    items: list[CaseSummary]
    next_cursor: str | None


class Entry(BaseModel):
    id: int
    kind: str
    actor: str
    visibility: str
    body: str
    data: dict[str, Any]
    correlation_id: str | None
    created_at: datetime


class AttachmentInfo(BaseModel):
    id: int
    filename: str
    content_type: str
    size: int
    sha256: str | None
    omitted_reason: str | None
    created_at: datetime


class Participant(BaseModel):
    user: str
    role: str


class CaseDetail(CaseSummary):
    description: str
    region: str | None
    parent: str | None
    children: list[str]
    merged_into: str | None
    participants: list[Participant]
    attachments: list[AttachmentInfo]
    timeline: list[Entry]


class NewCustomer(Strict):
    name: Short | None = None
    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    phone: Annotated[str, StringConstraints(max_length=40)] | None = None


class NewCase(Strict):
    """An agent registers a case for a customer (a phone call, a walk-in)."""

    customer: NewCustomer
    subject: Short
    description: Text
    channel: Channel = Channel.WEBFORM
    priority: Priority = Priority.P3


class Created(BaseModel):
    ref: str
    tracking_token: str | None = None


class ReplyIn(Strict):
    body: Text


class StatusIn(Strict):
    status: Status
    reason_code: Code


class AssignmentIn(Strict):
    team: Short | None = None
    assignee: Handle | None = None
    unassign: bool = False


class PriorityIn(Strict):
    priority: Priority


class ParentIn(Strict):
    parent: Ref | None


class MergeIn(Strict):
    into: Ref


class ParticipantsIn(Strict):
    users: list[Handle] = Field(min_length=1, max_length=50)
    role: Literal["owner", "administrator", "watcher"] = "watcher"


class Done(BaseModel):
    ref: str
    entry_id: int | None = None


# --- customers -----------------------------------------------------------------------


class Identity(BaseModel):
    kind: str
    value: str
    opted_out: bool
    bouncing: bool


class CustomerDetail(BaseModel):
    id: int
    name: str | None
    preferred_channel: str | None
    language: str
    timezone: str
    tier: str | None
    tags: list[str]
    merged_into: int | None
    erased: bool
    identities: list[Identity]
    cases: list[CaseSummary]


class CustomerMergeIn(Strict):
    duplicate: int = Field(ge=1, le=2**62, description="Customer merged into this one")


class Export(BaseModel):
    customer: dict[str, Any]
    identities: list[dict[str, Any]]
    cases: list[dict[str, Any]]
    exported_at: datetime


# --- admin ---------------------------------------------------------------------------


class ReasonCode(BaseModel):
    code: str
    label: str
    active: bool


class ReasonCodes(BaseModel):
    items: list[ReasonCode]


class ReasonCodeIn(Strict):
    code: Code
    label: Short


class ReasonCodeChange(Strict):
    label: Short | None = None
    active: bool | None = None


class UserIn(Strict):
    handle: Handle
    name: Short
    roles: list[RoleName] = Field(min_length=1)
    teams: list[Short] = Field(default_factory=list, max_length=50)
    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    slack_user: Annotated[str, StringConstraints(pattern=r"^[UW][A-Z0-9]{2,20}$")] | None = None


class User(BaseModel):
    handle: str
    name: str
    roles: list[str]
    teams: list[str]
    email: str | None
    slack_user: str | None
    active: bool


class Users(BaseModel):
    items: list[User]


class TokenIn(Strict):
    name: Short


class Revoked(BaseModel):
    id: int
    revoked: bool


class NewToken(BaseModel):
    id: int
    token: str = Field(description="Shown once; only its hash is kept")


# --- reports and tracking --------------------------------------------------------------


class ReportQuery(Strict):
    created_from: datetime | None = None
    created_to: datetime | None = None
    format: Literal["json", "csv"] = "json"


class Summary(BaseModel):
    total: int
    backlog: int
    by_channel: dict[str, int]
    by_team: dict[str, int]
    by_status: dict[str, int]
    first_response_median_s: float | None
    first_response_p90_s: float | None
    resolution_median_s: float | None
    resolution_p90_s: float | None
    sla_compliance: float | None = Field(description="Share of clocks that met their due time")


class TrackQuery(BaseModel):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class PublicEntry(BaseModel):
    kind: str
    author: str
    body: str
    created_at: datetime


class Tracking(BaseModel):
    ref: str
    subject: str
    status: str
    created_at: datetime
    updated_at: datetime
    timeline: list[PublicEntry]


class PreferencesIn(Strict):
    preferred_channel: Literal["email", "sms", "slack", "webform"] | None = None
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] | None = None
    timezone: Annotated[str, StringConstraints(max_length=64)] | None = None
    quiet_start: Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] | None = (
        None
    )
    quiet_end: Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] | None = None
    opt_out: list[Literal["email", "sms", "slack"]] | None = None
    quiet_hours_off: bool = False


class Preferences(BaseModel):
    preferred_channel: str | None
    language: str
    timezone: str
    quiet_start: str | None
    quiet_end: str | None
    opted_out: list[str]
