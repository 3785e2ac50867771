"""Business time: adding and measuring working time in a region's calendar, with pauses.

A calendar is a time zone, working hours per weekday (local wall-clock intervals within one
day) and holidays. Each local working interval of a date is converted to a UTC interval once
(cached per date); every sum and difference after that is plain arithmetic on UTC instants, so
daylight saving changes, zones either side of UTC and holidays need no case of their own.

Local wall-clock times are mapped to instants one way everywhere (and that mapping never runs
backwards, which keeps every function here monotonic):
- a time that occurs twice (clocks go back) means its first occurrence;
- a time that does not exist (clocks go forward) means the instant the clocks jump, so a
  window 02:00-04:00 on the night the clocks skip 02:00-03:00 holds one real hour.

Working intervals are half-open, [start, end). A due time lands in (start, end]: work that
ends exactly when the office closes is due at closing time, not the next morning.
All functions take and return timezone-aware datetimes; results are in UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

ZERO = timedelta(0)
MINUTES_PER_DAY = 24 * 60
# A calendar that has no working time for this long is a mistake, not a long weekend.
SEARCH_DAYS = 3 * 366

Window = tuple[int, int]  # minutes after local midnight, start < end <= 1440
Interval = tuple[datetime, datetime]  # UTC, start < end
Pause = tuple[datetime, datetime | None]  # a pending period; None: still pending


class BusinessCalendar:
    """Working windows per weekday (Monday first) in one time zone, minus holidays.

    Immutable in what it answers; it keeps a cache of the UTC intervals of each date it has
    been asked about, which is what makes sweeping many cases cheap.
    """

    __slots__ = ("name", "tz", "week", "_is_holiday", "_days")

    def __init__(
        self,
        tz: str | ZoneInfo,
        week: Sequence[Sequence[Window]],
        is_holiday: Callable[[date], bool] | None = None,
        name: str = "",
    ) -> None:
        if len(week) != 7:
            raise ValueError("working windows are needed for each of the 7 weekdays")
        for windows in week:
            previous_end = 0
            for start, end in windows:
                if not 0 <= start < end <= MINUTES_PER_DAY or start < previous_end:
                    raise ValueError(f"windows must be ordered and within a day: {windows}")
                previous_end = end
        self.name = name
        self.tz = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        self.week: tuple[tuple[Window, ...], ...] = tuple(tuple(w) for w in week)
        self._is_holiday = is_holiday or (lambda _day: False)
        self._days: dict[date, tuple[Interval, ...]] = {}

    @classmethod
    def always(cls, tz: str = "UTC") -> BusinessCalendar:
        """Every minute counts (a round-the-clock target)."""
        return cls(tz, [[(0, MINUTES_PER_DAY)]] * 7, name="always")

    def __repr__(self) -> str:
        return f"BusinessCalendar({self.name or self.tz.key!r})"

    def is_holiday(self, day: date) -> bool:
        return self._is_holiday(day)

    def intervals(self, day: date) -> tuple[Interval, ...]:
        """The working intervals of a local date, in UTC, in order (none on a holiday)."""
        found = self._days.get(day)
        if found is None:
            found = self._compute(day)
            if len(self._days) > 20_000:  # decades of dates; start over rather than grow
                self._days.clear()
            self._days[day] = found
        return found

    def _compute(self, day: date) -> tuple[Interval, ...]:
        if self._is_holiday(day):
            return ()
        midnight = datetime.combine(day, time())
        out: list[Interval] = []
        for start, end in self.week[day.weekday()]:
            s = local_to_utc(midnight + timedelta(minutes=start), self.tz)
            e = local_to_utc(midnight + timedelta(minutes=end), self.tz)
            if out and s < out[-1][1]:
                s = out[-1][1]
            if s < e:
                out.append((s, e))
        return tuple(out)

    def local_date(self, at: datetime) -> date:
        return at.astimezone(self.tz).date()


def local_to_utc(naive: datetime, tz: ZoneInfo) -> datetime:
    """A local wall-clock time as a UTC instant: first occurrence when it happens twice, the
    moment the clocks jump when it does not happen at all."""
    naive = naive.replace(fold=0)  # this function decides which occurrence, not the caller
    utc = naive.replace(tzinfo=tz).astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) == naive:
        return utc
    # In a gap: find the first instant whose wall clock reads `naive` or later. Zone
    # transitions fall on whole seconds, so a search over seconds is exact.
    other = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = int(min(utc, other).timestamp()), int(max(utc, other).timestamp()) + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid + 1
    return datetime.fromtimestamp(lo, UTC)


def _aware(at: datetime, what: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return at.astimezone(UTC)


def _intervals_from(calendar: BusinessCalendar, start: datetime) -> Iterator[Interval]:
    """Working intervals that end after `start`, in order, for as long as asked."""
    day = calendar.local_date(start)
    idle_days = 0
    while True:
        found = False
        for s, e in calendar.intervals(day):
            found = True
            if e > start:
                yield s, e
        idle_days = 0 if found else idle_days + 1
        if idle_days > SEARCH_DAYS:
            raise ValueError(f"{calendar!r} has no working time for {SEARCH_DAYS} days")
        day += timedelta(days=1)


def is_working(calendar: BusinessCalendar, at: datetime) -> bool:
    """Whether `at` falls inside working hours."""
    at = _aware(at, "at")
    return any(s <= at < e for s, e in calendar.intervals(calendar.local_date(at)))


def add_business_time(start: datetime, duration: timedelta, calendar: BusinessCalendar) -> datetime:
    """The instant `duration` of working time after `start` (start itself when it is zero)."""
    start = _aware(start, "start")
    if duration < ZERO:
        raise ValueError("duration must not be negative")
    if duration == ZERO:
        return start
    remaining = duration
    for s, e in _intervals_from(calendar, start):
        s = max(s, start)
        room = e - s
        if remaining <= room:
            return s + remaining
        remaining -= room
    raise AssertionError("unreachable: _intervals_from never ends")  # pragma: no cover


def add_business_times(
    start: datetime, durations: Sequence[timedelta], calendar: BusinessCalendar
) -> list[datetime]:
    """`add_business_time` for several durations from one start, in one walk over the days
    (what a case's clocks need: the longest target costs the walk, the others ride along)."""
    start = _aware(start, "start")
    if any(d < ZERO for d in durations):
        raise ValueError("duration must not be negative")
    results: list[datetime] = [start] * len(durations)
    pending = sorted((d, i) for i, d in enumerate(durations) if d > ZERO)
    if not pending:
        return results
    done = ZERO  # working time walked so far
    position = 0
    for s, e in _intervals_from(calendar, start):
        s = max(s, start)
        room = e - s
        while pending[position][0] - done <= room:
            duration, index = pending[position]
            results[index] = s + (duration - done)
            position += 1
            if position == len(pending):
                return results
        done += room
    raise AssertionError("unreachable: _intervals_from never ends")  # pragma: no cover


def business_time_between(a: datetime, b: datetime, calendar: BusinessCalendar) -> timedelta:
    """Working time from `a` to `b`; negative when `b` is before `a`."""
    a, b = _aware(a, "a"), _aware(b, "b")
    if b < a:
        return -business_time_between(b, a, calendar)
    total = ZERO
    for s, e in _intervals_from(calendar, a):
        if s >= b:
            break
        total += min(e, b) - max(s, a)
    return total


def merge_pauses(pauses: Iterable[Pause], start: datetime) -> list[Pause]:
    """Pauses in order, overlapping ones joined, clipped to begin no earlier than `start`."""
    start = _aware(start, "start")
    merged: list[Pause] = []
    ordered = sorted(((_aware(p0, "pause start"), p1) for p0, p1 in pauses), key=lambda p: p[0])
    for p0, p1 in ordered:
        end = None if p1 is None else _aware(p1, "pause end")
        if end is not None and end <= start:
            continue
        p0 = max(p0, start)
        if end is not None and end <= p0:
            continue
        if merged:
            last_start, last_end = merged[-1]
            if last_end is None:
                break  # still pending: everything after it is inside that pause
            if p0 <= last_end:
                merged[-1] = (last_start, None if end is None else max(last_end, end))
                continue
        merged.append((p0, end))
    return merged


def business_time_elapsed(
    start: datetime, now: datetime, calendar: BusinessCalendar, pauses: Iterable[Pause] = ()
) -> timedelta:
    """Working time from `start` to `now` that the clock ran, i.e. outside every pause."""
    start, now = _aware(start, "start"), _aware(now, "now")
    if now <= start:
        return ZERO
    total = business_time_between(start, now, calendar)
    for p0, p1 in merge_pauses(pauses, start):
        if p0 >= now:
            break
        total -= business_time_between(p0, now if p1 is None else min(p1, now), calendar)
    return total


def due_with_pauses(
    start: datetime,
    duration: timedelta,
    calendar: BusinessCalendar,
    pauses: Iterable[Pause] = (),
) -> datetime | None:
    """When `duration` of working time has run, the clock stopped during every pause; None
    while a pause that began before the due time is still open (the clock is stopped)."""
    cursor = _aware(start, "start")
    remaining = duration
    for p0, p1 in merge_pauses(pauses, cursor):
        due = add_business_time(cursor, remaining, calendar)
        if p0 >= due:
            return due
        remaining -= business_time_between(cursor, p0, calendar)
        if p1 is None:
            return None
        cursor = p1
    return add_business_time(cursor, remaining, calendar)


def parse_window(text: str) -> Window:
    """'09:00-17:30' -> (540, 1050); '24:00' ends a window at midnight."""
    try:
        start_text, end_text = (part.strip() for part in text.split("-"))
        start, end = _minutes(start_text), _minutes(end_text)
    except ValueError:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}") from None
    if start >= end:
        raise ValueError(f"{text!r} ends before it starts (windows cannot cross midnight)")
    return start, end


def _minutes(text: str) -> int:
    hours, _, minutes = text.partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(text)
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > MINUTES_PER_DAY:
        raise ValueError(text)
    return value
