"""Time in the notifier, with the clock passed in: quiet hours in the customer's time zone
(over midnight, across daylight saving), backoff with jitter that honours Retry-After, and the
delivery deadline."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casegate_notifier.domain.quiet import (
    QuietHours,
    QuietHoursProblem,
    held_until,
    parse_quiet_hours,
)
from casegate_notifier.domain.retry import RetryPolicy, gave_up_reason, give_up, next_delay

NIGHT = QuietHours("Europe/Berlin", time(22, 0), time(7, 0))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_inside_a_window_over_midnight_waits_until_the_local_morning() -> None:
    # 23:30 in Berlin (winter, UTC+1) is 22:30 UTC: held until 07:00 Berlin = 06:00 UTC.
    assert held_until(NIGHT, utc(2025, 1, 15, 22, 30)) == utc(2025, 1, 16, 6, 0)
    # 03:00 Berlin: the same morning.
    assert held_until(NIGHT, utc(2025, 1, 16, 2, 0)) == utc(2025, 1, 16, 6, 0)
    # Outside: 12:00 Berlin, and the edges (07:00 is already morning, 21:59 still evening).
    assert held_until(NIGHT, utc(2025, 1, 16, 11, 0)) is None
    assert held_until(NIGHT, utc(2025, 1, 16, 6, 0)) is None
    assert held_until(NIGHT, utc(2025, 1, 16, 20, 59)) is None
    assert held_until(NIGHT, utc(2025, 1, 16, 21, 0)) == utc(2025, 1, 17, 6, 0)


def test_a_daytime_window_and_summer_time() -> None:
    lunch = QuietHours("America/New_York", time(12, 0), time(13, 30))
    # July: New York is UTC-4. 12:15 local = 16:15 UTC, until 13:30 local = 17:30 UTC.
    assert held_until(lunch, utc(2025, 7, 1, 16, 15)) == utc(2025, 7, 1, 17, 30)
    assert held_until(lunch, utc(2025, 7, 1, 17, 30)) is None


def test_the_morning_after_a_daylight_saving_change_keeps_local_hours() -> None:
    # Berlin springs forward on 2025-03-30: 23:00 on the 29th is UTC+1, 07:00 on the 30th UTC+2.
    assert held_until(NIGHT, utc(2025, 3, 29, 22, 0)) == utc(2025, 3, 30, 5, 0)
    # And falls back on 2025-10-26: 07:00 local that morning is UTC+1 again.
    assert held_until(NIGHT, utc(2025, 10, 25, 21, 0)) == utc(2025, 10, 26, 6, 0)


def test_an_end_inside_the_spring_forward_gap_never_lies_in_the_past() -> None:
    gap = QuietHours("Europe/Berlin", time(1, 0), time(2, 30))  # 02:30 does not exist on 03-30
    now = utc(2025, 3, 30, 0, 45)  # 01:45 local
    until = held_until(gap, now)
    assert until is not None and until > now


def test_the_night_the_clocks_go_back_holds_for_ten_real_hours() -> None:
    # 2025-10-26 in Berlin: 22:00 on the 25th is UTC+2, 07:00 on the 26th UTC+1.
    assert held_until(NIGHT, utc(2025, 10, 25, 20, 0)) == utc(2025, 10, 26, 6, 0)


def test_parsing_windows_and_zones() -> None:
    assert parse_quiet_hours(("22:00", "07:00"), "Europe/Berlin") == NIGHT
    assert parse_quiet_hours(None, "UTC") is None
    assert parse_quiet_hours(("08:00", "08:00"), "UTC") is None
    with pytest.raises(QuietHoursProblem, match="unknown time zone"):
        parse_quiet_hours(("22:00", "07:00"), "Mars/Olympus")
    with pytest.raises(QuietHoursProblem, match="HH:MM"):
        parse_quiet_hours(("late", "07:00"), "UTC")


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    )
)
def test_a_held_notification_always_goes_out_later_and_outside_the_window(now: datetime) -> None:
    until = held_until(NIGHT, now)
    if until is not None:
        assert until > now
        # The window is 9 hours of local time: 10 real hours the night clocks go back.
        assert (until - now).total_seconds() <= 10 * 3600
        assert held_until(NIGHT, until) is None


def test_backoff_doubles_with_the_time_waited_and_is_jittered() -> None:
    policy = RetryPolicy(base_s=1, cap_s=60, deadline_s=3600)
    assert next_delay(policy, 0, rand=lambda: 0.0) == 0.5
    assert next_delay(policy, 0, rand=lambda: 1.0) == 1.0
    assert next_delay(policy, 10, rand=lambda: 1.0) == 10
    assert next_delay(policy, 1000, rand=lambda: 1.0) == 60  # capped
    assert next_delay(policy, 10, rand=lambda: 0.0) == 5  # jitter: between half and all


def test_retry_after_is_honoured_but_not_beyond_the_deadline() -> None:
    policy = RetryPolicy(base_s=1, cap_s=60, deadline_s=600)
    assert next_delay(policy, 0, retry_after_s=30, rand=lambda: 0.5) == 30
    assert next_delay(policy, 0, retry_after_s=10_000, rand=lambda: 0.5) == 600


def test_the_deadline_ends_the_retries_with_a_reason() -> None:
    policy = RetryPolicy(base_s=1, cap_s=60, deadline_s=600)
    assert not give_up(policy, 500, 60)
    assert give_up(policy, 560, 60)
    reason = gave_up_reason(7300, "smtp 421: busy")
    assert reason == "gave up after 2.0h of temporary failures: smtp 421: busy"
