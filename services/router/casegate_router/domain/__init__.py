"""The router's pure logic: routing conditions, the rule table and its interpreter, business
time and SLA clocks, escalation and assignment decisions, replay comparisons, and reading the
policy files. No broker, HTTP or database in here."""

from .conditions import Message, Verdict
from .loader import Problem, RulesError, load_rules, parse_rules
from .policies import Policies, PolicyFiles, load_policies
from .rules import Decision, RuleSet, decide, recorded_explanation

__all__ = [
    "Decision",
    "Message",
    "Policies",
    "PolicyFiles",
    "Problem",
    "RuleSet",
    "RulesError",
    "Verdict",
    "decide",
    "load_policies",
    "load_rules",
    "parse_rules",
    "recorded_explanation",
]
