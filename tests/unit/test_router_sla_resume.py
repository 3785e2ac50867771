"""SLA clocks after a wait for the customer: moved on by the working time the wait took, in
the case's calendar; agrees with counting the wait as a pause from the start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.test_router_business_time import (
    BERLIN,
    FAST,
    any_calendar,
    durations,
    instants,
)

from casegate_router.domain.business_time import (
    BusinessCalendar,
    add_business_time,
    due_with_pauses,
)
from casegate_router.domain.sla import resume_clocks, span
from casegate_router.domain import PolicyFiles, load_policies
from casegate_router.handlers import clocks_after_wait
from casegate_shared.events import Priority, SlaResumed

ROOT = Path(__file__).resolve().parents[2]

H = timedelta(hours=1)


def berlin(day: int, hour: int, minute: int = 0) -> datetime:
    """November 2026 in Berlin (UTC+1): the 23rd is a Monday."""
    return datetime(2026, 11, day, hour - 1, minute, tzinfo=UTC)


def test_a_wait_outside_working_hours_costs_the_clock_nothing() -> None:
    # Due Tuesday 10:00; the customer was asked Monday 10:00 and answered Monday 20:00.
    # Seven working hours of the wait (10-17) stop the clock; the evening does not count.
    moved = resume_clocks(BERLIN, berlin(23, 10), berlin(23, 20), {"due": berlin(24, 10)})
    assert moved.times["due"] == berlin(24, 17)  # the 8 hours left run Tue 9-17
    assert moved.waited == 10 * H and moved.waited_working == 7 * H
    # Moving on by the wall time instead would have made it Tuesday 20:00, after hours.
    assert berlin(24, 10) + moved.waited == berlin(24, 20)
    # What case-store adds to its wall-time shift when the case waited again meanwhile.
    assert moved.corrections == {"due": -3 * H}


def test_the_correction_can_move_a_wall_time_shift_later() -> None:
    # Asked Friday 15:00 with one working hour left, answered Friday 22:00: the wall-time
    # shift says Friday 23:00, the working-time answer Monday 10:00 (the day starts at 9).
    moved = resume_clocks(BERLIN, berlin(27, 15), berlin(27, 22), {"due": berlin(27, 16)})
    assert moved.times["due"] == berlin(30, 10)
    assert berlin(27, 16) + moved.waited + moved.corrections["due"] == berlin(30, 10)


def test_a_wait_over_the_weekend_resumes_with_the_same_working_time_left() -> None:
    # Asked Friday 16:00 with one working hour left; answered Monday 08:00.
    moved = resume_clocks(BERLIN, berlin(27, 16), berlin(30, 8), {"due": berlin(27, 17)})
    assert moved.times["due"] == berlin(30, 10)  # 1 h left: Mon 9-10 (the office opens at 9)
    assert moved.waited_working == H


def test_times_already_passed_or_unset_stay_where_they_were() -> None:
    passed = berlin(23, 9)
    moved = resume_clocks(BERLIN, berlin(23, 10), berlin(24, 10), {"warn": passed, "due": None})
    assert moved.times == {"warn": passed, "due": None}


@FAST
@given(any_calendar, instants, durations, st.integers(0, 400 * 60), st.integers(0, 200 * 60))
def test_resuming_agrees_with_counting_the_wait_as_a_pause_from_the_start(
    calendar: BusinessCalendar, opened: datetime, budget: timedelta, until_wait: int, wait: int
) -> None:
    due = add_business_time(opened, budget, calendar)
    paused = opened + timedelta(minutes=until_wait)
    resumed = paused + timedelta(minutes=wait)
    moved = resume_clocks(calendar, paused, resumed, {"due": due}).times["due"]
    assert moved == due_with_pauses(opened, budget, calendar, [(paused, resumed)])
    assert moved is not None and moved >= due


def test_spans_read_as_days_hours_and_minutes() -> None:
    assert span(timedelta(days=2, hours=3, minutes=5, seconds=59)) == "2 d 3 h 5 min"
    assert span(timedelta(seconds=30)) == "0 min"


def test_the_decision_uses_the_cases_region_and_names_the_wait() -> None:
    sla = load_policies(PolicyFiles(ROOT / "config" / "rules.yaml", ROOT / "config" / "sla.yaml",
                                    ROOT / "config" / "teams.yaml")).sla
    resumed = SlaResumed(ref="CS-7K3M9Q", priority=Priority.P3, region="emea",
                         paused_at=berlin(23, 10), resumed_at=berlin(23, 20),
                         first_response_due=berlin(24, 10), resolution_due=None)
    decided = clocks_after_wait(sla, resumed)
    # emea works 08:00-18:00 Monday to Thursday: 8 h of the wait stopped the clock, and the
    # 10 h that were left after Monday 10:00 run Tuesday 08:00-18:00.
    assert decided.first_response_due == berlin(24, 18)
    assert decided.resolution_due is None and decided.resumed_at == berlin(23, 20)
    assert "waited 10 h for the customer, 8 h of it in working time of emea" in decided.reason
