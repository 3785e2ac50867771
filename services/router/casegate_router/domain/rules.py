"""The routing table and its interpreter: which team gets a case, at which priority, and why.

A rules file is an ordered list of rules and a default. Rules are tried top to bottom and each
try is recorded, hit or miss, with its reason: that record is the explanation.

- A matching rule ends the search, unless it says `stop: false`; then the rules below it still
  run and can add to the decision.
- team: the first matching rule that names one decides it.
- priority: the most urgent one any matching rule names (later rules escalate, never relax).
- tags: those of every matching rule, in order, without repeats.
- sla_policy, assignment: like the team, the first matching rule that names one.
- When no matching rule stopped the search, the default applies: it decides whatever is still
  open (team, priority, SLA policy, assignment) and adds its tags.

A RuleSet knows the version of the file it came from (sha256 of its text) and every decision
names it, so a decision made while the file was being replaced says which rules made it.
Validation may be given a context (see `rules_context` in policies): the SLA file's policy and
region names, which rules must use, and the region calendars for business-hours conditions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from pydantic import (
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from casegate_shared.events import Channel, Priority, RuleVerdict

from . import case_conditions as case
from .assignment import Strategy
from .case_conditions import Calendars
from .conditions import (
    Check,
    Message,
    all_of,
    always,
    any_of,
    body_matches,
    channel_in,
    keywords_found,
    language_in,
    negation,
    subject_matches,
)
from .fields import (
    Address,
    Domain,
    Keyword,
    Language,
    Name,
    Phone,
    Regex,
    Tag,
    Team,
    Word,
    context_value,
)
from .models import Strict as _Strict

DEFAULT_RULE = "default"
# Lines the router adds to an explanation after the rules (SLA policy, version) start with
# this, which no rule name may.
NOTE_PREFIX = "@"
UNVERSIONED = "unversioned"


class When(_Strict):
    """Conditions of one rule: every one listed must hold; they run in field order, cheap first
    (language detection, the dearest, runs only when everything before it held)."""

    channel: list[Channel] | None = Field(None, min_length=1)
    priority: list[Priority] | None = Field(None, min_length=1)
    region: list[Word] | None = Field(None, min_length=1)
    sender_address: list[Address] | None = Field(None, min_length=1)
    sender_domain: list[Domain] | None = Field(None, min_length=1)
    sender_phone: list[Phone] | None = Field(None, min_length=1)
    customer_tier: list[Word] | None = Field(None, min_length=1)
    customer_tags: list[Word] | None = Field(None, min_length=1)
    business_hours: bool | None = Field(None, description="true: inside, false: outside")
    keywords: list[Keyword] | None = Field(None, min_length=1)
    subject_regex: Regex | None = None
    body_regex: Regex | None = None
    language: list[Language] | None = Field(None, min_length=1)
    all: list[When] | None = Field(None, min_length=1)
    any: list[When] | None = Field(None, min_length=1)
    not_: When | None = Field(None, alias="not")

    @field_validator("region")
    @classmethod
    def _known_regions(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        regions = context_value(info, "regions")
        if value is not None and regions is not None:
            unknown = [r for r in value if r not in regions]
            if unknown:
                known = ", ".join(sorted(regions))
                raise ValueError(f"unknown region {', '.join(unknown)} (the SLA file has {known})")
        return value

    def compile(self, calendars: Calendars | None = None) -> Check:
        """Prepare every condition once; the result is what runs per message."""
        calendars = calendars or Calendars()
        makers: list[tuple[Any, Callable[[Any], Check]]] = [
            (self.channel, channel_in),
            (self.priority, case.priority_in),
            (self.region, case.region_in),
            (self.sender_address, case.sender_address_in),
            (self.sender_domain, case.sender_domain_in),
            (self.sender_phone, case.sender_phone_in),
            (self.customer_tier, case.customer_tier_in),
            (self.customer_tags, case.customer_tag_in),
            (self.business_hours, lambda inside: case.in_business_hours(inside, calendars)),
            (self.keywords, keywords_found),
            (self.subject_regex, subject_matches),
            (self.body_regex, body_matches),
            (self.language, language_in),
            (self.all, lambda ws: all_of([w.compile(calendars) for w in ws])),
            (self.any, lambda ws: any_of([w.compile(calendars) for w in ws])),
            (self.not_, lambda w: negation(w.compile(calendars))),
        ]
        checks = [make(value) for value, make in makers if value is not None]
        if not checks:
            return always()
        return checks[0] if len(checks) == 1 else all_of(checks)


def known_policy(value: str | None, info: ValidationInfo) -> str | None:
    policies = context_value(info, "sla_policies")
    if value is not None and policies is not None and value not in policies:
        raise ValueError(
            f"unknown SLA policy {value!r} (the SLA file has {', '.join(sorted(policies))})"
        )
    return value


class Action(_Strict):
    """What a matching rule contributes; a rule that stops must name a team and a priority."""

    team: Team | None = None
    priority: Priority | None = None
    tags: list[Tag] = Field(default_factory=list)
    sla_policy: Name | None = None
    assignment: Strategy | None = None

    check_policy = field_validator("sla_policy")(known_policy)


class DefaultAction(_Strict):
    team: Team
    priority: Priority
    tags: list[Tag] = Field(default_factory=list)
    sla_policy: Name | None = Field(None, description="Else the SLA file's default policy")
    assignment: Strategy | None = Field(None, description="Else the team's, from the teams file")

    check_policy = field_validator("sla_policy")(known_policy)


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
        if value.startswith(NOTE_PREFIX):
            raise ValueError(f"names starting with '{NOTE_PREFIX}' are reserved for the router")
        return value

    @model_validator(mode="after")
    def _decides_something(self) -> Rule:
        action = self.then
        if self.stop and (action.team is None or action.priority is None):
            raise ValueError(
                "a rule that stops must name a team and a priority (or set stop: false)"
            )
        if action == Action():
            raise ValueError("then: names no team, priority, tags, sla_policy or assignment")
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
    _version: str = PrivateAttr(UNVERSIONED)
    _fallback_sla_policy: str | None = PrivateAttr(None)

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
        context = context if isinstance(context, Mapping) else {}
        calendars = context.get("calendars")
        self._version = context.get("version") or UNVERSIONED
        self._fallback_sla_policy = context.get("default_sla_policy")
        self._table = [
            CompiledRule(r.name, r.when.compile(calendars), r.then, r.stop) for r in self.rules
        ]

    @property
    def version(self) -> str:
        """sha256 of the rules file's text (the first 12 hex digits)."""
        return self._version


