"""SLA policies (the SLA file): regions and their working time, response and resolution
targets by priority, escalation paths per team; and the pure clock arithmetic on them.

Each clock has two targets, both in business time of the case's region:
- `minimum`: the target the team works to (shown to agents, used to order work);
- `maximum`: the hard limit; passing it is a breach.
The warning fires when `warning_share` of the hard limit has run (0.8: at 80 %).

`due_times` and `warning_at` are what the SLA sweeper calls for each running clock; they take
the case's pending periods, during which the clocks stand still.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holiday_data
from pydantic import (
    BeforeValidator,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from casegate_shared.events import Priority

from .business_time import (
    BusinessCalendar,
    Pause,
    Window,
    add_business_time,
    add_business_times,
    business_time_between,
    due_with_pauses,
    parse_window,
)
from .models import Strict

Clock = Literal["first_response", "resolution"]
CLOCKS: tuple[Clock, ...] = ("first_response", "resolution")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]

_DURATION = re.compile(r"^\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?\s*$")


def parse_duration(value: object) -> object:
    """'4h', '30m', '1h30m' -> timedelta; business hours, so no days (a day is not 24 of them)."""
    if not isinstance(value, str):
        return value  # pydantic reports the type
    found = _DURATION.match(value)
    if found is None or not any(found.groups()):
        raise ValueError(f"expected a duration such as 4h, 30m or 1h30m, got {value!r}")
    hours, minutes = (int(g) if g else 0 for g in found.groups())
    return timedelta(hours=hours, minutes=minutes)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


def _window(value: object) -> object:
    return parse_window(value) if isinstance(value, str) else value


WindowText = Annotated[tuple[int, int], BeforeValidator(_window)]


class Holidays(Strict):
    """Public holidays from the `holidays` package, plus dates of our own."""

    country: str | None = Field(None, description="ISO 3166 code, e.g. DE, US, JP, NZ")
    subdivision: str | None = Field(None, description="State or province code, e.g. BE, NY")
    extra: list[date] = Field(default_factory=list, description="Company closing days")

    @model_validator(mode="after")
    def _known(self) -> Holidays:
        supported = holiday_data.list_supported_countries()
        if self.country is not None and self.country not in supported:
            raise ValueError(f"unknown holiday country {self.country!r}")
        if self.subdivision is not None:
            if self.country is None:
                raise ValueError("a subdivision needs a country")
            if self.subdivision not in supported[self.country]:
                known = ", ".join(supported[self.country][:12]) or "none"
                raise ValueError(
                    f"unknown subdivision {self.subdivision!r} of {self.country} (known: {known})"
                )
        return self


class Region(Strict):
    """Where a case is served from: a time zone, working hours and holidays."""

    timezone: str
    hours: dict[Weekday, list[WindowText]] = Field(
        description="Working windows per weekday, e.g. mon: ['09:00-17:00']; missing days: closed"
    )
    holidays: Holidays = Field(default_factory=Holidays)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use names like Europe/Berlin)"
            ) from None
        return value

    @field_validator("hours")
    @classmethod
    def _ordered(cls, value: dict[Weekday, list[Window]]) -> dict[Weekday, list[Window]]:
        for day, windows in value.items():
            for (_, end), (start, _) in zip(windows, windows[1:]):
                if start < end:
                    raise ValueError(f"{day.value}: windows overlap or are out of order")
        if not any(value.values()):
            raise ValueError("a region needs working hours on at least one day")
        return value

    @cached_property
    def calendar(self) -> BusinessCalendar:
        extra = frozenset(self.holidays.extra)
        country = self.holidays.country
        if country is None:
            def is_holiday(day: date) -> bool:
                return day in extra
        else:
            public = holiday_data.country_holidays(country, subdiv=self.holidays.subdivision)

            def is_holiday(day: date) -> bool:
                return day in extra or day in public

        week = [self.hours.get(day, []) for day in Weekday]
        return BusinessCalendar(self.timezone, week, is_holiday)


class Target(Strict):
    minimum: Duration = Field(description="What the team works to")
    maximum: Duration = Field(description="The hard limit: a breach after this")

    @model_validator(mode="after")
    def _ordered(self) -> Target:
        if self.minimum > self.maximum:
            raise ValueError("minimum is longer than maximum")
        if self.maximum <= timedelta(0):
            raise ValueError("maximum must be longer than zero")
        return self


class PriorityTargets(Strict):
    first_response: Target
    resolution: Target
    around_the_clock: bool = Field(
        False, description="Count every hour, not only working hours (e.g. P1 outages)"
    )

    def target(self, clock: Clock) -> Target:
        return self.first_response if clock == "first_response" else self.resolution


class SlaPolicy(Strict):
    warning_share: float = Field(0.8, gt=0, lt=1)
    targets: dict[Priority, PriorityTargets]

    @field_validator("targets")
    @classmethod
    def _every_priority(
        cls, value: dict[Priority, PriorityTargets]
    ) -> dict[Priority, PriorityTargets]:
        missing = [p.value for p in Priority if p not in value]
        if missing:
            raise ValueError(f"targets for {', '.join(missing)} are missing")
        return value


class EscalationStep(Strict):
    """What a breach does: hand the case on, name someone, make it more urgent."""

    team: Name | None = Field(None, description="Team that takes the case over")
    assignee: Name | None = Field(None, description="Supervisor or lead who gets the case")
    raise_priority: int = Field(0, ge=0, le=3, description="Levels more urgent (P3 -> P2: 1)")

    @model_validator(mode="after")
    def _does_something(self) -> EscalationStep:
        if self.team is None and self.assignee is None and self.raise_priority == 0:
            raise ValueError("names no team, assignee or raise_priority")
        return self


class EscalationPath(Strict):
    first_response: EscalationStep | None = None
    resolution: EscalationStep | None = None


class Escalation(Strict):
    default: EscalationPath | None = Field(None, description="For teams without their own path")
    teams: dict[Name, EscalationPath] = Field(default_factory=dict)

    def path_for(self, team: str | None) -> tuple[str, EscalationPath | None]:
        """The path that applies to `team`, and whose it is ('default' or the team)."""
        if team is not None and team in self.teams:
            return team, self.teams[team]
        return "default", self.default


class SlaConfig(Strict):
    regions: dict[Name, Region] = Field(min_length=1)
    default_region: Name
    policies: dict[Name, SlaPolicy] = Field(min_length=1)
    default_policy: Name
    escalation: Escalation = Field(default_factory=Escalation)

    @model_validator(mode="after")
    def _defaults_exist(self) -> SlaConfig:
        if self.default_region not in self.regions:
            raise ValueError(f"default_region {self.default_region!r} is not one of the regions")
        if self.default_policy not in self.policies:
            raise ValueError(f"default_policy {self.default_policy!r} is not one of the policies")
        return self

    def region(self, name: str | None) -> Region:
        """The named region, or the default one for a case without (or with an unknown) one."""
        return self.regions.get(name or "", self.regions[self.default_region])

    def policy(self, name: str | None) -> SlaPolicy:
        return self.policies.get(name or "", self.policies[self.default_policy])


@dataclass(frozen=True, slots=True)
class DueWindow:
    """One clock's due times; None while the clock is stopped by an open pending period."""

    minimum: datetime | None
    maximum: datetime | None


