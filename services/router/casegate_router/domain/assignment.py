"""Choosing the agent within a team who gets a case, or leaving it in the team's queue.

Every strategy only considers agents who can take the case now:
- on shift: inside working hours of the agent's region;
- under their cap: an agent with a cap for the case's channel and that many open cases on
  it takes no more (a cap is a promise to the agent, whatever the strategy).

Then:
- round_robin: the next such agent after the one who got the last case (the cursor; the
  caller stores it and passes it back, so this stays a pure function);
- least_open: the one with the fewest open cases (all channels), then fewest on this channel;
- skills: among those with every skill the case needs, the one with the fewest open cases;
- capacity: among those with a cap for the channel, the one using the smallest share of it.
Ties go to whoever is listed first in the roster. Each answer carries a human reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from casegate_shared.events import Channel

from .business_time import is_working
from .case_conditions import Calendars
from .conditions import listing


class Strategy(StrEnum):
    ROUND_ROBIN = "round_robin"
    LEAST_OPEN = "least_open"
    SKILLS = "skills"
    CAPACITY = "capacity"


@dataclass(frozen=True)
class Agent:
    handle: str
    region: str
    skills: frozenset[str] = frozenset()
    caps: Mapping[Channel, int] = field(default_factory=dict)  # most open cases per channel
    open: Mapping[Channel, int] = field(default_factory=dict)  # open cases now, per channel

    @property
    def total_open(self) -> int:
        return sum(self.open.values())

    def open_on(self, channel: Channel) -> int:
        return self.open.get(channel, 0)


@dataclass(frozen=True)
class CaseToAssign:
    channel: Channel
    at: datetime
    skills: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Assignment:
    agent: str | None  # None: the case waits in the team's queue
    reason: str
    cursor: str | None = None  # round robin: whom the next case starts after

    @property
    def queued(self) -> bool:
        return self.agent is None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


NOBODY_ON_SHIFT = "no agent of the team is on shift"


def available(
    roster: Sequence[Agent], case: CaseToAssign, calendars: Calendars
) -> tuple[list[Agent], str | None]:
    """Agents on shift and under their cap, or none and why."""
    on_shift = [a for a in roster if is_working(calendars.for_region(a.region)[1], case.at)]
    if not on_shift:
        return [], NOBODY_ON_SHIFT if roster else "the team has no agents"
    channel = case.channel
    free = [a for a in on_shift if channel not in a.caps or a.open_on(channel) < a.caps[channel]]
    if not free:
        return [], f"every agent on shift is at their cap for {case.channel}"
    return free, None


def assign(
    strategy: Strategy,
    roster: Sequence[Agent],
    case: CaseToAssign,
    calendars: Calendars,
    cursor: str | None = None,
) -> Assignment:
    """The agent for `case` by `strategy`, or the queue, with the reason; see the module doc."""
    agents, why_not = available(roster, case, calendars)
    if not agents:
        return Assignment(None, f"queued: {why_not}", cursor)
    order = {a.handle: i for i, a in enumerate(roster)}
    pool = _plural(len(agents), "agent")
    if strategy is Strategy.ROUND_ROBIN:
        start = order[cursor] + 1 if cursor in order else 0
        ranked = sorted(agents, key=lambda a: (order[a.handle] - start) % len(roster))
        chosen = ranked[0]
        after = f" after {cursor}" if cursor in order else ""
        return Assignment(
            chosen.handle, f"{chosen.handle} is next in turn{after} (round robin, {pool} free)",
            chosen.handle,
        )
    if strategy is Strategy.LEAST_OPEN:
        chosen = min(agents, key=lambda a: (a.total_open, a.open_on(case.channel), order[a.handle]))
        return Assignment(
            chosen.handle,
            f"{chosen.handle} has the fewest open cases ({chosen.total_open}) of {pool} free",
            cursor,
        )
    if strategy is Strategy.SKILLS:
        needed = case.skills
        skilled = [a for a in agents if needed <= a.skills]
        if not skilled:
            return Assignment(
                None, f"queued: no free agent has every skill of {listing(sorted(needed))}", cursor
            )
        chosen = min(skilled, key=lambda a: (a.total_open, order[a.handle]))
        has = f"has {listing(sorted(needed))} and " if needed else ""
        return Assignment(
            chosen.handle,
            f"{chosen.handle} {has}has the fewest open cases ({chosen.total_open}) "
            f"of {_plural(len(skilled), 'suitable agent')}",
            cursor,
        )
    capped = [a for a in agents if case.channel in a.caps and a.caps[case.channel] > 0]
    if not capped:
        return Assignment(None, f"queued: no free agent has a cap for {case.channel}", cursor)

    def share(a: Agent) -> tuple[float, int, int]:
        cap = a.caps[case.channel]
        return (a.open_on(case.channel) / cap, -(cap - a.open_on(case.channel)), order[a.handle])

    chosen = min(capped, key=share)
    used, cap = chosen.open_on(case.channel), chosen.caps[case.channel]
    return Assignment(
        chosen.handle,
        f"{chosen.handle} uses the least of their {case.channel} cap ({used} of {cap}) "
        f"of {_plural(len(capped), 'agent')} with one",
        cursor,
    )
