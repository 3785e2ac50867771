"""SLA policies: the SLA file is validated with file, line and field; due and warning times
follow the region's business time and the case's pauses; a breach escalates by the team's
path."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from casegate_router.domain import RulesError
from casegate_router.domain.escalation import NotABreach, decide_escalation, raised
from casegate_router.domain.loader import load_sla, parse_sla
from casegate_router.domain.sla import SlaConfig, due_times, parse_duration, warning_at
from casegate_shared.events import (
    CaseChange,
    CaseSnapshot,
    CaseUpdated,
    Channel,
    Contact,
    EscalationDecided,
    Priority,
)
from tests.conftest import ROOT

SLA = """\
regions:
  emea:
    timezone: Europe/Berlin
    hours: {mon: ["09:00-17:00"], tue: ["09:00-17:00"], wed: ["09:00-17:00"],
            thu: ["09:00-17:00"], fri: ["09:00-17:00"]}
    holidays: {country: DE, subdivision: BE, extra: [2025-12-24]}
  apac:
    timezone: Asia/Tokyo
    hours: {mon: ["09:00-12:00", "13:00-18:00"], fri: ["09:00-18:00"]}
default_region: emea
policies:
  standard:
    warning_share: 0.5
    targets:
      P1: {first_response: {minimum: 15m, maximum: 1h}, resolution: {minimum: 4h, maximum: 8h},
           around_the_clock: true}
      P2: {first_response: {minimum: 1h, maximum: 2h}, resolution: {minimum: 8h, maximum: 16h}}
      P3: {first_response: {minimum: 4h, maximum: 8h}, resolution: {minimum: 16h, maximum: 1h30m}}
      P4: {first_response: {minimum: 8h, maximum: 16h}, resolution: {minimum: 40h, maximum: 80h}}
default_policy: standard
escalation:
  default:
    resolution: {assignee: lead, raise_priority: 1}
  teams:
    billing:
      first_response: {assignee: billing-lead, raise_priority: 2}
      resolution: {team: billing-escalations}
