"""Threading decisions: a match counts only for the case's own customer; resolved cases
reopen within the window; closed ones never do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from casegate_case_store.domain.cases import CaseStatus
from casegate_case_store.domain.threading import Candidate, Outcome, Via, decide
from casegate_case_store.domain.transitions import TransitionRefused, change_status

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
WINDOW = timedelta(days=14)


def cand(via: Via, customer: int, status: CaseStatus = CaseStatus.OPEN,
         resolved_days_ago: int | None = None, case_id: int = 7) -> Candidate:
    resolved = None if resolved_days_ago is None else NOW - timedelta(days=resolved_days_ago)
    return Candidate(via, case_id, f"CS-{case_id:06d}", customer, status, resolved)


@pytest.mark.parametrize(
    ("candidates", "outcome", "case_id", "reason_part"),
    [
        ([], Outcome.NEW, None, "no header"),
        ([cand(Via.HEADER, 1)], Outcome.JOIN, 7, "header matched"),
        ([cand(Via.TOKEN, 1, CaseStatus.RESOLVED, 3)], Outcome.REOPEN, 7, "reopened"),
        ([cand(Via.TOKEN, 1, CaseStatus.RESOLVED, 30)], Outcome.NEW_LINKED, 7, "reopen window"),
        ([cand(Via.HEADER, 1, CaseStatus.CLOSED)], Outcome.NEW_LINKED, 7, "closed"),
        # Somebody else's case: never joined, whatever matched.
        ([cand(Via.HEADER, 2)], Outcome.NEW_LINKED, 7, "not its customer"),
        ([cand(Via.TOKEN, 2)], Outcome.NEW_LINKED, 7, "not its customer"),
        # A foreign header match does not hide the customer's own token match.
        ([cand(Via.HEADER, 2, case_id=5), cand(Via.TOKEN, 1, case_id=9)], Outcome.JOIN, 9,
         "token matched"),
    ],
)
def test_decide(candidates: list[Candidate], outcome: Outcome, case_id: int | None,
                reason_part: str) -> None:
    thread = decide(candidates, customer_id=1, now=NOW, reopen_window=WINDOW)
    assert (thread.outcome, thread.case_id) == (outcome, case_id)
    assert reason_part in thread.reason


def test_status_changes_stamp_and_refuse() -> None:
    stamp = change_status(CaseStatus.OPEN, CaseStatus.PENDING_CUSTOMER, NOW, None)
    assert stamp.pending_since == NOW
    later = NOW + timedelta(hours=3)
    stamp = change_status(CaseStatus.PENDING_CUSTOMER, CaseStatus.OPEN, later, NOW)
    assert stamp.resumed_at == later and stamp.clear_resolved and stamp.pending_since is None
    assert change_status(CaseStatus.OPEN, CaseStatus.ON_HOLD, later, None).resumed_at is None
    assert change_status(CaseStatus.OPEN, CaseStatus.RESOLVED, NOW, None).resolved_at == NOW
    for current, new in ((CaseStatus.CLOSED, CaseStatus.OPEN),
                         (CaseStatus.RESOLVED, CaseStatus.ON_HOLD),
                         (CaseStatus.OPEN, CaseStatus.OPEN)):
        with pytest.raises(TransitionRefused):
            change_status(current, new, NOW, None)
