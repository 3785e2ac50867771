"""Which case a customer's message belongs to, and why. Pure: the store gathers candidate
cases (by email headers, case token, Slack thread, the sender's open SMS case) and this
decides.

A match only counts when the sender is the case's customer: a forwarded mail, a newsletter
reply sharing an In-Reply-To or a guessed token must never put one customer's words into
another customer's case (helpdesks have leaked cases exactly this way). Such a message opens
a new case linked to the one it pointed at, for an agent to look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from .cases import CaseStatus


class Via(StrEnum):
    HEADER = "header"  # In-Reply-To / References named a message of the case
    TOKEN = "token"  # the subject or form carried the case reference
    THREAD = "thread"  # the provider's conversation (Slack thread)
    SENDER = "sender"  # the sender's open case on this channel (SMS)


@dataclass(frozen=True, slots=True)
class Candidate:
    via: Via
    case_id: int
    ref: str
    customer_id: int
    status: CaseStatus
    resolved_at: datetime | None


class Outcome(StrEnum):
    JOIN = "join"
    REOPEN = "reopen"
    NEW = "new"
    NEW_LINKED = "new_linked"  # a new case whose parent is the case the message pointed at


@dataclass(frozen=True, slots=True)
class Thread:
    outcome: Outcome
    reason: str
    case_id: int | None = None  # the case joined or reopened, or the new case's parent


def decide(
    candidates: list[Candidate], customer_id: int, now: datetime, reopen_window: timedelta
) -> Thread:
    """The first candidate in priority order that is this customer's decides."""
    foreign: Candidate | None = None
    for c in candidates:
        if c.customer_id != customer_id:
            foreign = foreign or c
            continue
        if c.status is CaseStatus.CLOSED:
            return Thread(Outcome.NEW_LINKED, f"{c.via} matched {c.ref}, which is closed", c.case_id)
        if c.status is CaseStatus.RESOLVED:
            resolved = c.resolved_at or now
            if now - resolved <= reopen_window:
                return Thread(Outcome.REOPEN, f"{c.via} matched {c.ref}; reopened", c.case_id)
            return Thread(
                Outcome.NEW_LINKED,
                f"{c.via} matched {c.ref}, resolved longer ago than the reopen window",
                c.case_id,
            )
        return Thread(Outcome.JOIN, f"{c.via} matched {c.ref}", c.case_id)
    if foreign is not None:
        return Thread(
            Outcome.NEW_LINKED,
            f"{foreign.via} matched {foreign.ref}, but the sender is not its customer",
            foreign.case_id,
        )
    return Thread(Outcome.NEW, "no header, token or rule matched a case")
