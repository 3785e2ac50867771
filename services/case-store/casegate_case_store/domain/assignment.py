"""The router's assignment decisions as case-store applies them: whether a decision still
applies to the case as it is now, and what the timeline says about it.

A decision is about one moment: the case waiting on a team with nobody on it. If that moment
has passed (someone took the case, it moved to another team, it was resolved, closed or
merged), the decision is dropped, so a late or repeated decision never takes a case from
anyone. Nor does one push an agent past their cap: two decisions made at once from the same
figures both want the last free place, and only the first gets it. What the router said
stays on the internal timeline, with its reason.
"""

from __future__ import annotations

from casegate_shared.events import AssignmentDecided

from .cases import CaseStatus
from .timeline import EntryKind, TimelineEntry, Visibility

DONE = frozenset({CaseStatus.RESOLVED, CaseStatus.CLOSED})  # a merged case is closed
ACTOR = "router"
BODY_MAX = 1000


def no_longer_applies(
    decision: AssignmentDecided, team: str | None, status: CaseStatus, has_assignee: bool
) -> str | None:
    """Why the decision no longer fits the case, or None when it does."""
    if has_assignee:
        return "the case has an assignee already"
    if team != decision.team:
        return f"the case is on {team or 'no team'} now, not {decision.team}"
    if status in DONE:
        return f"the case is {status.value}"
    return None


def over_cap(decision: AssignmentDecided, open_on_channel: int) -> bool:
    """The agent's cap on the case's channel is reached (another decision got there first)."""
    return decision.cap is not None and open_on_channel >= decision.cap


def _entry(decision: AssignmentDecided, body: str, **data: object) -> TimelineEntry:
    return TimelineEntry(
        EntryKind.ASSIGNMENT, ACTOR, Visibility.INTERNAL, body[:BODY_MAX],
        {"team": decision.team, "strategy": decision.strategy, "reason": decision.reason,
         **data},
    )


def assigned(decision: AssignmentDecided, before: str, after: str) -> TimelineEntry:
    return _entry(
        decision, f"Assigned: {before} -> {after} ({decision.strategy}: {decision.reason})",
        assignee=decision.assignee, previous=before, current=after,
    )


def waiting(decision: AssignmentDecided) -> TimelineEntry:
    return _entry(decision, f"Waits in {decision.team}'s queue: {decision.reason}")


def unknown_agent(decision: AssignmentDecided) -> TimelineEntry:
    """The router chose someone case-store has no active user for (left, renamed)."""
    return _entry(
        decision,
        f"Not assigned to {decision.assignee}: no active user has that handle; the case waits "
        f"in {decision.team}'s queue",
        assignee=decision.assignee,
    )


def at_cap(decision: AssignmentDecided, open_on_channel: int, channel: str) -> TimelineEntry:
    return _entry(
        decision,
        f"Not assigned to {decision.assignee}: at the cap of {decision.cap} open {channel} "
        f"cases; the case waits in {decision.team}'s queue",
        assignee=decision.assignee, open=open_on_channel, cap=decision.cap,
    )
