"""The router's pure logic: routing conditions, the rule table and its interpreter, and
reading a rules file. No broker, HTTP or database in here."""

from .conditions import Message, Verdict
from .loader import Problem, RulesError, load_rules, parse_rules
from .rules import Decision, RuleSet, RulesProvider, decide

__all__ = [
    "Decision",
    "Message",
    "Problem",
    "RuleSet",
    "RulesError",
    "RulesProvider",
    "Verdict",
    "decide",
    "load_rules",
    "parse_rules",
]