"""

GOOD = SLA.replace("maximum: 1h30m", "maximum: 32h")


@pytest.fixture(scope="module")
def sla() -> SlaConfig:
    return parse_sla(GOOD)


def berlin(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("Europe/Berlin"))


# --- the file --------------------------------------------------------------------------

BAD: list[tuple[str, str, str, list[str]]] = [
    # (case, replace this, with this, expected problems)
    ("minimum over maximum", "maximum: 32h", "maximum: 1h30m",
     ["F:18: policies.standard.targets.P3.resolution: minimum is longer than maximum"]),
    ("unknown time zone", "Asia/Tokyo", "Asia/Tokio",
     ["F:8: regions.apac.timezone: unknown time zone 'Asia/Tokio'"]),
    ("bad window", '["09:00-12:00", "13:00-18:00"]', '["12:00-09:00"]',
     ["F:9: regions.apac.hours.mon[0]: '12:00-09:00' ends before it starts"]),
    ("overlapping windows", '["09:00-12:00", "13:00-18:00"]', '["09:00-12:00", "11:00-18:00"]',
     ["F:9: regions.apac.hours: mon: windows overlap"]),
    ("unknown weekday", "fri: [\"09:00-18:00\"]}", "fry: [\"09:00-18:00\"]}",
     ["F:9: regions.apac.hours.fry.[key]: Input should be 'mon'"]),
    ("unknown holiday subdivision", "subdivision: BE", "subdivision: XX",
     ["F:6: regions.emea.holidays: unknown subdivision 'XX' of DE"]),
    ("a duration in days", "maximum: 80h", "maximum: 10d",
     ["F:19: policies.standard.targets.P4.resolution.maximum: expected a duration"]),
    ("a priority missing", "      P4: {first_response: {minimum: 8h, maximum: 16h}, resolution: "
     "{minimum: 40h, maximum: 80h}}\n", "", ["F:14: policies.standard.targets: targets for P4 are missing"]),
    ("unknown default region", "default_region: emea", "default_region: mars",
     ["F:1: default_region 'mars' is not one of the regions"]),
    ("an escalation that does nothing", "resolution: {team: billing-escalations}", "resolution: {}",
     ["F:27: escalation.teams.billing.resolution: names no team, assignee or raise_priority"]),
    ("warning share of one", "warning_share: 0.5", "warning_share: 1",
     ["F:13: policies.standard.warning_share: Input should be less than 1"]),
]


@pytest.mark.parametrize(("old", "new", "expected"), [pytest.param(o, n, e, id=c) for c, o, n, e in BAD])
def test_bad_sla_file_names_file_line_and_field(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    assert old in GOOD
    path = tmp_path / "sla.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(RulesError) as caught:
        load_sla(path)
    assert caught.value.kind == "SLA"
    lines = str(caught.value).splitlines()
    assert len(lines) == len(expected), lines
    for line, want in zip(lines, expected, strict=True):
        assert line.startswith(want.replace("F", str(path), 1)), line


def test_shipped_sla_file_loads() -> None:
    sla = load_sla(ROOT / "config/sla.yaml")
    assert set(sla.regions) == {"emea", "americas", "apac", "oceania"}
    assert sla.policy(None) is sla.policies["standard"]
    assert sla.region("nowhere") is sla.regions["emea"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4h", timedelta(hours=4)), ("30m", timedelta(minutes=30)), ("1h30m", timedelta(minutes=90)),
     ("2h 5min", timedelta(minutes=125))],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


# --- due and warning times --------------------------------------------------------------

DUE = [
    # (case, priority, region, opened, first response (min, max), resolution (min, max))
    (
        "P2 on a Monday morning in Berlin",
        Priority.P2, "emea", berlin("2025-01-06 10:00"),
        (berlin("2025-01-06 11:00"), berlin("2025-01-06 12:00")),
        (berlin("2025-01-07 10:00"), berlin("2025-01-08 10:00")),
    ),
    (
        "P3 on Friday afternoon runs over the weekend",
        Priority.P3, "emea", berlin("2025-01-10 15:00"),
        (berlin("2025-01-13 11:00"), berlin("2025-01-13 15:00")),
        (berlin("2025-01-14 15:00"), berlin("2025-01-16 15:00")),
    ),
    (
        "P2 before Christmas: the 24th (extra) and both holidays are closed",
        Priority.P2, "emea", berlin("2025-12-23 16:30"),
        (berlin("2025-12-29 09:30"), berlin("2025-12-29 10:30")),
        (berlin("2025-12-29 16:30"), berlin("2025-12-30 16:30")),
    ),
    (
        "P1 counts around the clock, Saturday night included",
        Priority.P1, "emea", berlin("2025-01-11 23:30"),
        (berlin("2025-01-11 23:45"), berlin("2025-01-12 00:30")),
        (berlin("2025-01-12 03:30"), berlin("2025-01-12 07:30")),
    ),
    (
        "P2 in Tokyo, lunch break and a Monday/Friday week",
        Priority.P2, "apac", datetime(2025, 1, 6, 2, 30, tzinfo=UTC),  # Monday 11:30 JST
        (datetime(2025, 1, 6, 4, 30, tzinfo=UTC), datetime(2025, 1, 6, 5, 30, tzinfo=UTC)),
        # 8h: 0.5 + 5 Monday, 2.5 on Friday (Tue-Thu closed)
        (datetime(2025, 1, 10, 2, 30, tzinfo=UTC), datetime(2025, 1, 13, 1, 30, tzinfo=UTC)),
    ),
]


@pytest.mark.parametrize(
    ("priority", "region", "opened", "first", "resolution"),
    [pytest.param(p, r, o, f, res, id=c) for c, p, r, o, f, res in DUE],
)
def test_due_times(
    sla: SlaConfig,
    priority: Priority,
    region: str,
    opened: datetime,
    first: tuple[datetime, datetime],
    resolution: tuple[datetime, datetime],
) -> None:
    due = due_times(sla.policy("standard"), priority, sla.region(region), opened)
    assert (due.first_response.minimum, due.first_response.maximum) == first
    assert (due.resolution.minimum, due.resolution.maximum) == resolution


def test_warning_at_a_share_of_the_hard_limit(sla: SlaConfig) -> None:
    policy, region = sla.policy(None), sla.region("emea")
    opened = berlin("2025-01-06 16:00")
    # first response hard limit 2h, share 0.5: 1h of business time, Monday 16:00 -> 17:00
    assert warning_at(policy, Priority.P2, region, opened, "first_response") == berlin("2025-01-06 17:00")
    # resolution 16h * 0.5 = 8h: Monday 1h, Tuesday 7h -> Tuesday 16:00
    assert warning_at(policy, Priority.P2, region, opened, "resolution") == berlin("2025-01-07 16:00")


def test_pending_periods_stop_the_clocks(sla: SlaConfig) -> None:
    policy, region = sla.policy(None), sla.region("emea")
    opened = berlin("2025-01-06 10:00")
    waiting = ((berlin("2025-01-06 10:30"), berlin("2025-01-06 15:00")),)
    due = due_times(policy, Priority.P2, region, opened, waiting)
    assert due.first_response.maximum == berlin("2025-01-06 16:30")
    assert warning_at(policy, Priority.P2, region, opened, "first_response", waiting) == berlin(
        "2025-01-06 15:30"
    )
    still_waiting = ((berlin("2025-01-06 10:30"), None),)
    assert due_times(policy, Priority.P2, region, opened, still_waiting).first_response.maximum is None


# --- escalation -------------------------------------------------------------------------


def breach(team: str | None, priority: Priority, clock: str | None, assignee: str | None = None) -> CaseUpdated:
    snapshot = CaseSnapshot(
        ref="CS-7K3M9Q", subject="s", channel=Channel.EMAIL, status="open", priority=priority,
        team=team, assignee=assignee, customer=Contact(customer_id=1),
    )
    return CaseUpdated(
        change=CaseChange.SLA_BREACHED, ref="CS-7K3M9Q", actor="case-store", case=snapshot,
        clock=clock, due_at=datetime(2025, 1, 6, tzinfo=UTC),
    )


ESCALATIONS = [
    # (case, team, priority, clock, assignee, expected (team, assignee, priority), reason)
    (
        "team path: assignee and two levels",
        "billing", Priority.P3, "first_response", None, (None, "billing-lead", Priority.P1),
        "first response target breached for team billing; by the path of team billing: "
        "assigned to billing-lead, priority P3 -> P1",
    ),
    (
        "team path: hand over to another team",
        "billing", Priority.P2, "resolution", "dora", ("billing-escalations", None, None),
        "resolution target breached for team billing; by the path of team billing: "
        "to team billing-escalations",
    ),
    (
        "team without a path of its own: the default",
        "support", Priority.P1, "resolution", None, (None, "lead", None),
        "resolution target breached for team support; by the default path: assigned to lead",
    ),
    (
        "no step for this clock anywhere",
        "support", Priority.P3, "first_response", None, (None, None, None),
        "first response target breached; no escalation path for team support, nothing changes",
    ),
]


@pytest.mark.parametrize(
    ("team", "priority", "clock", "assignee", "expected", "reason"),
    [pytest.param(t, p, c, a, e, r, id=case) for case, t, p, c, a, e, r in ESCALATIONS],
)
def test_escalation_decisions(
    sla: SlaConfig,
    team: str,
    priority: Priority,
    clock: str,
    assignee: str | None,
    expected: tuple[str | None, str | None, Priority | None],
    reason: str,
) -> None:
    decided = decide_escalation(breach(team, priority, clock, assignee), sla.escalation)
    assert isinstance(decided, EscalationDecided)
    assert (decided.ref, decided.clock) == ("CS-7K3M9Q", clock)
    assert (decided.team, decided.assignee, decided.priority) == expected
    assert decided.reason == reason


def test_escalation_when_the_case_is_already_with_the_escalation_team(sla: SlaConfig) -> None:
    paths = sla.escalation.model_copy(
        update={"teams": {"billing": sla.escalation.teams["billing"].model_copy(
            update={"resolution": sla.escalation.teams["billing"].first_response})}}
    )
    decided = decide_escalation(breach("billing", Priority.P1, "resolution", "billing-lead"), paths)
    assert (decided.team, decided.assignee, decided.priority) == (None, None, None)
    assert decided.reason.endswith("already where the path leads, nothing changes")


def test_not_a_breach_is_refused(sla: SlaConfig) -> None:
    with pytest.raises(NotABreach, match="no known clock"):
        decide_escalation(breach("billing", Priority.P2, None), sla.escalation)
    warning = breach("billing", Priority.P2, "resolution").model_copy(update={"change": CaseChange.SLA_WARNING})
    with pytest.raises(NotABreach, match="sla_warning"):
        decide_escalation(warning, sla.escalation)


def test_priority_is_raised_but_never_past_p1() -> None:
    assert raised(Priority.P4, 1) is Priority.P3
    assert raised(Priority.P2, 3) is Priority.P1
    assert raised(Priority.P3, 0) is Priority.P3


def test_sla_file_with_nothing_in_it() -> None:
    with pytest.raises(RulesError, match="the file is empty"):
        parse_sla(textwrap.dedent("# nothing\n"))
