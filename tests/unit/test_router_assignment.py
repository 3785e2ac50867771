"""Assignment within a team, as tables: roster and case in, agent or queue out, with the reason;
and the teams file validated like the rules."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from casegate_router.domain import RulesError
from casegate_router.domain.assignment import Agent, Assignment, CaseToAssign, Strategy, assign
from casegate_router.domain.business_time import BusinessCalendar
from casegate_router.domain.case_conditions import Calendars
from casegate_router.domain.loader import load_sla, load_teams, parse_teams
from casegate_shared.events import Channel
from tests.conftest import ROOT

E, C, S = Channel.EMAIL, Channel.CHAT, Channel.SMS
WEEKDAYS_9_17 = [[(540, 1020)]] * 5 + [[], []]
CALENDARS = Calendars(
    {
        "emea": BusinessCalendar("Europe/Berlin", WEEKDAYS_9_17),
        "americas": BusinessCalendar("America/New_York", WEEKDAYS_9_17),
    },
    "emea",
)
# Monday 2025-01-06 10:00 UTC: 11:00 in Berlin (on shift), 05:00 in New York (off).
MONDAY_MORNING = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
# Monday 16:30 UTC: 17:30 in Berlin (off), 11:30 in New York (on).
MONDAY_AFTERNOON = datetime(2025, 1, 6, 16, 30, tzinfo=UTC)
SATURDAY = datetime(2025, 1, 11, 12, 0, tzinfo=UTC)

ANA = Agent("ana", "emea", frozenset({"de", "refunds"}), {C: 3}, {E: 4, C: 1})
BEN = Agent("ben", "emea", frozenset({"en"}), {C: 2, E: 10}, {E: 1, C: 2})
CARLA = Agent("carla", "emea", frozenset({"de", "en", "refunds"}), {E: 5}, {E: 3})
DAN = Agent("dan", "americas", frozenset({"en", "refunds"}), {}, {})
TEAM = [ANA, BEN, CARLA, DAN]


def case(channel: Channel = E, at: datetime = MONDAY_MORNING, skills: set[str] | None = None) -> CaseToAssign:
    return CaseToAssign(channel, at, frozenset(skills or ()))


TABLE: list[tuple[str, Strategy, list[Agent], CaseToAssign, str | None, Assignment]] = [
    # (case, strategy, roster, case, cursor in, expected)
    (
        "round robin starts at the top",
        Strategy.ROUND_ROBIN, TEAM, case(), None,
        Assignment("ana", "ana is next in turn (round robin, 3 agents free)", "ana"),
    ),
    (
        "round robin continues after the cursor",
        Strategy.ROUND_ROBIN, TEAM, case(), "ana",
        Assignment("ben", "ben is next in turn after ana (round robin, 3 agents free)", "ben"),
    ),
    (
        "round robin skips who is off shift and wraps around",
        Strategy.ROUND_ROBIN, TEAM, case(), "carla",
        Assignment("ana", "ana is next in turn after carla (round robin, 3 agents free)", "ana"),
    ),
    (
        "round robin skips who is at their cap for the channel",
        Strategy.ROUND_ROBIN, TEAM, case(C), "ana",
        Assignment("carla", "carla is next in turn after ana (round robin, 2 agents free)", "carla"),
    ),
    (
        "round robin with a cursor no longer on the team",
        Strategy.ROUND_ROBIN, TEAM, case(), "zoe",
        Assignment("ana", "ana is next in turn (round robin, 3 agents free)", "ana"),
    ),
    (
        "least open: fewest open cases in all",
        Strategy.LEAST_OPEN, TEAM, case(), "ana",
        Assignment("ben", "ben has the fewest open cases (3) of 3 agents free", "ana"),
    ),
    (
        "least open in the New York afternoon: only dan is on shift",
        Strategy.LEAST_OPEN, TEAM, case(at=MONDAY_AFTERNOON), None,
        Assignment("dan", "dan has the fewest open cases (0) of 1 agent free", None),
    ),
    (
        "skills: the least busy of those with every skill",
        Strategy.SKILLS, TEAM, case(skills={"de", "refunds"}), None,
        Assignment("carla", "carla has de, refunds and has the fewest open cases (3) of 2 suitable agents", None),
    ),
    (
        "skills: none needed, anyone free",
        Strategy.SKILLS, TEAM, case(), None,
        Assignment("ben", "ben has the fewest open cases (3) of 3 suitable agents", None),
    ),
    (
        "skills: nobody free has them",
        Strategy.SKILLS, TEAM, case(skills={"fr"}), None,
        Assignment(None, "queued: no free agent has every skill of fr", None),
    ),
    (
        "capacity: the smallest share of the channel cap",
        Strategy.CAPACITY, TEAM, case(), None,
        Assignment("ben", "ben uses the least of their email cap (1 of 10) of 2 agents with one", None),
    ),
    (
        "capacity: agents without a cap for the channel are not considered",
        Strategy.CAPACITY, TEAM, case(S), None,
        Assignment(None, "queued: no free agent has a cap for sms", None),
    ),
    (
        "one at their cap is passed over",
        Strategy.LEAST_OPEN, [ANA, BEN], case(C), None,
        Assignment("ana", "ana has the fewest open cases (5) of 1 agent free", None),
    ),
    (
        "nobody on shift on a Saturday: the queue, cursor kept",
        Strategy.ROUND_ROBIN, TEAM, case(at=SATURDAY), "ben",
        Assignment(None, "queued: no agent of the team is on shift", "ben"),
    ),
    (
        "a team without agents",
        Strategy.LEAST_OPEN, [], case(), None,
        Assignment(None, "queued: the team has no agents", None),
    ),
    (
        "all at their cap",
        Strategy.ROUND_ROBIN, [BEN], case(C), None,
        Assignment(None, "queued: every agent on shift is at their cap for chat", None),
    ),
]


@pytest.mark.parametrize(
    ("strategy", "roster", "to_assign", "cursor", "expected"),
    [pytest.param(s, r, c, cur, e, id=name) for name, s, r, c, cur, e in TABLE],
)
def test_assignment(
    strategy: Strategy,
    roster: list[Agent],
    to_assign: CaseToAssign,
    cursor: str | None,
    expected: Assignment,
) -> None:
    assert assign(strategy, roster, to_assign, CALENDARS, cursor) == expected


def test_round_robin_goes_round_when_the_caller_keeps_the_cursor() -> None:
    cursor = None
    chosen = []
    for _ in range(7):
        result = assign(Strategy.ROUND_ROBIN, TEAM, case(), CALENDARS, cursor)
        chosen.append(result.agent)
        cursor = result.cursor
    assert chosen == ["ana", "ben", "carla", "ana", "ben", "carla", "ana"]


# --- the teams file ----------------------------------------------------------------------


def test_shipped_teams_file_loads_against_the_shipped_sla_file() -> None:
    sla = load_sla(ROOT / "config/sla.yaml")
    teams = load_teams(ROOT / "config/teams.yaml", {"regions": sla.regions})
    billing = teams.teams["billing"]
    assert billing.assignment is Strategy.SKILLS
    roster = billing.roster({"dora": {E: 2}})
    assert [(a.handle, a.total_open) for a in roster] == [("dora", 2), ("emil", 0)]


TEAMS = """\
teams:
  billing:
    assignment: skills
    members:
      - {handle: dora, region: emea, caps: {email: 5}}
      - {handle: emil, region: emea}