@dataclass(frozen=True, slots=True)
class DueTimes:
    first_response: DueWindow
    resolution: DueWindow

    def clock(self, clock: Clock) -> DueWindow:
        return self.first_response if clock == "first_response" else self.resolution


_ALWAYS = BusinessCalendar.always()


def calendar_for(policy: SlaPolicy, priority: Priority, region: Region) -> BusinessCalendar:
    return _ALWAYS if policy.targets[priority].around_the_clock else region.calendar


def due_times(
    policy: SlaPolicy,
    priority: Priority,
    region: Region,
    opened_at: datetime,
    pauses: tuple[Pause, ...] = (),
) -> DueTimes:
    """Both clocks' minimum and maximum due times for a case opened at `opened_at`."""
    targets = policy.targets[priority]
    calendar = calendar_for(policy, priority, region)
    first, resolution = targets.first_response, targets.resolution
    durations = [first.minimum, first.maximum, resolution.minimum, resolution.maximum]
    if pauses:
        due: list[datetime | None] = [
            due_with_pauses(opened_at, d, calendar, pauses) for d in durations
        ]
    else:  # the common case, and the sweeper's hot path: one walk for all four
        due = list(add_business_times(opened_at, durations, calendar))
    return DueTimes(DueWindow(due[0], due[1]), DueWindow(due[2], due[3]))


def warning_at(
    policy: SlaPolicy,
    priority: Priority,
    region: Region,
    opened_at: datetime,
    clock: Clock,
    pauses: tuple[Pause, ...] = (),
) -> datetime | None:
    """When `warning_share` of the clock's hard limit has run (None while it is stopped)."""
    target = policy.targets[priority].target(clock)
    share = target.maximum * policy.warning_share
    share -= timedelta(microseconds=share.microseconds)  # whole seconds read better
    return due_with_pauses(opened_at, share, calendar_for(policy, priority, region), pauses)


@dataclass(frozen=True, slots=True)
class Resumed:
    """A case's SLA times after a wait for the customer, and what the wait cost in work time."""

    times: dict[str, datetime | None]
    waited: timedelta
    waited_working: timedelta
    # What to add to each time case-store moved on by the wall time waited, to make it this.
    corrections: dict[str, timedelta]


def resume_clocks(
    calendar: BusinessCalendar,
    paused_at: datetime,
    resumed_at: datetime,
    times: dict[str, datetime | None],
) -> Resumed:
    """Each time as much working time after the resume as it was after the wait began, so
    the clocks lose no working time to the wait and gain none from nights and weekends in it.
    A time already passed when the wait began stays where it was (its event is due now)."""
    moved: dict[str, datetime | None] = {}
    for name, at in times.items():
        if at is None or at <= paused_at:
            moved[name] = at
        else:
            left = business_time_between(paused_at, at, calendar)
            moved[name] = add_business_time(max(resumed_at, paused_at), left, calendar)
    waited = max(resumed_at - paused_at, timedelta(0))
    working = business_time_between(paused_at, max(resumed_at, paused_at), calendar)
    corrections = {name: moved_at - (times[name] + waited)  # type: ignore[operator]
                   for name, moved_at in moved.items() if moved_at is not None}
    return Resumed(moved, waited, working, corrections)


def span(duration: timedelta) -> str:
    """'2 d 3 h 5 min' for people reading a timeline; whole minutes."""
    minutes = int(duration.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min")) if n]
    return " ".join(parts) or "0 min"
