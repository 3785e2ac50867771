"""Case rules with no I/O: who a sender is, which reference a new case gets, how a case
opens, and how its status moves."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from casegate_shared.events import (
    CASE_REF_PATTERN,
    CaseCustomer,
    CaseOpened,
    Channel,
    MessageReceived,
    Priority,
    Sender,
    new_case_ref,
)

DEFAULT_PRIORITY = Priority.P3
SUBJECT_MAX = 200
NO_SUBJECT = "(no subject)"

_CASE_REF = re.compile(CASE_REF_PATTERN)
_PHONE = re.compile(r"\+?\d{3,20}")
_PHONE_PUNCTUATION = re.compile(r"[\s().\-/]")


class CaseStatus(StrEnum):
    NEW = "new"  # opened, not routed yet
    OPEN = "open"  # routed to a team
    PENDING_CUSTOMER = "pending_customer"  # waiting on the customer: SLA clocks pause
    ON_HOLD = "on_hold"
    RESOLVED = "resolved"
    CLOSED = "closed"


class IdentityKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    SLACK = "slack"
    WEB = "web"


@dataclass(frozen=True, slots=True)
class Identity:
    kind: IdentityKind
    value: str


@dataclass(frozen=True, slots=True)
class NewCase:
    channel: Channel
    subject: str
    description: str
    status: CaseStatus
    priority: Priority


def normalize_email(raw: str) -> str | None:
    """Lower-cased address, or None when it cannot be an address at all."""
    value = raw.strip().lower()
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in value):
        return None
    return value


def normalize_phone(raw: str) -> str | None:
    """Digits with an optional leading +, punctuation dropped; None when that is not a number."""
    value = _PHONE_PUNCTUATION.sub("", raw.strip())
    return value if _PHONE.fullmatch(value) else None


def sender_identities(sender: Sender) -> list[Identity]:
    """The sender's identities in lookup order: email first, then phone."""
    found: list[Identity] = []
    if sender.email and (email := normalize_email(sender.email)):
        found.append(Identity(IdentityKind.EMAIL, email))
    if sender.phone and (phone := normalize_phone(sender.phone)):
        found.append(Identity(IdentityKind.PHONE, phone))
    return found


def customer_contact(identities: list[Identity]) -> tuple[str | None, str | None]:
    """(email, phone) as announced on `case.opened`."""
    by_kind = {i.kind: i.value for i in identities}
    return by_kind.get(IdentityKind.EMAIL), by_kind.get(IdentityKind.PHONE)


def normalize_ref(raw: str | None) -> str | None:
    """A case reference as customers type it (any case, stray spaces), or None if it is not one."""
    if not raw:
        return None
    value = raw.strip().upper()
    return value if _CASE_REF.fullmatch(value) else None


def candidate_refs(promised: str | None) -> Iterator[str]:
    """References to try for a new case: the one promised to the customer, then fresh ones.

    The store takes the first that is free; a promised reference can only be taken if two
    intakes happened to draw the same one, which is rare but not impossible.
    """
    if ref := normalize_ref(promised):
        yield ref
    while True:
        yield new_case_ref()


def case_subject(subject: str, body: str) -> str:
    """A one-line subject; falls back to the body's first line (SMS and chat have no subject)."""
    line = " ".join(subject.split())
    if not line:
        first = next((ln for ln in body.splitlines() if ln.strip()), "")
        line = " ".join(first.split())
    if not line:
        return NO_SUBJECT
    return line if len(line) <= SUBJECT_MAX else line[: SUBJECT_MAX - 1] + "\u2026"


def new_case(msg: MessageReceived) -> NewCase:
    return NewCase(
        channel=msg.channel,
        subject=case_subject(msg.subject, msg.body),
        description=msg.body,
        status=CaseStatus.NEW,
        priority=DEFAULT_PRIORITY,
    )


def case_opened(
    ref: str, customer: CaseCustomer, case: NewCase, opened_at: datetime
) -> CaseOpened:
    return CaseOpened(
        ref=ref,
        customer=customer,
        channel=case.channel,
        subject=case.subject,
        body=case.description,
        priority=case.priority,
        status=case.status,
        opened_at=opened_at,
    )


def status_after_routing(current: CaseStatus) -> CaseStatus:
    """Routing opens a new case; a case already further along keeps its status."""
    return CaseStatus.OPEN if current is CaseStatus.NEW else current
