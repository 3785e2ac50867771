"""The rule table's interpreter: first match wins, `stop: false` rules add, the default fills in,
and the explanation records every rule tried, hit or miss, with its reason."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from casegate_router.domain import Message, RuleSet, decide, parse_rules, recorded_explanation
from casegate_router.domain.assignment import Strategy
from casegate_shared.events import Channel, Priority, RuleVerdict

TABLE = """
rules:
  - name: vip
    when: {subject_regex: '^VIP'}
    then: {tags: [vip], priority: P2}
    stop: false
  - name: outage
    when: {keywords: [outage, down]}
    then: {team: incident, priority: P1, tags: [outage]}
  - name: spam-ish
    when: {keywords: [newsletter]}
    then: {priority: P4, tags: [bulk]}
    stop: false
  - name: sms-first
    when: {channel: [sms]}
    then: {team: mobile, priority: P3, tags: [mobile]}
    stop: false
  - name: billing
    when: {keywords: [refund, invoice]}
    then: {team: billing, priority: P2}
default: {team: support, priority: P3, tags: [triage]}
"""


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return parse_rules(TABLE)


def msg(subject: str = "", body: str = "", channel: str = "email") -> Message:
    return Message(Channel(channel), subject, body)


ALL = ["vip", "outage", "spam-ish", "sms-first", "billing", "default"]

DECISIONS = [
    # (case, message, (team, priority, deciding rule, tags), rules tried)
    (
        "first stopping match wins",
        msg("Refund", "site is down"),
        ("incident", "P1", "outage", ["outage"]),
        ["vip", "outage"],
    ),
    (
        "nothing matches: the default",
        msg("Hello"),
        ("support", "P3", "default", ["triage"]),
        ALL,
    ),
    (
        "non-stop rule adds tags and priority, a later rule decides the team",
        msg("VIP refund"),
        ("billing", "P2", "billing", ["vip"]),
        ALL[:5],
    ),
    (
        "non-stop rule names the team first, a later stopping rule cannot change it",
        msg("refund", channel="sms"),
        ("mobile", "P2", "sms-first", ["mobile"]),
        ALL[:5],
    ),
    (
        "priority only gets more urgent: P2 from vip beats P4 from a later rule",
        msg("VIP newsletter"),
        ("support", "P2", "default", ["vip", "bulk", "triage"]),
        ALL,
    ),
    (
        "the default fills only what no rule decided",
        msg("newsletter", channel="sms"),
        ("mobile", "P3", "sms-first", ["bulk", "mobile", "triage"]),
        ALL,
    ),
    (
        "a non-stop rule's low priority beats the default's",
        msg("newsletter"),
        ("support", "P4", "default", ["bulk", "triage"]),
        ALL,
    ),
]


@pytest.mark.parametrize(
    ("message", "expected", "tried"),
    [pytest.param(m, e, t, id=case) for case, m, e, t in DECISIONS],
)
def test_decision(
    rules: RuleSet,
    message: Message,
    expected: tuple[str, str, str, list[str]],
    tried: list[str],
) -> None:
    decision = decide(rules, message)
    assert (decision.team, decision.priority.value, decision.rule, decision.tags) == expected
    assert [v.rule for v in decision.explanation] == tried


def test_explanation_records_each_hit_and_miss_with_its_reason(rules: RuleSet) -> None:
    decision = decide(rules, msg("VIP: my invoice", channel="chat"))
    assert decision.explanation == [
        RuleVerdict(rule="vip", matched=True, reason="subject matches /^VIP/"),
        RuleVerdict(rule="outage", matched=False,
                    reason="none of the keywords outage, down found in subject or body"),
        RuleVerdict(rule="spam-ish", matched=False,
                    reason="none of the keywords newsletter found in subject or body"),
        RuleVerdict(rule="sms-first", matched=False, reason="channel chat is not sms"),
        RuleVerdict(rule="billing", matched=True, reason="keyword 'invoice' found in subject"),
    ]


def test_default_line_says_why_it_applied(rules: RuleSet) -> None:
    last = decide(rules, msg("hi")).explanation[-1]
    assert last == RuleVerdict(
        rule="default", matched=True, reason="no matching rule stopped the search"
    )


def test_stop_defaults_to_true() -> None:
    rules = parse_rules(
        """
rules:
  - {name: a, when: {keywords: [x]}, then: {team: one, priority: P2}}
  - {name: b, when: {keywords: [x]}, then: {team: two, priority: P1, tags: [late]}}
