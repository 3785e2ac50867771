"""Each routing condition kind, and the all/any/not combinators, as tables of message -> verdict."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from casegate_router.domain import Message
from casegate_router.domain.business_time import BusinessCalendar
from casegate_router.domain.case_conditions import Calendars
from casegate_router.domain.rules import When
from casegate_shared.events import Channel, Priority


def judge(
    when: dict[str, Any], subject: str = "", body: str = "", channel: str = "email"
) -> tuple[bool, str]:
    check = When.model_validate(when).compile()
    matched, reason = check(Message(Channel(channel), subject, body))
    return matched, reason


CASES: list[tuple[str, dict[str, Any], dict[str, str], bool, str]] = [
    # (case, when, message, matched, reason)
    ("no conditions", {}, {}, True, "no conditions, matches every message"),
    ("channel listed", {"channel": ["sms", "chat"]}, {"channel": "sms"}, True, "channel is sms"),
    (
        "channel not listed",
        {"channel": ["sms", "chat"]},
        {"channel": "email"},
        False,
        "channel email is not sms, chat",
    ),
    (
        "keyword in subject",
        {"keywords": ["invoice", "refund"]},
        {"subject": "Refund please", "body": "my invoice"},
        True,
        "keyword 'refund' found in subject",
    ),
    (
        "keyword in body only",
        {"keywords": ["invoice", "refund"]},
        {"subject": "Hello", "body": "About my INVOICE."},
        True,
        "keyword 'invoice' found in body",
    ),
    (
        "keyword only inside a longer word",
        {"keywords": ["charge"]},
        {"subject": "Recharged my phone", "body": "surcharges and chargers"},
        False,
        "none of the keywords charge found in subject or body",
    ),
    (
        "keyword of several words across white space",
        {"keywords": ["not working"]},
        {"body": "the app is Not\n  Working since noon"},
        True,
        "keyword 'not working' found in body",
    ),
    (
        "keyword with punctuation at its edge",
        {"keywords": ["c++"]},
        {"subject": "Question on C++ support"},
        True,
        "keyword 'c++' found in subject",
    ),
    (
        "keyword with punctuation, inside a longer word",
        {"keywords": ["c++"]},
        {"subject": "abc++ is not a language"},
        False,
        "none of the keywords c++ found in subject or body",
    ),
    (
        "long keyword list is shortened in the reason",
        {"keywords": ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]},
        {"subject": "nothing"},
        False,
        "none of the keywords a1, a2, a3, a4, a5 (+2 more) found in subject or body",
    ),
    (
        "subject regex matches",
        {"subject_regex": r"^\[urgent\]"},
        {"subject": "[urgent] site down"},
        True,
        r"subject matches /^\[urgent\]/",
    ),
    (
        "subject regex is case sensitive",
        {"subject_regex": r"^\[urgent\]"},
        {"subject": "[URGENT] site down"},
        False,
        r"subject does not match /^\[urgent\]/",
    ),
    (
        "subject regex ignores the body",
        {"subject_regex": "order [0-9]+"},
        {"subject": "hello", "body": "order 1234"},
        False,
        "subject does not match /order [0-9]+/",
    ),
    (
        "several conditions: all must hold, and do",
        {"channel": ["sms"], "keywords": ["refund"]},
        {"channel": "sms", "body": "refund pls"},
        True,
        "channel is sms and keyword 'refund' found in body",
    ),
    (
        "several conditions: the first failing one explains the miss",
        {"channel": ["sms"], "keywords": ["refund"]},
        {"channel": "email", "body": "refund pls"},
        False,
        "channel email is not sms",
    ),
    (
        "all: every nested condition holds",
        {"all": [{"keywords": ["refund"]}, {"subject_regex": "order"}]},
        {"subject": "order 7", "body": "refund"},
        True,
        "keyword 'refund' found in body and subject matches /order/",
    ),
    (
        "all: one nested condition fails",
        {"all": [{"keywords": ["refund"]}, {"subject_regex": "order"}]},
        {"subject": "hi", "body": "refund"},
        False,
        "subject does not match /order/",
    ),
    (
        "any: the first holding condition explains the hit",
        {"any": [{"channel": ["sms"]}, {"keywords": ["refund"]}, {"subject_regex": "."}]},
        {"subject": "x", "body": "refund"},
        True,
        "keyword 'refund' found in body",
    ),
    (
        "any: none holds, every reason is listed",
        {"any": [{"channel": ["sms"]}, {"keywords": ["refund"]}]},
        {"subject": "x", "body": "y"},
        False,
        "channel email is not sms and none of the keywords refund found in subject or body",
    ),
    (
        "not: the inner condition fails, so it holds",
        {"not": {"channel": ["sms"]}},
        {"channel": "email"},
        True,
        "channel email is not sms",
    ),
    (
        "not: the inner condition holds, so it fails",
        {"not": {"channel": ["sms"]}},
        {"channel": "sms"},
        False,
        "channel is sms",
    ),
    (
        "nested: keywords but not on sms, any of two subjects",
        {
            "keywords": ["refund"],
            "not": {"channel": ["sms"]},
            "any": [{"subject_regex": "^Order"}, {"subject_regex": "^Invoice"}],
        },
        {"channel": "chat", "subject": "Invoice 9", "body": "refund"},
        True,
        "keyword 'refund' found in body and subject matches /^Invoice/ and channel chat is not sms",
    ),
]


@pytest.mark.parametrize(
    ("when", "message", "matched", "reason"),
    [pytest.param(w, m, hit, r, id=case) for case, w, m, hit, r in CASES],
)
def test_condition(
    when: dict[str, Any], message: dict[str, str], matched: bool, reason: str
) -> None:
    assert judge(when, **message) == (matched, reason)


KEYWORD_EDGES = [
    # (keyword, text, found)
    ("c++", "c+++ is not c++", True),
    ("c++", "c+++", False),  # punctuation runs are whole tokens too
    ("can't log in", "I CAN\u2019T   log in", True),  # typographic apostrophe, spaces
    ("log in", "login", False),
    ("e-mail", "my E-Mail bounced", True),
    ("mail", "my e-mail bounced", True),  # "-" separates words
    ("straße", "STRASSE 5", True),  # case folding, not just lower()
    ("order_id", "order id", False),
]


@pytest.mark.parametrize(("keyword", "text", "found"), KEYWORD_EDGES)
def test_keyword_edges(keyword: str, text: str, found: bool) -> None:
    assert judge({"keywords": [keyword]}, body=text)[0] is found


def test_the_first_listed_keyword_found_is_named() -> None:
    assert judge({"keywords": ["invoice", "refund"]}, body="refund of my invoice") == (
        True,
        "keyword 'invoice' found in body",
    )


def test_deciding_compiles_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patterns are built at load; per message only prepared objects run."""
    check = When.model_validate(
        {
            "keywords": ["refund", "late fee"],
            "subject_regex": "^order",
            "body_regex": r"fee\b",
            "sender_domain": ["example.com"],
            "sender_phone": ["+43*"],
            "business_hours": True,
            "any": [{"channel": ["sms"]}],
        }
    ).compile()

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a pattern was compiled while deciding")

    for name in ("compile", "search", "match", "fullmatch", "findall", "finditer", "_compile"):
        monkeypatch.setattr(re, name, refuse)
    monday_noon = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
    message = Message(Channel.SMS, "order 1", "late  fee", sender_email="a@example.com",
                      sender_phone="+4366412345", at=monday_noon)
    assert check(message)[0] is True


