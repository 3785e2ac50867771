"""Business time: properties that must hold for any start, duration and calendar (hypothesis),
and fixed examples across DST changes, holidays and zones either side of UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays as holiday_data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casegate_router.domain.business_time import (
    BusinessCalendar,
    add_business_time,
    add_business_times,
    business_time_between,
    business_time_elapsed,
    due_with_pauses,
    is_working,
    local_to_utc,
    merge_pauses,
    parse_window,
)

H = timedelta(hours=1)
NINE_TO_FIVE = [[(9 * 60, 17 * 60)]] * 5 + [[], []]


def office(tz: str, country: str | None = None, subdiv: str | None = None) -> BusinessCalendar:
    public = holiday_data.country_holidays(country, subdiv=subdiv) if country else None
    return BusinessCalendar(tz, NINE_TO_FIVE, (lambda d: d in public) if public is not None else None, name=tz)


BERLIN = office("Europe/Berlin", "DE", "BE")
NEW_YORK = office("America/New_York", "US", "NY")
TOKYO = office("Asia/Tokyo", "JP")
AUCKLAND = office("Pacific/Auckland", "NZ")
# Odd shapes on purpose: windows at the DST switch hours, a Sunday, a split day, to midnight.
NIGHT_SHIFT = BusinessCalendar(
    "Europe/Berlin",
    [[(0, 180), (600, 1440)], [(120, 240)], [], [(60, 61)], [(1380, 1440)], [], [(0, 1440)]],
    lambda d: d.day == 13,
    name="night shift",
)
ALWAYS_NY = BusinessCalendar("America/New_York", [[(0, 1440)]] * 7, name="always NY")

CALENDARS = [BERLIN, NEW_YORK, TOKYO, AUCKLAND, NIGHT_SHIFT, ALWAYS_NY]

ZONES = [ZoneInfo(z) for z in ("UTC", "Europe/Berlin", "America/New_York", "Pacific/Auckland")]


def real(at: datetime) -> datetime:
    """Python compares and subtracts datetimes of one zone by their wall clocks (folds and
    gaps included): order and measure instants in UTC."""
    return at.astimezone(UTC)


instants = st.builds(
    lambda naive, zone: naive.replace(tzinfo=zone),
    st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2027, 12, 31)),
    st.sampled_from(ZONES),
)
durations = st.one_of(
    st.just(timedelta(0)),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=120)),
    st.integers(0, 60 * 90).map(lambda m: timedelta(minutes=m)),
)
calendars = st.sampled_from(CALENDARS)


def random_week() -> st.SearchStrategy[list[list[tuple[int, int]]]]:
    def windows(points: list[int]) -> list[tuple[int, int]]:
        cuts = sorted(set(points))
        return [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if a < b]

    day = st.lists(st.integers(0, 1440), max_size=6).map(windows)
    return st.lists(day, min_size=7, max_size=7).filter(lambda w: any(w))


random_calendars = st.builds(
    lambda week, tz, closed: BusinessCalendar(tz, week, lambda d: d.day in closed),
    random_week(),
    st.sampled_from(["Europe/Berlin", "America/New_York", "Pacific/Auckland", "Asia/Tokyo",
                     "Australia/Lord_Howe", "America/Santiago"]),
    st.frozensets(st.integers(1, 28), max_size=4),
)
any_calendar = st.one_of(calendars, random_calendars)

# No example database: a run leaves nothing behind in the working tree.
FAST = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def inside_working_time(calendar: BusinessCalendar, due: datetime) -> bool:
    """Due lands in (start, end] of some working interval."""
    day = calendar.local_date(due)
    for d in (day - timedelta(days=1), day):
        if any(s < due <= e for s, e in calendar.intervals(d)):
            return True
    return False


# --- properties ------------------------------------------------------------------------


@FAST
@given(any_calendar, instants, durations, durations)
def test_add_is_additive(calendar: BusinessCalendar, t: datetime, a: timedelta, b: timedelta) -> None:
    step = add_business_time(add_business_time(t, a, calendar), b, calendar)
    assert step == add_business_time(t, a + b, calendar)


@FAST
@given(any_calendar, instants, st.lists(durations, max_size=5))
def test_adding_several_at_once_is_adding_each(
    calendar: BusinessCalendar, t: datetime, several: list[timedelta]
) -> None:
    assert add_business_times(t, several, calendar) == [
        add_business_time(t, d, calendar) for d in several
    ]


@FAST
@given(any_calendar, instants, durations)
def test_between_inverts_add(calendar: BusinessCalendar, t: datetime, d: timedelta) -> None:
    assert business_time_between(t, add_business_time(t, d, calendar), calendar) == d


@FAST
@given(any_calendar, instants, instants, durations, durations)
def test_add_is_monotonic(
    calendar: BusinessCalendar, t1: datetime, t2: datetime, d1: timedelta, d2: timedelta
) -> None:
    t1, t2 = sorted((t1, t2), key=real)
    d1, d2 = sorted((d1, d2))
    assert add_business_time(t1, d1, calendar) <= add_business_time(t2, d1, calendar)
    assert add_business_time(t1, d1, calendar) <= add_business_time(t1, d2, calendar)
    assert add_business_time(t1, d1, calendar) >= t1


@FAST
@given(any_calendar, instants, durations)
def test_due_never_lands_in_non_working_time(
    calendar: BusinessCalendar, t: datetime, d: timedelta
) -> None:
    due = add_business_time(t, d, calendar)
    if d == timedelta(0):
        assert due == t
    else:
        assert inside_working_time(calendar, due)


@FAST
@given(any_calendar, instants, instants, instants)
def test_between_is_additive_and_antisymmetric(
    calendar: BusinessCalendar, a: datetime, b: datetime, c: datetime
) -> None:
    ab = business_time_between(a, b, calendar)
    assert ab == -business_time_between(b, a, calendar)
    assert ab + business_time_between(b, c, calendar) == business_time_between(a, c, calendar)
    if real(a) <= real(b):
        assert timedelta(0) <= ab <= real(b) - real(a)


pauses = st.lists(
    st.tuples(st.integers(-48 * 60, 400 * 60), st.integers(1, 80 * 60), st.booleans()),
    max_size=4,
)


def as_pauses(t: datetime, raw: list[tuple[int, int, bool]]) -> list[tuple[datetime, datetime | None]]:
    return [
        (t + timedelta(minutes=start), None if still else t + timedelta(minutes=start + length))
        for start, length, still in raw
    ]


@FAST
@given(any_calendar, instants, durations, pauses)
def test_pauses_push_due_later_by_exactly_the_paused_business_time(
    calendar: BusinessCalendar, t: datetime, d: timedelta, raw: list[tuple[int, int, bool]]
) -> None:
    periods = as_pauses(t, raw)
    plain = add_business_time(t, d, calendar)
    due = due_with_pauses(t, d, calendar, periods)
    merged = merge_pauses(periods, t)
    if due is None:  # stopped: an open pause began before the clock ran out
        open_start = next(p0 for p0, p1 in merged if p1 is None)
        assert business_time_elapsed(t, open_start, calendar, periods) < d
        return
    assert due >= plain
    paused = sum(
        (business_time_between(p0, min(p1, due) if p1 else due, calendar)
         for p0, p1 in merged if p0 < due),
        timedelta(0),
    )
    assert business_time_between(plain, due, calendar) == paused
    # and the clock that ran up to the due time is exactly the duration
    assert business_time_elapsed(t, due, calendar, periods) == d


@FAST
@given(any_calendar, instants, instants, pauses)
def test_elapsed_never_exceeds_plain_business_time(
    calendar: BusinessCalendar, t: datetime, now: datetime, raw: list[tuple[int, int, bool]]
) -> None:
    elapsed = business_time_elapsed(t, now, calendar, as_pauses(t, raw))
    assert timedelta(0) <= elapsed <= max(business_time_between(t, now, calendar), timedelta(0))


@FAST
@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
       st.sampled_from(["Europe/Berlin", "America/New_York", "Pacific/Auckland",
                        "Australia/Lord_Howe", "America/Santiago", "Asia/Tokyo"]))
def test_local_to_utc_never_runs_backwards(naive: datetime, zone: str) -> None:
    tz = ZoneInfo(zone)
    here = local_to_utc(naive, tz)
    later = local_to_utc(naive + timedelta(minutes=30), tz)
    assert here <= later
    wall = here.astimezone(tz).replace(tzinfo=None)
    assert wall >= naive  # equal, or the first moment after a skipped time


# --- fixed examples --------------------------------------------------------------------


def at(text: str, zone: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


EXAMPLES = [
    # (case, calendar, start, duration, due)
    (
        "Berlin: Friday before spring forward to Monday (CET to CEST)",
        BERLIN, at("2025-03-28 16:00", "Europe/Berlin"), 2 * H, at("2025-03-31 10:00", "Europe/Berlin"),
    ),
    (
        "Berlin: Friday before fall back to Monday (CEST to CET)",
        BERLIN, at("2025-10-24 16:30", "Europe/Berlin"), 1 * H, at("2025-10-27 09:30", "Europe/Berlin"),
    ),
    (
        "Berlin: Women's Day is a holiday in Berlin (a Friday in 2024)",
        BERLIN, at("2024-03-07 16:00", "Europe/Berlin"), 2 * H, at("2024-03-11 10:00", "Europe/Berlin"),
    ),
    (
        "Bavaria works on Women's Day",
        office("Europe/Berlin", "DE", "BY"), at("2024-03-07 16:00", "Europe/Berlin"), 2 * H,
        at("2024-03-08 10:00", "Europe/Berlin"),
    ),
    (
        "New York: across spring forward, start given in UTC",
        NEW_YORK, datetime(2025, 3, 7, 21, 0, tzinfo=UTC), 2 * H, at("2025-03-10 10:00", "America/New_York"),
    ),
    (
        "New York: Thanksgiving and a fall-back weekend earlier",
        NEW_YORK, at("2025-11-26 16:00", "America/New_York"), 2 * H, at("2025-11-28 10:00", "America/New_York"),
    ),
    (
        "Tokyo: Golden Week closes Monday and the substitute Tuesday",
        TOKYO, at("2025-05-02 16:00", "Asia/Tokyo"), 2 * H, at("2025-05-07 10:00", "Asia/Tokyo"),
    ),
    (
        "Tokyo: start on a UTC Sunday evening is Monday morning there",
        TOKYO, datetime(2025, 6, 1, 23, 30, tzinfo=UTC), 1 * H, datetime(2025, 6, 2, 1, 0, tzinfo=UTC),
    ),
    (
        "Auckland: across the end of daylight saving (NZDT to NZST)",
        AUCKLAND, at("2025-04-04 16:00", "Pacific/Auckland"), 2 * H, datetime(2025, 4, 6, 22, 0, tzinfo=UTC),
    ),
    (
        "Auckland: a UTC Sunday is already Monday, and Queen's/King's Birthday closes it",
        AUCKLAND, datetime(2025, 6, 1, 22, 0, tzinfo=UTC), 1 * H, at("2025-06-03 10:00", "Pacific/Auckland"),
    ),
    (
        "work ending exactly at closing time is due at closing time",
        BERLIN, at("2025-01-06 09:00", "Europe/Berlin"), 8 * H, at("2025-01-06 17:00", "Europe/Berlin"),
    ),
    (
        "zero duration is due at once, even on a Sunday night",
        BERLIN, at("2025-01-05 23:00", "Europe/Berlin"), timedelta(0), at("2025-01-05 23:00", "Europe/Berlin"),
    ),
]


@pytest.mark.parametrize(
    ("calendar", "start", "duration", "due"),
    [pytest.param(c, s, d, due, id=case) for case, c, s, d, due in EXAMPLES],
)
def test_fixed_examples(
    calendar: BusinessCalendar, start: datetime, duration: timedelta, due: datetime
) -> None:
    assert add_business_time(start, duration, calendar) == due
    assert business_time_between(start, due, calendar) == duration


def test_a_day_the_clocks_skip_an_hour_has_23_hours() -> None:
    always_berlin = BusinessCalendar("Europe/Berlin", [[(0, 1440)]] * 7)
    for calendar, day in ((always_berlin, datetime(2025, 3, 30)), (ALWAYS_NY, datetime(2025, 3, 9))):
        start = local_to_utc(day, calendar.tz)
        end = local_to_utc(day + timedelta(days=1), calendar.tz)
        assert business_time_between(start, end, calendar) == 23 * H


def test_a_day_the_clocks_repeat_an_hour_has_25_hours() -> None:
    day = datetime(2025, 11, 2)
    start = local_to_utc(day, ALWAYS_NY.tz)
    end = local_to_utc(day + timedelta(days=1), ALWAYS_NY.tz)
    assert business_time_between(start, end, ALWAYS_NY) == 25 * H


def test_a_window_inside_the_skipped_hour_keeps_only_real_time() -> None:
    # Sunday 02:00-04:00 on the night Berlin skips 02:00-03:00: one real hour, from 03:00.
    calendar = BusinessCalendar("Europe/Berlin", [[]] * 6 + [[(120, 240)]])
    [(start, end)] = calendar.intervals(date(2025, 3, 30))
    assert (start, end) == (at("2025-03-30 03:00", "Europe/Berlin"), at("2025-03-30 04:00", "Europe/Berlin"))
    # and on the night it repeats 02:00-03:00, the window holds three real hours
    [(start, end)] = calendar.intervals(date(2025, 10, 26))
    assert end - start == 3 * H


def test_holidays_and_weekends_have_no_intervals() -> None:
    assert BERLIN.intervals(date(2025, 12, 25)) == ()
    assert BERLIN.intervals(date(2025, 1, 4)) == ()  # a Saturday
    assert len(BERLIN.intervals(date(2025, 1, 6))) == 1


def test_is_working_at_the_edges() -> None:
    assert is_working(BERLIN, at("2025-01-06 09:00", "Europe/Berlin"))
    assert not is_working(BERLIN, at("2025-01-06 17:00", "Europe/Berlin"))
    assert not is_working(BERLIN, at("2025-01-06 08:59:59", "Europe/Berlin"))
    assert is_working(TOKYO, datetime(2025, 1, 6, 0, 0, tzinfo=UTC))  # 09:00 in Tokyo


def test_pause_examples() -> None:
    start = at("2025-01-06 09:00", "Europe/Berlin")  # a Monday
    waiting = [(at("2025-01-06 11:00", "Europe/Berlin"), at("2025-01-07 10:00", "Europe/Berlin"))]
    # 4 h target: 2 h run on Monday, the clock stops for the wait, 2 more h on Tuesday.
    assert due_with_pauses(start, 4 * H, BERLIN, waiting) == at("2025-01-07 12:00", "Europe/Berlin")
    assert business_time_elapsed(start, at("2025-01-07 12:00", "Europe/Berlin"), BERLIN, waiting) == 4 * H
    # still waiting: the clock is stopped, no due time
    assert due_with_pauses(start, 4 * H, BERLIN, [(waiting[0][0], None)]) is None
    # a wait that starts after the due time changes nothing
    late = [(at("2025-01-06 14:00", "Europe/Berlin"), None)]
    assert due_with_pauses(start, 4 * H, BERLIN, late) == at("2025-01-06 13:00", "Europe/Berlin")
    # waiting over a weekend pauses nothing that was not working time anyway
    weekend = [(at("2025-01-10 17:00", "Europe/Berlin"), at("2025-01-13 09:00", "Europe/Berlin"))]
    friday = at("2025-01-10 16:00", "Europe/Berlin")
    assert due_with_pauses(friday, 2 * H, BERLIN, weekend) == add_business_time(friday, 2 * H, BERLIN)


def test_overlapping_pauses_count_once() -> None:
    start = at("2025-01-06 09:00", "Europe/Berlin")
    a, b, c = (at(f"2025-01-06 {h}:00", "Europe/Berlin") for h in (10, 11, 12))
    merged = merge_pauses([(b, c), (a, c), (a, b)], start)
    assert merged == [(a.astimezone(UTC), c.astimezone(UTC))]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_business_time(datetime(2025, 1, 1), H, BERLIN)
    with pytest.raises(ValueError, match="negative"):
        add_business_time(datetime(2025, 1, 1, tzinfo=UTC), -H, BERLIN)
    with pytest.raises(ValueError, match="no working time"):
        add_business_time(datetime(2025, 1, 1, tzinfo=UTC), H, BusinessCalendar("UTC", NINE_TO_FIVE, lambda d: True))
    with pytest.raises(ValueError, match="within a day"):
        BusinessCalendar("UTC", [[(600, 500)]] * 7)
    assert parse_window("09:00-17:30") == (540, 1050)
    assert parse_window("22:00-24:00") == (1320, 1440)
    for bad in ("9-17", "17:00-09:00", "09:00-24:01", "09:60-10:00", "nine to five"):
        with pytest.raises(ValueError):
            parse_window(bad)
