"""Escalation decisions: what a breached SLA clock does to a case, by the team's path.

A decision only states where the case goes; case-store applies it. A team without a path of
its own uses the default path; with no path at all the decision says so and changes nothing,
so the breach is still answered (and visible on the timeline).
"""

from __future__ import annotations

from casegate_shared.events import CaseChange, CaseUpdated, EscalationDecided, Priority

from .sla import CLOCKS, Escalation

_ORDER = list(Priority)  # P1 first


class NotABreach(ValueError):
    """The event is not an SLA breach the router can answer (wrong change, unknown clock)."""


def raised(priority: Priority, levels: int) -> Priority:
    """`levels` more urgent, never past P1."""
    return _ORDER[max(0, _ORDER.index(priority) - levels)]


def decide_escalation(breach: CaseUpdated, escalation: Escalation) -> EscalationDecided:
    if breach.change is not CaseChange.SLA_BREACHED:
        raise NotABreach(f"expected an sla_breached change, got {breach.change.value}")
    if breach.clock not in CLOCKS:
        raise NotABreach(f"the breach names no known clock ({breach.clock!r})")
    clock = breach.clock
    case = breach.case
    what = "first response" if clock == "first_response" else "resolution"
    owner, path = escalation.path_for(case.team)
    step = None if path is None else getattr(path, clock)
    team_text = f"team {case.team}" if case.team else "a case without a team"
    if step is None:
        return EscalationDecided(
            ref=breach.ref,
            clock=clock,
            reason=f"{what} target breached; no escalation path for {team_text}, nothing changes",
        )
    new_priority = raised(case.priority, step.raise_priority)
    changes: list[str] = []
    if step.team is not None and step.team != case.team:
        changes.append(f"to team {step.team}")
    if step.assignee is not None and step.assignee != case.assignee:
        changes.append(f"assigned to {step.assignee}")
    if new_priority != case.priority:
        changes.append(f"priority {case.priority.value} -> {new_priority.value}")
    path_name = "the default path" if owner == "default" else f"the path of team {owner}"
    done = ", ".join(changes) if changes else "already where the path leads, nothing changes"
    return EscalationDecided(
        ref=breach.ref,
        clock=clock,
        team=step.team if step.team != case.team else None,
        assignee=step.assignee if step.assignee != case.assignee else None,
        priority=new_priority if new_priority != case.priority else None,
        reason=f"{what} target breached for {team_text}; by {path_name}: {done}",
    )