def test_unicode_words_are_whole_words_too() -> None:
    assert judge({"keywords": ["rückerstattung"]}, subject="Bitte RÜCKERSTATTUNG")[0] is True
    assert judge({"keywords": ["rück"]}, subject="Rückerstattung")[0] is False


# --- conditions on the sender, the customer, the case and the time -----------------------

MONDAY_NOON_BERLIN = datetime(2025, 1, 6, 11, 0, tzinfo=UTC)
SUNDAY_BERLIN = datetime(2025, 1, 5, 11, 0, tzinfo=UTC)
CALENDARS = Calendars(
    {
        "emea": BusinessCalendar("Europe/Berlin", [[(540, 1020)]] * 5 + [[], []]),
        "apac": BusinessCalendar("Asia/Tokyo", [[(540, 1080)]] * 5 + [[], []]),
    },
    "emea",
)


def around(when: dict[str, Any], **facts: Any) -> tuple[bool, str]:
    check = When.model_validate(when).compile(CALENDARS)
    message = Message(Channel(facts.pop("channel", "email")), facts.pop("subject", ""),
                      facts.pop("body", ""), **facts)
    matched, reason = check(message)
    return matched, reason


CASE_FACTS: list[tuple[str, dict[str, Any], dict[str, Any], bool, str]] = [
    ("sender address listed, any case", {"sender_address": ["Ada@Example.com", "bob@example.com"]},
     {"sender_email": "ada@EXAMPLE.com"}, True, "sender is one of the 2 listed addresses"),
    ("sender address not listed", {"sender_address": ["ada@example.com"]},
     {"sender_email": "eve@example.com"}, False, "sender is not one of the 1 listed address"),
    ("no sender address", {"sender_address": ["ada@example.com"]}, {}, False,
     "no sender email address known"),
    ("sender domain", {"sender_domain": ["example.com"]}, {"sender_email": "ada@example.com"},
     True, "sender domain is example.com"),
    ("sender subdomain", {"sender_domain": ["@Example.com"]}, {"sender_email": "ada@mail.example.com"},
     True, "sender domain is example.com (a subdomain)"),
    ("lookalike domain is not a subdomain", {"sender_domain": ["example.com"]},
     {"sender_email": "ada@badexample.com"}, False, "sender domain is not example.com"),
    ("sender phone, written any way", {"sender_phone": ["+49 (30) 123-4567"]},
     {"sender_phone": "+49301234567"}, True, "sender phone is a listed number"),
    ("sender phone prefix", {"sender_phone": ["+43*", "+49 30 1234567"]},
     {"sender_phone": "+436641234567"}, True, "sender phone matches +43*"),
    ("sender phone no match", {"sender_phone": ["+43*", "+49 30 1234567"]},
     {"sender_phone": "+15551234567"}, False, "sender phone does not match +43*, 1 listed number"),
    ("customer tag", {"customer_tags": ["vip", "press"]}, {"customer_tags": frozenset({"press"})},
     True, "customer is tagged press"),
    ("customer tag missing", {"customer_tags": ["vip"]}, {}, False, "customer has none of the tags vip"),
    ("customer tier", {"customer_tier": ["gold"]}, {"customer_tier": "gold"}, True, "customer tier is gold"),
    ("other customer tier", {"customer_tier": ["gold"]}, {"customer_tier": "free"}, False,
     "customer tier free is not gold"),
    ("unknown customer tier", {"customer_tier": ["gold"]}, {}, False, "customer tier unknown"),
    ("region", {"region": ["apac"]}, {"region": "apac"}, True, "region is apac"),
    ("no region", {"region": ["apac"]}, {}, False, "region unknown"),
    ("priority", {"priority": ["P1", "P2"]}, {"priority": Priority.P2}, True, "priority is P2"),
    ("other priority", {"priority": ["P1"]}, {"priority": Priority.P3}, False, "priority P3 is not P1"),
    ("inside business hours of the default region", {"business_hours": True},
     {"at": MONDAY_NOON_BERLIN}, True, "arrived inside business hours of region emea"),
    ("outside business hours: Sunday", {"business_hours": False}, {"at": SUNDAY_BERLIN}, True,
     "arrived outside business hours of region emea"),
    ("business hours of the case's region", {"business_hours": True},
     {"at": MONDAY_NOON_BERLIN, "region": "apac"}, False, "arrived outside business hours of region apac"),
    ("an unknown region falls back to the default", {"business_hours": True},
     {"at": MONDAY_NOON_BERLIN, "region": "mars"}, True, "arrived inside business hours of region emea"),
    ("time not known", {"business_hours": False}, {}, False, "the time the message arrived is not known"),
    ("body regex", {"body_regex": r"order #?\d{6}"}, {"body": "about order #123456"}, True,
     r"body matches /order #?\d{6}/"),
    ("body regex ignores the subject", {"body_regex": "order"}, {"subject": "order"}, False,
     "body does not match /order/"),
]


