"""A team's queue: which cases need an agent, and handing out queued cases in one go.

A case needs an agent while it has a team, nobody has it, and it is new or open (a case
waiting for the customer or on hold is picked up again once it is open). The router asks when
a change can leave a case so (routed, transferred, escalated to a team) and, because agents
come on shift, its sweep asks again for the cases still waiting.

Handing out several cases counts each assignment into the next, as case-store will count it
once the decisions are applied: the agent who just got a case has one more open case on its
channel, and is the team's most recently assigned agent, whom round robin continues after.
Members who are not active users in case-store are left out: a case given to them would
only wait. Decisions published but not yet applied by case-store (`Pending`) count as if
they were, so a burst of cases routed at once is spread rather than all given to whoever
was least busy a moment ago.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from casegate_shared.events import CaseChange, CaseSnapshot, Channel

from .assignment import CaseToAssign, Strategy, assign
from .business_time import is_working
from .case_conditions import Calendars
from .teams import Team

WAITING = frozenset({"new", "open"})
# Changes that can leave a case with a team and nobody on it: a transfer, an escalation.
MOVES = frozenset({CaseChange.ASSIGNED, CaseChange.ESCALATED})
# How the routing explanation notes a rule's strategy (see rules.recorded_explanation).
NOTE_RULE, NOTE_PREFIX = "@assignment", "assignment by "
_QUEUED_PREFIX = "queued: "


def needs_agent(case: CaseSnapshot) -> bool:
    return case.team is not None and case.assignee is None and case.status in WAITING


def needs_assignment(change: CaseChange, case: CaseSnapshot) -> bool:
    """After a `case.<change>`: did it leave the case waiting for an agent? (`case.routed`
    is not a change; after it, ask `needs_agent`.)"""
    return change in MOVES and needs_agent(case)


def noted_strategy(note: str | None) -> Strategy | None:
    """The strategy a routing rule chose, from its line in the recorded explanation."""
    if not note or not note.startswith(NOTE_PREFIX):
        return None
    try:
        return Strategy(note.removeprefix(NOTE_PREFIX))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class QueuedCase:
    ref: str
    channel: Channel
    tags: frozenset[str] = frozenset()
    strategy: Strategy | None = None  # the routing rule's, while on the team it routed to
    correlation_id: str | None = None  # the case's first message's, for the sweep's events


@dataclass(frozen=True, slots=True)
class TeamLoad:
    """What case-store says about a team's members right now."""

    open_cases: Mapping[str, Mapping[Channel, int]]  # per handle, unresolved cases by channel
    active: frozenset[str]  # the members case-store knows as active users
    last_assigned: str | None = None  # the team's most recently assigned agent


@dataclass(frozen=True, slots=True)
class Pending:
    """An assignment decided, not yet seen applied in case-store."""

    team: str
    agent: str
    channel: Channel


@dataclass(frozen=True, slots=True)
class Decided:
    case: QueuedCase
    strategy: Strategy
    agent: str | None  # None: the case waits in the queue
    reason: str
    cap: int | None = None  # the agent's cap on the case's channel, for case-store to keep

    @property
    def queued(self) -> bool:
        return self.agent is None


def with_pending(team: str, load: TeamLoad, pending: Sequence[Pending]) -> TeamLoad:
    """The load once `pending` (oldest first) is applied: each adds an open case to its agent
    whatever the team; the latest on `team` is its most recently assigned agent."""
    if not pending:
        return load
    counts = {handle: dict(per_channel) for handle, per_channel in load.open_cases.items()}
    last = load.last_assigned
    for p in pending:
        mine = counts.setdefault(p.agent, {})
        mine[p.channel] = mine.get(p.channel, 0) + 1
        if p.team == team:
            last = p.agent
    return TeamLoad(counts, load.active, last)


def skills_needed(tags: frozenset[str], team: Team) -> frozenset[str]:
    """A case needs the skills its tags name: tags that are a skill of some member (a rule's
    `tags: [refunds]`); other tags (vip, outage) ask nothing of the agent."""
    known = {skill for member in team.members for skill in member.skills}
    return frozenset(tags & known)


def turn_holder(last: str | None, order: Sequence[str], active: Iterable[str]) -> str | None:
    """The active member whose turn round robin continues after: `last` itself, or when `last`
    has left the roster (deactivated) the active member before them in the team's order, so
    the turn still passes to whoever follows `last`."""
    if last is None or last not in order:
        return last
    here = set(active)
    at = order.index(last)
    for step in range(len(order)):
        candidate = order[(at - step) % len(order)]
        if candidate in here:
            return candidate
    return None


def anyone_on_shift(team: Team, calendars: Calendars, at: datetime) -> bool:
    """Whether a member of the team works at `at`: if not, nobody can take a case, whatever
    their load, so there is no need to read it."""
    return any(is_working(calendars.for_region(m.region)[1], at) for m in team.members)


def hand_out(
    name: str,
    team: Team | None,
    cases: Sequence[QueuedCase],
    load: TeamLoad,
    calendars: Calendars,
    at: datetime,
) -> list[Decided]:
    """Decide each case in order (put the most urgent first), counting each assignment into
    the next; see the module doc. `team` None: the teams file has no team `name`."""
    if team is None:
        why = f"the teams file has no team {name!r}"
        return [Decided(c, Strategy.LEAST_OPEN, None, why) for c in cases]
    members = {m.handle: m for m in team.members if m.handle in load.active}
    if team.members and not members:
        why = "none of the team's agents is an active user"
        return [Decided(c, c.strategy or team.assignment, None, why) for c in cases]
    counts = {handle: dict(per_channel) for handle, per_channel in load.open_cases.items()}
    cursor = turn_holder(load.last_assigned, [m.handle for m in team.members], members.keys())
    decided: list[Decided] = []
    for case in cases:
        strategy = case.strategy or team.assignment
        wanted = CaseToAssign(case.channel, at, skills_needed(case.tags, team))
        roster = [m.agent(counts.get(m.handle, {})) for m in members.values()]
        answer = assign(strategy, roster, wanted, calendars, cursor)
        why = answer.reason.removeprefix(_QUEUED_PREFIX)
        if answer.agent is None:
            decided.append(Decided(case, strategy, None, why))
        else:
            cap = members[answer.agent].caps.get(case.channel)
            decided.append(Decided(case, strategy, answer.agent, why, cap))
            mine = counts.setdefault(answer.agent, {})
            mine[case.channel] = mine.get(case.channel, 0) + 1
            cursor = answer.agent
    return decided
