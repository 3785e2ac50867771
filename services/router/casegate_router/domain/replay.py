"""Replaying stored cases against a changed rules file: which would have gone elsewhere.

Nothing here changes a case. Each stored case is rebuilt as the message the router saw, decided
again by the new rules, and compared with what was decided at the time (the case's first
routing entry) or, with a baseline rules file, with what that file decides. Differences in
team, priority and SLA policy are reported; an SLA policy that was never recorded is not
compared (it would show every case as changed).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from casegate_shared.events import Priority

from .conditions import Message
from .rules import RuleSet, decide

FIELDS = ("team", "priority", "sla_policy")

_SINCE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> timedelta:
    """'30d', '12h', '2w', '90m' -> timedelta."""
    found = _SINCE.match(text)
    if found is None:
        raise ValueError(f"expected a period such as 30d, 12h, 2w or 90m, got {text!r}")
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


@dataclass(frozen=True, slots=True)
class Routed:
    """A routing outcome as recorded or as decided: what the comparison looks at."""

    team: str | None
    priority: Priority | None
    sla_policy: str | None
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class StoredCase:
    ref: str
    created_at: datetime
    message: Message  # the message as the router saw it
    routed: Routed  # what was decided at the time


@dataclass(frozen=True, slots=True)
class Change:
    ref: str
    created_at: datetime
    field: str  # one of FIELDS
    old: str | None
    new: str | None
    rule: str  # the new rules' deciding rule


@dataclass
class Summary:
    rules_version: str
    examined: int = 0
    changed_cases: int = 0
    by_field: Counter[str] = field(default_factory=Counter)
    moves: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # field, old, new
    unknown_sla_policy: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "rules_version": self.rules_version,
            "examined": self.examined,
            "changed_cases": self.changed_cases,
            "changed": {name: self.by_field.get(name, 0) for name in FIELDS},
            "moves": [
                {"field": f, "from": old, "to": new, "cases": n}
                for (f, old, new), n in sorted(self.moves.items(), key=lambda i: (-i[1], i[0]))
            ],
            "sla_policy_not_recorded": self.unknown_sla_policy,
        }


def decided(rules: RuleSet, message: Message) -> Routed:
    decision = decide(rules, message)
    return Routed(decision.team, decision.priority, decision.sla_policy, decision.rule)


def compare(case: StoredCase, old: Routed, new: Routed) -> list[Change]:
    """The fields in which `new` differs from `old` (an unrecorded SLA policy is skipped)."""
    changes: list[Change] = []
    for name in FIELDS:
        before, after = getattr(old, name), getattr(new, name)
        if name == "sla_policy" and before is None:
            continue
        if before != after:
            changes.append(
                Change(case.ref, case.created_at, name, _text(before), _text(after), new.rule or "")
            )
    return changes


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def replay(
    cases: Iterable[StoredCase], rules: RuleSet, baseline: RuleSet | None = None
) -> tuple[list[Change], Summary]:
    """Every difference, and a summary, of deciding `cases` by `rules` instead of what was
    decided then (or what `baseline` decides)."""
    summary = Summary(rules.version)
    changes: list[Change] = []
    for case in cases:
        summary.examined += 1
        old = decided(baseline, case.message) if baseline is not None else case.routed
        if old.sla_policy is None:
            summary.unknown_sla_policy += 1
        found = compare(case, old, decided(rules, case.message))
        if found:
            summary.changed_cases += 1
        for change in found:
            summary.by_field[change.field] += 1
            summary.moves[(change.field, change.old or "-", change.new or "-")] += 1
        changes.extend(found)
    return changes, summary


def table(changes: list[Change]) -> str:
    """A plain text table, one line per changed field."""
    header = ("case", "opened", "field", "was", "would be", "by rule")
    rows = [
        (c.ref, f"{c.created_at:%Y-%m-%d %H:%M}", c.field, c.old or "-", c.new or "-", c.rule)
        for c in changes
    ]
    everything = [header, *rows]
    widths = [max(len(r[i]) for r in everything) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in everything]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
