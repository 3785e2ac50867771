"""The routing table and its interpreter: which team gets a case, at which priority, and why.

A rules file is an ordered list of rules and a default. Rules are tried top to bottom and each
try is recorded, hit or miss, with its reason: that record is the explanation.

- A matching rule ends the search, unless it says `stop: false`; then the rules below it still
  run and can add to the decision.
- team: the first matching rule that names one decides it.
- priority: the most urgent one any matching rule names (later rules escalate, never relax).
- tags: those of every matching rule, in order, without repeats.
- When no matching rule stopped the search, the default applies: it decides whatever is still
  open (team, priority) and adds its tags.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from casegate_shared.events import Channel, Priority, RuleVerdict

from .conditions import (
    Check,
    Message,
    all_of,
    always,
    any_of,
    channel_in,
    keywords_found,
    negation,
    subject_matches,
)

DEFAULT_RULE = "default"


def _valid_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Team = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Regex = Annotated[
    str, StringConstraints(min_length=1, max_length=1000), AfterValidator(_valid_regex)
]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class When(_Strict):
    """Conditions of one rule: every one listed must hold; they run in field order, cheap first."""

    channel: list[Channel] | None = Field(None, min_length=1)
    keywords: list[Keyword] | None = Field(None, min_length=1)
    subject_regex: Regex | None = None
    all: list[When] | None = Field(None, min_length=1)
    any: list[When] | None = Field(None, min_length=1)
    not_: When | None = Field(None, alias="not")

    def compile(self) -> Check:
        """Prepare every condition once; the result is what runs per message."""
        checks: list[Check] = []
        if self.channel is not None:
            checks.append(channel_in(self.channel))
        if self.keywords is not None:
            checks.append(keywords_found(self.keywords))
        if self.subject_regex is not None:
            checks.append(subject_matches(self.subject_regex))
        if self.all is not None:
            checks.append(all_of([w.compile() for w in self.all]))
        if self.any is not None:
            checks.append(any_of([w.compile() for w in self.any]))
        if self.not_ is not None:
            checks.append(negation(self.not_.compile()))
        if not checks:
            return always()
        return checks[0] if len(checks) == 1 else all_of(checks)


class Action(_Strict):
    """What a matching rule contributes; a rule that stops must name a team and a priority."""

    team: Team | None = None
    priority: Priority | None = None
    tags: list[Tag] = Field(default_factory=list)


class DefaultAction(_Strict):
    team: Team
    priority: Priority
    tags: list[Tag] = Field(default_factory=list)


class Rule(_Strict):
    name: Name
    when: When = Field(default_factory=When)
    then: Action
    stop: bool = True

    @field_validator("when", mode="before")
    @classmethod
    def _empty_when(cls, value: object) -> object:
        return {} if value is None else value  # a bare `when:` means "always"

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == DEFAULT_RULE:
            raise ValueError(f"'{DEFAULT_RULE}' is reserved for the default action")
        return value

    @model_validator(mode="after")
    def _decides_something(self) -> Rule:
        action = self.then
        if self.stop and (action.team is None or action.priority is None):
            raise ValueError(
                "a rule that stops must name a team and a priority (or set stop: false)"
            )
        if action.team is None and action.priority is None and not action.tags:
            raise ValueError("then: names no team, priority or tags")
        return self


class CompiledRule(NamedTuple):
    name: str
    check: Check
    action: Action
    stop: bool


class RuleSet(_Strict):
    """A validated rules file; its conditions are compiled once, when it is built."""

    rules: list[Rule] = Field(default_factory=list)
    default: DefaultAction
    _table: list[CompiledRule] = PrivateAttr(default_factory=list)

    @field_validator("rules", mode="before")
    @classmethod
    def _empty_rules(cls, value: object) -> object:
        return [] if value is None else value

    @model_validator(mode="after")
    def _unique_names(self) -> RuleSet:
        first: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.name in first:
                raise PydanticCustomError(
                    "duplicate_rule_name",
                    "rule name '{name}' is already used by rules[{first}]",
                    {"name": rule.name, "first": first[rule.name], "index": index},
                )
            first[rule.name] = index
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._table = [CompiledRule(r.name, r.when.compile(), r.then, r.stop) for r in self.rules]


@dataclass(frozen=True, slots=True)
class Decision:
    team: str
    priority: Priority
    rule: str  # the rule that decided the team, or "default"
    tags: list[str]
    explanation: list[RuleVerdict]


@lru_cache(maxsize=8192)
def _verdict(rule: str, matched: bool, reason: str) -> RuleVerdict:
    # Reasons come from the rules (keywords, patterns, channels), not from message text, so the
    # same few verdicts recur message after message; building a model costs more than this lookup.
    return RuleVerdict(rule=rule, matched=matched, reason=reason)


RulesProvider = Callable[[], RuleSet]
"""Gives the rules in force now (a seam for reloading them while running)."""


def decide(ruleset: RuleSet, message: Message) -> Decision:
    """Run the table in order, recording every hit and miss; see the module doc for merging."""
    team: str | None = None
    decided_by = DEFAULT_RULE
    priority: Priority | None = None
    tags: dict[str, None] = {}  # an ordered set
    explanation: list[RuleVerdict] = []
    stopped = False
    for rule in ruleset._table:
        matched, reason = rule.check(message)
        explanation.append(_verdict(rule.name, matched, reason))
        if not matched:
            continue
        action = rule.action
        if team is None and action.team is not None:
            team, decided_by = action.team, rule.name
        if action.priority is not None and (priority is None or action.priority < priority):
            priority = action.priority  # "P1" < "P2": the smaller is the more urgent
        tags.update(dict.fromkeys(action.tags))
        if rule.stop:
            stopped = True
            break
    if not stopped:
        default = ruleset.default
        explanation.append(_verdict(DEFAULT_RULE, True, "no matching rule stopped the search"))
        team = team or default.team
        priority = priority or default.priority
        tags.update(dict.fromkeys(default.tags))
    assert team is not None and priority is not None  # a stopping rule names both
    return Decision(team, priority, decided_by, list(tags), explanation)
