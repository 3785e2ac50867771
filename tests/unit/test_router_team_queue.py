"""A team's queue as tables: which cases need an agent, and handing out several waiting
cases in one go, each assignment counted into the next."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from casegate_router.domain import Message, decide, parse_rules, recorded_explanation
from casegate_router.domain.assignment import Strategy
from casegate_router.domain.business_time import BusinessCalendar
from casegate_router.domain.case_conditions import Calendars
from casegate_router.assigning import InFlight
from casegate_router.domain.team_queue import (
    NOTE_RULE,
    Pending,
    QueuedCase,
    TeamLoad,
    hand_out,
    needs_agent,
    needs_assignment,
    noted_strategy,
    skills_needed,
    turn_holder,
    with_pending,
)
from casegate_router.domain.teams import Member, Team
from casegate_shared.events import CaseChange, CaseSnapshot, Channel, Contact, Priority

E, C = Channel.EMAIL, Channel.CHAT
WEEKDAYS_9_17 = [[(540, 1020)]] * 5 + [[], []]
CALENDARS = Calendars(
    {
        "emea": BusinessCalendar("Europe/Berlin", WEEKDAYS_9_17),
        "americas": BusinessCalendar("America/New_York", WEEKDAYS_9_17),
    },
    "emea",
)
MONDAY_MORNING = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)  # Berlin on shift, New York not
SATURDAY = datetime(2025, 1, 11, 12, 0, tzinfo=UTC)

ANA = Member(handle="ana", region="emea", skills=["de", "refunds"], caps={C: 2})
BEN = Member(handle="ben", region="emea", skills=["en"], caps={E: 2})
CARLA = Member(handle="carla", region="americas", skills=["en", "refunds"])
SUPPORT = Team(assignment=Strategy.LEAST_OPEN, members=[ANA, BEN, CARLA])
EVERYONE = frozenset({"ana", "ben", "carla"})


def snapshot(team: str | None = "support", assignee: str | None = None,
             status: str = "open") -> CaseSnapshot:
    return CaseSnapshot(
        ref="CS-AAAAAA", subject="s", channel=E, status=status, priority=Priority.P3, team=team,
        assignee=assignee, customer=Contact(customer_id=1),
    )


def queued(n: int, channel: Channel = E, tags: set[str] | None = None,
           strategy: Strategy | None = None) -> list[QueuedCase]:
    return [QueuedCase(f"CS-{i:06d}", channel, frozenset(tags or ()), strategy) for i in range(n)]


def agents(decided: list) -> list[str | None]:  # type: ignore[type-arg]
    return [d.agent for d in decided]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (snapshot(), True),
        (snapshot(status="new"), True),
        (snapshot(assignee="ana"), False),
        (snapshot(team=None), False),
        (snapshot(status="pending_customer"), False),
        (snapshot(status="on_hold"), False),
        (snapshot(status="resolved"), False),
        (snapshot(status="closed"), False),  # merged cases are closed
    ],
)
def test_a_case_needs_an_agent_while_it_waits_on_a_team_with_nobody(
    case: CaseSnapshot, expected: bool
) -> None:
    assert needs_agent(case) is expected


@pytest.mark.parametrize(
    ("change", "case", "expected"),
    [
        (CaseChange.ASSIGNED, snapshot(), True),  # a transfer to a team
        (CaseChange.ESCALATED, snapshot(), True),  # an escalation to a team
        (CaseChange.ASSIGNED, snapshot(assignee="ben"), False),  # a manual assignment
        (CaseChange.ESCALATED, snapshot(assignee="ben"), False),
        (CaseChange.NOTE_ADDED, snapshot(), False),  # not a move: the sweep has it
        (CaseChange.STATUS_CHANGED, snapshot(), False),
    ],
)
def test_moves_that_leave_a_case_waiting_ask_for_an_assignment(
    change: CaseChange, case: CaseSnapshot, expected: bool
) -> None:
    assert needs_assignment(change, case) is expected


def test_the_rule_strategy_is_read_back_from_the_recorded_explanation() -> None:
    rules = parse_rules(
        "rules:\n  - name: money\n    when: {keywords: [refund]}\n"
        "    then: {team: billing, priority: P2, assignment: skills}\n"
        "default: {team: support, priority: P3}\n"
    )
    message = Message(channel=E, subject="refund please", body="")
    lines = recorded_explanation(decide(rules, message))
    [note] = [line.reason for line in lines if line.rule == NOTE_RULE]
    assert noted_strategy(note) is Strategy.SKILLS
    assert noted_strategy(None) is None
    assert noted_strategy("assignment by telepathy") is None
    assert noted_strategy("SLA policy standard") is None


def test_a_case_needs_the_skills_its_tags_name() -> None:
    assert skills_needed(frozenset({"vip", "refunds", "de"}), SUPPORT) == {"refunds", "de"}
    assert skills_needed(frozenset({"vip"}), SUPPORT) == frozenset()


def test_each_assignment_counts_into_the_next() -> None:
    load = TeamLoad({"ana": {E: 1}}, EVERYONE)
    decided = hand_out("support", SUPPORT, queued(3), load, CALENDARS, MONDAY_MORNING)
    # ben (0) first; then ana and ben both have 1 and ana is listed first; then ben again.
    # carla is off shift in New York.
    assert agents(decided) == ["ben", "ana", "ben"]
    assert decided[0].reason == "ben has the fewest open cases (0) of 2 agents free"
    assert decided[2].reason == "ben has the fewest open cases (1) of 2 agents free"
    assert {d.strategy for d in decided} == {Strategy.LEAST_OPEN}
    assert load.open_cases == {"ana": {E: 1}}  # the caller's figures stay as they were


def test_a_cap_reached_within_the_batch_stops_further_cases_on_that_channel() -> None:
    load = TeamLoad({"ana": {C: 1}, "ben": {E: 5}}, EVERYONE)
    decided = hand_out("support", SUPPORT, queued(3, C), load, CALENDARS, MONDAY_MORNING)
    # ana is the least busy, but her second chat fills her cap of 2: ben takes the rest.
    assert agents(decided) == ["ana", "ben", "ben"]
    load = TeamLoad({"ana": {C: 2}, "ben": {E: 2}}, EVERYONE)
    decided = hand_out("support", SUPPORT, queued(2, E), load, CALENDARS, MONDAY_MORNING)
    assert agents(decided) == ["ana", "ana"]  # ben is at his email cap


def test_round_robin_continues_after_the_last_assigned_agent_through_the_batch() -> None:
    team = Team(assignment=Strategy.ROUND_ROBIN, members=[ANA, BEN, CARLA])
    load = TeamLoad({}, EVERYONE, last_assigned="ana")
    decided = hand_out("support", team, queued(3), load, CALENDARS, MONDAY_MORNING)
    assert agents(decided) == ["ben", "ana", "ben"]  # carla is off shift
    assert decided[1].reason == "ana is next in turn after ben (round robin, 2 agents free)"


def test_nobody_on_shift_leaves_every_case_waiting_with_the_reason() -> None:
    decided = hand_out("support", SUPPORT, queued(2), TeamLoad({}, EVERYONE), CALENDARS,
                       SATURDAY)
    assert agents(decided) == [None, None]
    assert all(d.queued for d in decided)
    assert decided[0].reason == "no agent of the team is on shift"


def test_members_who_are_not_active_users_get_nothing() -> None:
    decided = hand_out("support", SUPPORT, queued(2), TeamLoad({}, frozenset({"ben"})),
                       CALENDARS, MONDAY_MORNING)
    assert agents(decided) == ["ben", "ben"]
    decided = hand_out("support", SUPPORT, queued(1), TeamLoad({}, frozenset()), CALENDARS,
                       MONDAY_MORNING)
    assert (decided[0].agent, decided[0].reason) == (
        None, "none of the team's agents is an active user",
    )


def test_a_team_missing_from_the_teams_file_keeps_its_cases_waiting() -> None:
    [decided] = hand_out("engineering", None, queued(1), TeamLoad({}, frozenset()), CALENDARS,
                         MONDAY_MORNING)
    assert (decided.agent, decided.reason) == (None, "the teams file has no team 'engineering'")


def test_the_routing_rule_strategy_wins_over_the_team_s_own() -> None:
    load = TeamLoad({"ana": {E: 5}}, EVERYONE)
    [by_team] = hand_out("support", SUPPORT, queued(1, tags={"refunds"}), load, CALENDARS,
                         MONDAY_MORNING)
    assert (by_team.agent, by_team.strategy) == ("ben", Strategy.LEAST_OPEN)
    cases = queued(1, tags={"refunds", "vip"}, strategy=Strategy.SKILLS)
    [by_rule] = hand_out("support", SUPPORT, cases, load, CALENDARS, MONDAY_MORNING)
    assert (by_rule.agent, by_rule.strategy) == ("ana", Strategy.SKILLS)
    assert by_rule.reason == "ana has refunds and has the fewest open cases (5) of 1 suitable agent"


def test_the_decision_carries_the_agent_s_cap_on_the_case_s_channel() -> None:
    load = TeamLoad({}, EVERYONE)
    [chat] = hand_out("support", SUPPORT, queued(1, C), load, CALENDARS, MONDAY_MORNING)
    assert (chat.agent, chat.cap) == ("ana", 2)
    [mail] = hand_out("support", SUPPORT, queued(1, E), load, CALENDARS, MONDAY_MORNING)
    assert (mail.agent, mail.cap) == ("ana", None)  # ana has no email cap


def test_decisions_on_their_way_count_as_applied() -> None:
    load = TeamLoad({"ana": {E: 1}}, EVERYONE, last_assigned="ana")
    pending = [Pending("support", "ben", E), Pending("billing", "ana", C),
               Pending("support", "ben", C)]
    seen = with_pending("support", load, pending)
    assert seen.open_cases == {"ana": {E: 1, C: 1}, "ben": {E: 1, C: 1}}
    assert seen.last_assigned == "ben"  # the latest on this team; billing's does not count
    assert with_pending("billing", load, pending).last_assigned == "ana"
    assert with_pending("support", load, []) is load
    assert load.open_cases == {"ana": {E: 1}}
    # Two cases routed at once: without the first one's decision counted, both go to ben.
    [first] = hand_out("support", SUPPORT, queued(1), load, CALENDARS, MONDAY_MORNING)
    after = with_pending("support", load, [Pending("support", "ben", E)])
    [second] = hand_out("support", SUPPORT, queued(1), after, CALENDARS, MONDAY_MORNING)
    assert (first.agent, second.agent) == ("ben", "ana")


def test_round_robin_continues_after_a_deactivated_agent_and_ignores_outsiders() -> None:
    rota = ["ana", "ben", "carl"]
    assert turn_holder("ben", rota, {"ana", "carl"}) == "ana"  # so carl, who follows ben
    assert turn_holder("ana", rota, {"ben", "carl"}) == "carl"  # wraps around
    assert turn_holder("ben", rota, {"ana", "ben", "carl"}) == "ben"
    assert turn_holder("sue", rota, {"ana"}) == "sue"  # not in the rota: starts at the top
    assert turn_holder(None, rota, {"ana"}) is None
    assert turn_holder("ben", rota, set()) is None
    # ana, ben, carla: ben, last in turn, is deactivated; carla is off shift, so ana again.
    team = Team(assignment=Strategy.ROUND_ROBIN, members=[ANA, BEN, CARLA])
    load = TeamLoad({}, frozenset({"ana", "carla"}), last_assigned="ben")
    [decided] = hand_out("support", team, queued(1), load, CALENDARS, MONDAY_MORNING)
    assert decided.agent == "ana" and "after ana" in decided.reason


def test_in_flight_forgets_what_case_store_applied_and_what_is_too_old() -> None:
    flight = InFlight(ttl_s=60)
    flight.add("CS-1", Pending("support", "ana", E))
    flight.add("CS-2", Pending("support", "ben", E))
    flight.add("CS-3", Pending("support", "ana", C))
    assert flight.refs() == ["CS-1", "CS-2", "CS-3"]
    # CS-2 is assigned in case-store now: it no longer counts.
    asked = flight.refs()
    # Meanwhile another handler publishes CS-5: not asked about, so not known to be applied.
    flight.add("CS-5", Pending("support", "ben", C))
    assert flight.settle(asked, {"CS-1", "CS-3"}) == [
        Pending("support", "ana", E), Pending("support", "ana", C), Pending("support", "ben", C)]
    # CS-3 is being decided again: its old decision no longer counts.
    assert flight.settle([], set(), deciding={"CS-3"}) == [
        Pending("support", "ana", E), Pending("support", "ben", C)]
    flight.add("CS-1", Pending("support", "ben", E))  # decided again: the newest now
    assert flight.refs() == ["CS-5", "CS-1"]
    stale = InFlight(ttl_s=-1)
    stale.add("CS-4", Pending("support", "ana", E))
    assert stale.refs() == []
