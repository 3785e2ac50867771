"""Quiet hours: whether a customer's local time is inside their quiet window, and until when.

Windows may run over midnight (22:00-07:00). Times are wall-clock times in the customer's time
zone, so a window keeps its local hours across daylight-saving changes; an end time that does
not exist on a given day (a spring-forward gap) resolves to the instant just after the gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True, slots=True)
class QuietHours:
    timezone: str
    start: time
    end: time


class QuietHoursProblem(ValueError):
    """A window or a time zone that cannot be understood; the caller says why nobody waits."""


def parse_quiet_hours(window: tuple[str, str] | None, timezone: str) -> QuietHours | None:
    """("22:00", "07:00") in "Europe/Berlin" -> QuietHours; None when there is no window."""
    if window is None:
        return None
    zone(timezone)  # fail now, with the zone's name, rather than when a message waits
    try:
        start, end = (time.fromisoformat(part.strip()) for part in window)
    except ValueError as exc:
        raise QuietHoursProblem(f"quiet hours {window!r} are not HH:MM times") from exc
    if start == end:
        return None  # an empty window, not a 24-hour one: nobody means "never tell me"
    return QuietHours(timezone, start.replace(tzinfo=None), end.replace(tzinfo=None))


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise QuietHoursProblem(f"unknown time zone {name!r}") from exc


def _inside(clock: time, q: QuietHours) -> bool:
    if q.start < q.end:
        return q.start <= clock < q.end
    return clock >= q.start or clock < q.end  # over midnight


def held_until(q: QuietHours | None, now: datetime) -> datetime | None:
    """When the window ends (UTC) if `now` is inside it, else None (send now)."""
    if q is None:
        return None
    tz = zone(q.timezone)
    local = now.astimezone(tz)
    if not _inside(local.time().replace(tzinfo=None), q):
        return None
    clock = local.time().replace(tzinfo=None)
    day = local.date() if clock < q.end else local.date() + timedelta(days=1)
    wall = datetime.combine(day, q.end)
    end = wall.replace(tzinfo=tz).astimezone(UTC)
    # A wall time inside a spring-forward gap maps to an instant that may round-trip
    # before `now`; it can never be earlier than the next full minute.
    return max(end, now.astimezone(UTC) + timedelta(seconds=1))