@dataclass(frozen=True, slots=True)
class Decision:
    team: str
    priority: Priority
    rule: str  # the rule that decided the team, or "default"
    tags: list[str]
    explanation: list[RuleVerdict]
    sla_policy: str | None = None  # None: no rule, default or SLA file named one
    assignment: Strategy | None = None  # None: the team's own strategy
    rules_version: str = UNVERSIONED


@lru_cache(maxsize=8192)
def _verdict(rule: str, matched: bool, reason: str) -> RuleVerdict:
    # Reasons come from the rules (keywords, patterns, channels), not from message text, so the
    # same few verdicts recur message after message; building a model costs more than this lookup.
    return RuleVerdict(rule=rule, matched=matched, reason=reason)


def decide(ruleset: RuleSet, message: Message) -> Decision:
    """Run the table in order, recording every hit and miss; see the module doc for merging."""
    team: str | None = None
    decided_by = DEFAULT_RULE
    priority: Priority | None = None
    sla_policy: str | None = None
    assignment: Strategy | None = None
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
        sla_policy = sla_policy or action.sla_policy
        assignment = assignment or action.assignment
        tags.update(dict.fromkeys(action.tags))
        if rule.stop:
            stopped = True
            break
    if not stopped:
        default = ruleset.default
        explanation.append(_verdict(DEFAULT_RULE, True, "no matching rule stopped the search"))
        team = team or default.team
        priority = priority or default.priority
        sla_policy = sla_policy or default.sla_policy
        assignment = assignment or default.assignment
        tags.update(dict.fromkeys(default.tags))
    assert team is not None and priority is not None  # a stopping rule names both
    return Decision(
        team,
        priority,
        decided_by,
        list(tags),
        explanation,
        sla_policy or ruleset._fallback_sla_policy,
        assignment,
        ruleset._version,
    )


def recorded_explanation(decision: Decision) -> list[RuleVerdict]:
    """The explanation as a case records it: the rules tried, then what else was decided and
    by which version of the rules file (lines named NOTE_PREFIX + what)."""
    notes = [decision.explanation]
    if decision.sla_policy is not None:
        notes.append([_verdict("@sla_policy", True, f"SLA policy {decision.sla_policy}")])
    if decision.assignment is not None:
        notes.append([_verdict("@assignment", True, f"assignment by {decision.assignment}")])
    notes.append([_verdict("@version", True, f"rules version {decision.rules_version}")])
    return [line for part in notes for line in part]