@pytest.mark.parametrize(
    ("when", "facts", "matched", "reason"),
    [pytest.param(w, f, m, r, id=c) for c, w, f, m, r in CASE_FACTS],
)
def test_case_condition(when: dict[str, Any], facts: dict[str, Any], matched: bool, reason: str) -> None:
    assert around(when, **facts) == (matched, reason)


GERMAN = "Guten Tag, ich habe eine Frage zu meiner Rechnung vom letzten Monat und bitte um Hilfe."
FRENCH = "Bonjour, je voudrais un remboursement pour ma commande de la semaine dernière, merci."


@pytest.mark.parametrize(
    ("text", "matched", "reason"),
    [
        (GERMAN, True, "language is de"),
        (FRENCH, False, "language fr is not de, nl"),
        ("Hallo, Rechnung?", False, "too little text to judge its language"),
    ],
)
def test_language(text: str, matched: bool, reason: str) -> None:
    assert around({"language": ["de", "nl"]}, body=text) == (matched, reason)


def test_language_detection_is_the_same_every_time() -> None:
    mixed = "Hello hallo bonjour, refund Rechnung remboursement, thanks danke merci beaucoup!"
    answers = {Message(Channel.EMAIL, "", mixed).language for _ in range(20)}
    assert len(answers) == 1