"""

BAD_TEAMS = [
    ("unknown region", "region: emea}", "region: mars}", "F:6: teams.billing.members[1].region: unknown region 'mars'"),
    ("unknown strategy", "assignment: skills", "assignment: random", "F:3: teams.billing.assignment: Input should be"),
    ("negative cap", "email: 5", "email: -1", "F:5: teams.billing.members[0].caps.email: Input should be greater"),
    ("unknown channel cap", "email: 5", "fax: 5", "F:5: teams.billing.members[0].caps.fax.[key]: Input should be"),
    ("same member twice", "handle: emil", "handle: dora", "F:2: teams.billing: dora is listed twice"),
    ("a channel belongs to the notifier", "assignment: skills", 'slack_channel: "#billing"\n    assignment: skills', "F:2: teams.billing: slack_channel: a team's channel and escalation group belong in the notifier's policy file"),
    ("upper case handle", "handle: emil", "handle: Emil", "F:6: teams.billing.members[1].handle: String should match"),
]


@pytest.mark.parametrize(("old", "new", "expected"), [pytest.param(o, n, e, id=c) for c, o, n, e in BAD_TEAMS])
def test_bad_teams_file_names_file_line_and_field(tmp_path: Path, old: str, new: str, expected: str) -> None:
    path = tmp_path / "teams.yaml"
    path.write_text(TEAMS.replace(old, new, 1))
    with pytest.raises(RulesError) as caught:
        load_teams(path, {"regions": {"emea": None}})
    assert caught.value.kind == "teams"
    [line] = str(caught.value).splitlines()
    assert line.startswith(expected.replace("F", str(path), 1)), line


def test_teams_file_alone_does_not_check_regions() -> None:
    assert parse_teams(TEAMS.replace("region: emea}", "region: mars}", 1)).teams["billing"]
