"""The router's policy files read as one consistent set: SLA file first (regions, calendars,
policy names), then the rules and the teams checked against it.

A `Policies` value is what the router swaps on a reload: one reference, replaced whole, so a
message is decided by one set of files from start to end.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .case_conditions import Calendars
from .loader import parse_rules, parse_sla, parse_teams, read_text, version_of
from .rules import RuleSet
from .sla import SlaConfig
from .teams import TeamsConfig


@dataclass(frozen=True, slots=True)
class FileVersion:
    path: str
    sha: str  # version_of(text): 12 hex digits of sha256
    mtime: float  # seconds since the epoch, as the file system reported it when read


@dataclass(frozen=True, slots=True)
class PolicyFiles:
    rules: Path
    sla: Path
    teams: Path

    def all(self) -> tuple[Path, Path, Path]:
        return self.rules, self.sla, self.teams


@dataclass(frozen=True, slots=True)
class Policies:
    rules: RuleSet
    sla: SlaConfig
    teams: TeamsConfig
    calendars: Calendars
    files: tuple[FileVersion, FileVersion, FileVersion]  # rules, SLA, teams

    @property
    def version(self) -> str:
        """The rules file's version: what every decision names."""
        return self.rules.version

    @property
    def shas(self) -> tuple[str, ...]:
        return tuple(f.sha for f in self.files)


PoliciesProvider = Callable[[], Policies]
"""Gives the policies in force now; called once per message, so a reload never splits one."""


def calendars_of(sla: SlaConfig) -> Calendars:
    return Calendars({name: r.calendar for name, r in sla.regions.items()}, sla.default_region)


def rules_context(sla: SlaConfig) -> dict[str, Any]:
    """What the rules need from the SLA file (see rules.RuleSet)."""
    return {
        "calendars": calendars_of(sla),
        "regions": frozenset(sla.regions),
        "sla_policies": frozenset(sla.policies),
        "default_sla_policy": sla.default_policy,
    }


def _read(path: Path, kind: str) -> tuple[str, FileVersion]:
    # stat before reading: if the file changes in between, the next change event reloads it.
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        mtime = 0.0  # read_text reports the problem with the file's name
    text = read_text(path, kind)
    return text, FileVersion(str(path), version_of(text), mtime)


def current_shas(files: PolicyFiles) -> tuple[str, ...] | None:
    """The versions of the files as they are now, or None if one cannot be read."""
    try:
        return tuple(version_of(Path(p).read_text(encoding="utf-8")) for p in files.all())
    except (OSError, UnicodeDecodeError):
        return None


def load_policies(files: PolicyFiles) -> Policies:
    """Read and validate all three files; raises RulesError naming the file, line and field."""
    sla_text, sla_version = _read(files.sla, "SLA")
    sla = parse_sla(sla_text, source=str(files.sla))
    rules_text, rules_version = _read(files.rules, "rules")
    context = rules_context(sla)
    rules = parse_rules(rules_text, source=str(files.rules), context=context)
    teams_text, teams_version = _read(files.teams, "teams")
    teams = parse_teams(teams_text, source=str(files.teams), context={"regions": sla.regions})
    return Policies(
        rules, sla, teams, context["calendars"], (rules_version, sla_version, teams_version)
    )