# --- regular expressions that could run away -----------------------------------------------

UNSAFE = [
    ("(a+)+$", "a repeat inside a repeat"),
    (r"(\w*\s?)*end", "a repeat inside a repeat"),
    (r"^(\d+)*$", "a repeat inside a repeat"),
    ("(a|ab)*c", "alternatives under a repeat"),
    ("(?:x|x)+y", "alternatives under a repeat"),
    (".*.*=", "two repeats in a row"),
    (r"\d+\d*x", "two repeats in a row"),
    (r"\s*\s?\s*$", "two repeats in a row"),
    (r"(a+)\1", "backreferences"),
]
SAFE = [
    r"(?i)^\[urgent\]",
    r"order #?\d{6}",
    r"(foo|bar)+baz",
    r"\w+@\w+\.com",
    r"\s*\w+\s*",
    r"(?>(a+))+$",
    r"(?:a+)++$",
    r"(ab?)+",
    r".*x",
]


@pytest.mark.parametrize(("pattern", "why"), UNSAFE)
def test_patterns_that_could_run_away_are_refused(pattern: str, why: str) -> None:
    with pytest.raises(ValidationError, match=f"refused regular expression: {why}"):
        When.model_validate({"body_regex": pattern})


@pytest.mark.parametrize("pattern", SAFE)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    When.model_validate({"subject_regex": pattern, "body_regex": pattern})


def test_a_huge_body_is_judged_in_bounded_time() -> None:
    """The worst an accepted pattern can do is quadratic, and only in the first 4,000
    characters: a megabyte of the worst input stays fast."""
    check = When.model_validate({"body_regex": r"\s*x", "keywords": ["refund"]}).compile()
    body = " " * 1_000_000
    started = time.perf_counter()
    for _ in range(3):
        assert check(Message(Channel.EMAIL, "refund", body))[0] is False
    assert (time.perf_counter() - started) / 3 < 0.5
