"""How a case may move: which status changes are allowed, what each one stamps, and who may
act on which case. Pure: the store applies what these functions decide."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .cases import CaseStatus

S = CaseStatus

# A closed case is final: a new message opens a linked case instead (see threading).
ALLOWED: dict[CaseStatus, frozenset[CaseStatus]] = {
    S.NEW: frozenset({S.OPEN, S.PENDING_CUSTOMER, S.ON_HOLD, S.RESOLVED, S.CLOSED}),
    S.OPEN: frozenset({S.PENDING_CUSTOMER, S.ON_HOLD, S.RESOLVED, S.CLOSED}),
    S.PENDING_CUSTOMER: frozenset({S.OPEN, S.ON_HOLD, S.RESOLVED, S.CLOSED}),
    S.ON_HOLD: frozenset({S.OPEN, S.PENDING_CUSTOMER, S.RESOLVED, S.CLOSED}),
    S.RESOLVED: frozenset({S.OPEN, S.CLOSED}),
    S.CLOSED: frozenset(),
}


class TransitionRefused(Exception):
    """The change does not fit the case's current state (answered 409)."""


@dataclass(frozen=True, slots=True)
class StatusStamp:
    """Columns a status change sets; None leaves a column as it is."""

    status: CaseStatus
    resolved_at: datetime | None
    closed_at: datetime | None
    pending_since: datetime | None
    clear_resolved: bool
    # The wait for the customer ended now: the SLA clocks run again, moved on by the wait.
    resumed_at: datetime | None


def change_status(
    current: CaseStatus, new: CaseStatus, now: datetime, pending_since: datetime | None
) -> StatusStamp:
    if new == current:
        raise TransitionRefused(f"the case is already {current.value}")
    if new not in ALLOWED[current]:
        raise TransitionRefused(f"a {current.value} case cannot become {new.value}")
    return StatusStamp(
        status=new,
        resolved_at=now if new is S.RESOLVED else None,
        closed_at=now if new is S.CLOSED else None,
        pending_since=now if new is S.PENDING_CUSTOMER else None,
        clear_resolved=new is S.OPEN,
        resumed_at=_resumed(current, now, pending_since),
    )


def customer_returned(current: CaseStatus, now: datetime,
                      pending_since: datetime | None) -> StatusStamp:
    """A customer's message moves a resolved or waiting case back to open (whatever the
    agents' transition table says: the customer cannot be refused)."""
    return StatusStamp(status=S.OPEN, resolved_at=None, closed_at=None, pending_since=None,
                       clear_resolved=True, resumed_at=_resumed(current, now, pending_since))


def _resumed(current: CaseStatus, now: datetime, pending_since: datetime | None) -> datetime | None:
    return now if current is S.PENDING_CUSTOMER and pending_since is not None else None


def reopen_status(current: CaseStatus) -> CaseStatus | None:
    """The status a customer's new message moves the case to, or None if it stays."""
    if current in (S.RESOLVED, S.PENDING_CUSTOMER):
        return S.OPEN
    return None