default: {team: support, priority: P3}
"""
    )
    decision = decide(rules, msg("x"))
    assert (decision.team, decision.priority, decision.tags) == ("one", Priority.P2, [])
    assert [v.rule for v in decision.explanation] == ["a"]


def test_a_rule_without_conditions_always_matches() -> None:
    rules = parse_rules(
        "rules:\n  - name: all-to-ops\n    when:\n    then: {team: ops, priority: P4}\n"
        "default: {team: support, priority: P3}\n"
    )
    assert decide(rules, msg("anything")).team == "ops"


def test_empty_table_routes_everything_by_default() -> None:
    decision = decide(parse_rules("rules: []\ndefault: {team: support, priority: P4}\n"), msg("x"))
    assert (decision.team, decision.priority, decision.rule) == ("support", Priority.P4, "default")


TEAM = {"team": "x", "priority": "P1"}

INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "stopping rule without team",
        {"name": "a", "then": {"priority": "P1"}},
        "a rule that stops must name a team and a priority",
    ),
    (
        "action that decides nothing",
        {"name": "a", "then": {}, "stop": False},
        "names no team, priority, tags, sla_policy or assignment",
    ),
    ("reserved name", {"name": "default", "then": TEAM}, "reserved"),
    ("empty name", {"name": "  ", "then": TEAM}, "at least 1 character"),
    ("no keywords", {"name": "a", "when": {"keywords": []}, "then": TEAM}, "at least 1 item"),
    ("empty any", {"name": "a", "when": {"any": []}, "then": TEAM}, "at least 1 item"),
    ("unknown channel", {"name": "a", "when": {"channel": ["fax"]}, "then": TEAM}, "should be"),
    ("unknown condition", {"name": "a", "when": {"sender": "x"}, "then": TEAM}, "Extra inputs"),
]


@pytest.mark.parametrize(("rule", "message"), [pytest.param(r, m, id=c) for c, r, m in INVALID])
def test_invalid_rules_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RuleSet.model_validate({"rules": [rule], "default": {"team": "s", "priority": "P3"}})


def test_two_hundred_regex_rules_decide_quickly() -> None:
    """A budget, not a benchmark: about 0.5 ms here; scanning the body once per rule, or
    recompiling, costs several times that."""
    rules = RuleSet.model_validate(
        {
            "rules": [
                {
                    "name": f"r{i}",
                    "when": {
                        "subject_regex": rf"(?i)\border[- ]?{i}\b",
                        "keywords": [f"kw{i}", f"x{i}"],
                    },
                    "then": {"team": f"t{i}", "priority": "P2"},
                }
                for i in range(200)
            ],
            "default": {"team": "support", "priority": "P3"},
        }
    )
    message = msg("Question about order 42 and more", "body " * 200)
    started = time.perf_counter()
    for _ in range(50):
        decision = decide(rules, Message(message.channel, message.subject, message.body))
    per_message = (time.perf_counter() - started) / 50
    assert decision.team == "support" and len(decision.explanation) == 201
    assert per_message < 0.005, f"{per_message * 1000:.1f} ms per message"


# --- SLA policy, assignment and the version of the file -----------------------------------

POLICY_TABLE = """
rules:
  - name: vip
    when: {customer_tags: [vip]}
    then: {sla_policy: premium, tags: [vip]}
    stop: false
  - name: billing
    when: {keywords: [refund]}
    then: {team: billing, priority: P2, sla_policy: standard, assignment: skills}
  - name: night
    when: {business_hours: false}
    then: {team: night-desk, priority: P3, assignment: round_robin}
default: {team: support, priority: P3}
"""
CONTEXT = {"sla_policies": {"standard", "premium"}, "regions": {"emea"},
           "default_sla_policy": "standard"}
NOON = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(Message(Channel.EMAIL, "refund", "", customer_tags=frozenset({"vip"}), at=NOON),
                     ("billing", "premium", Strategy.SKILLS), id="first to name a policy wins"),
        pytest.param(Message(Channel.EMAIL, "refund", "", at=NOON),
                     ("billing", "standard", Strategy.SKILLS), id="the deciding rule's"),
        pytest.param(Message(Channel.EMAIL, "hello", "", at=NOON),
                     ("support", "standard", None), id="default: the SLA file's policy, the team's assignment"),
        pytest.param(Message(Channel.EMAIL, "hello", "", at=NOON.replace(hour=22)),
                     ("night-desk", "standard", Strategy.ROUND_ROBIN), id="after hours"),
    ],
)
def test_sla_policy_and_assignment(message: Message, expected: tuple[str, str, Strategy | None]) -> None:
    rules = parse_rules(POLICY_TABLE, context=CONTEXT)
    decision = decide(rules, message)
    assert (decision.team, decision.sla_policy, decision.assignment) == expected


def test_every_decision_names_the_version_of_its_file() -> None:
    rules = parse_rules(POLICY_TABLE)
    assert rules.version == hashlib.sha256(POLICY_TABLE.encode()).hexdigest()[:12]
    decision = decide(rules, Message(Channel.EMAIL, "refund", ""))
    assert decision.rules_version == rules.version
    assert parse_rules(POLICY_TABLE + "\n# changed\n").version != rules.version


def test_recorded_explanation_adds_policy_assignment_and_version() -> None:
    rules = parse_rules(POLICY_TABLE, context=CONTEXT)
    decision = decide(rules, Message(Channel.EMAIL, "refund", ""))
    lines = [(v.rule, v.matched, v.reason) for v in recorded_explanation(decision)]
    assert lines == [
        ("vip", False, "customer has none of the tags vip"),
        ("billing", True, "keyword 'refund' found in subject"),
        ("@sla_policy", True, "SLA policy standard"),
        ("@assignment", True, "assignment by skills"),
        ("@version", True, f"rules version {rules.version}"),
    ]


def test_names_of_the_router_notes_are_reserved() -> None:
    with pytest.raises(ValidationError, match="reserved for the router"):
        RuleSet.model_validate(
            {"rules": [{"name": "@version", "then": TEAM}], "default": {"team": "s", "priority": "P3"}}
        )
