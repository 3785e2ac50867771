"""Each routing condition kind, and the all/any/not combinators, as tables of message -> verdict."""

from __future__ import annotations

import re
from typing import Any

import pytest

from casegate_router.domain import Message
from casegate_router.domain.rules import When
from casegate_shared.events import Channel


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
            "any": [{"channel": ["sms"]}],
        }
    ).compile()

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a pattern was compiled while deciding")

    for name in ("compile", "search", "match", "fullmatch", "findall", "finditer", "_compile"):
        monkeypatch.setattr(re, name, refuse)
    assert check(Message(Channel.SMS, "order 1", "late  fee"))[0] is True


def test_unicode_words_are_whole_words_too() -> None:
    assert judge({"keywords": ["rückerstattung"]}, subject="Bitte RÜCKERSTATTUNG")[0] is True
    assert judge({"keywords": ["rück"]}, subject="Rückerstattung")[0] is False
