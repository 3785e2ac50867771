"""case-store's side of automatic assignment: a decision applies only to the case it was made
for, and the timeline says what the router chose and why."""

from __future__ import annotations

import pytest

from casegate_case_store.domain import assignment
from casegate_case_store.domain.cases import CaseStatus
from casegate_case_store.domain.timeline import EntryKind, Visibility
from casegate_shared.events import AssignmentDecided

ANA = AssignmentDecided(ref="CS-AAAAAA", team="support", assignee="ana", strategy="least_open",
                        reason="ana has the fewest open cases (0) of 2 agents free")
WAIT = AssignmentDecided(ref="CS-AAAAAA", team="support", assignee=None, strategy="least_open",
                         reason="no agent of the team is on shift")


@pytest.mark.parametrize(
    ("team", "status", "has_assignee", "expected"),
    [
        ("support", CaseStatus.OPEN, False, None),
        ("support", CaseStatus.NEW, False, None),
        ("support", CaseStatus.PENDING_CUSTOMER, False, None),
        ("support", CaseStatus.OPEN, True, "the case has an assignee already"),
        ("billing", CaseStatus.OPEN, False, "the case is on billing now, not support"),
        (None, CaseStatus.OPEN, False, "the case is on no team now, not support"),
        ("support", CaseStatus.RESOLVED, False, "the case is resolved"),
        ("support", CaseStatus.CLOSED, False, "the case is closed"),
    ],
)
def test_a_decision_applies_only_while_the_case_waits_on_its_team(
    team: str | None, status: CaseStatus, has_assignee: bool, expected: str | None
) -> None:
    assert assignment.no_longer_applies(ANA, team, status, has_assignee) == expected


def test_the_timeline_says_who_got_it_by_which_strategy_and_why() -> None:
    entry = assignment.assigned(ANA, "support/(unassigned)", "support/ana")
    assert (entry.kind, entry.actor, entry.visibility) == (
        EntryKind.ASSIGNMENT, "router", Visibility.INTERNAL,
    )
    assert entry.body == (
        "Assigned: support/(unassigned) -> support/ana "
        "(least_open: ana has the fewest open cases (0) of 2 agents free)"
    )
    assert entry.data["assignee"] == "ana" and entry.data["strategy"] == "least_open"


def test_a_waiting_case_and_an_unknown_agent_are_internal_notes() -> None:
    waiting = assignment.waiting(WAIT)
    assert waiting.body == "Waits in support's queue: no agent of the team is on shift"
    unknown = assignment.unknown_agent(ANA)
    assert unknown.body == (
        "Not assigned to ana: no active user has that handle; the case waits in support's queue"
    )
    assert {waiting.visibility, unknown.visibility} == {Visibility.INTERNAL}


def test_a_decision_with_a_cap_stops_at_it() -> None:
    capped = ANA.model_copy(update={"cap": 3})
    assert [assignment.over_cap(capped, n) for n in (2, 3, 4)] == [False, True, True]
    assert not assignment.over_cap(ANA, 99)  # no cap on this channel
    entry = assignment.at_cap(capped, 3, "chat")
    assert entry.body == (
        "Not assigned to ana: at the cap of 3 open chat cases; the case waits in support's queue"
    )
    assert (entry.data["open"], entry.data["cap"]) == (3, 3)
