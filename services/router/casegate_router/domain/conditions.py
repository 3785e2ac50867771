"""Routing conditions on the message's text and channel, and the all/any/not combinators
(conditions on the sender, customer, region, priority and time are in `case_conditions`).

A condition kind is prepared once, when the rules are loaded (keyword lists and regexes are
prepared then, never per message), and gives back a `Check`: a function of the message that
returns a `Verdict`, a bool plus a human reason. A check only judges; it never acts.

Reasons are stated as facts about the message ("channel is sms", "keyword 'refund' found in
subject"), so they read right whichever way a `not` turns the verdict. They name keywords and
patterns, never quote the customer's text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import NamedTuple

from casegate_shared.events import Channel, Priority

from . import language as languages

# Long keyword lists make long reasons; an explanation names the first few.
_LISTED = 5

# How much text each kind of condition reads. Keywords cost one linear pass; a regular
# expression can cost the square of its input (see regex_guard), so it reads less.
KEYWORD_BODY_LIMIT = 100_000
REGEX_SUBJECT_LIMIT = 1_000
REGEX_BODY_LIMIT = 4_000


# Words are runs of letters and digits; punctuation runs ("++", "'") are tokens of their own,
# so "c++" and "can't" are keywords too. Typographic apostrophes count as plain ones.
_TOKEN = re.compile(r"\w+|[^\w\s]+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})
_SEP = "\x1f"  # joins tokens; `re` counts it as white space, so no token holds it


class Words(NamedTuple):
    """A text cut into case-folded tokens once, for every keyword rule to look up."""

    tokens: frozenset[str]
    joined: str  # SEP + tokens joined by SEP + SEP, for phrases of several words

    @classmethod
    def of(cls, text: str) -> Words:
        tokens = _tokens(text)
        return cls(frozenset(tokens), _SEP + _SEP.join(tokens) + _SEP)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.translate(_APOSTROPHES).casefold())


@dataclass(frozen=True)
class Message:
    """What a rule may look at: the message, and what is known of its sender and case."""

    channel: Channel
    subject: str
    body: str
    sender_email: str | None = None
    sender_phone: str | None = None  # E.164
    customer_tags: frozenset[str] = frozenset()
    customer_tier: str | None = None
    region: str | None = None
    priority: Priority | None = None
    at: datetime | None = None  # when it arrived (business hours are judged at this time)

    # Cut into words on first use and kept: with hundreds of keyword rules, each looks words up
    # in a set instead of scanning the whole body again.
    @cached_property
    def subject_words(self) -> Words:
        return Words.of(self.subject)

    @cached_property
    def body_words(self) -> Words:
        return Words.of(self.body[:KEYWORD_BODY_LIMIT])

    @cached_property
    def regex_subject(self) -> str:
        return self.subject[:REGEX_SUBJECT_LIMIT]

    @cached_property
    def regex_body(self) -> str:
        return self.body[:REGEX_BODY_LIMIT]

    @cached_property
    def language(self) -> str | None:
        """Detected once per message, and only if a rule asks."""
        return languages.detect(f"{self.subject}\n{self.body}")


class Verdict(NamedTuple):
    matched: bool
    reason: str


Check = Callable[[Message], Verdict]


def listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown if len(items) <= _LISTED else f"{shown} (+{len(items) - _LISTED} more)"


def always() -> Check:
    """A rule without conditions: matches every message."""
    verdict = Verdict(True, "no conditions, matches every message")
    return lambda _message: verdict


def channel_in(channels: Sequence[Channel]) -> Check:
    """The message arrived on one of `channels`."""
    wanted = frozenset(channels)
    listed = listing([str(c) for c in channels])
    hits = {c: Verdict(True, f"channel is {c}") for c in wanted}

    def check(message: Message) -> Verdict:
        hit = hits.get(message.channel)
        return hit or Verdict(False, f"channel {message.channel} is not {listed}")

    return check


def keyword_needles(keywords: Sequence[str]) -> list[tuple[str, str | None, str | None]]:
    """Each keyword as (keyword, token to find, or phrase to find), prepared once at load."""
    needles: list[tuple[str, str | None, str | None]] = []
    for keyword in keywords:
        tokens = _tokens(keyword)
        if len(tokens) == 1:
            needles.append((keyword, tokens[0], None))
        else:
            needles.append((keyword, None, _SEP + _SEP.join(tokens) + _SEP))
    return needles


def keywords_found(keywords: Sequence[str]) -> Check:
    """Any of `keywords` appears as a whole word (or run of words), in any case, in the subject
    or the body. The first keyword of the list that is found is named."""
    needles = keyword_needles(keywords)
    miss = Verdict(False, f"none of the keywords {listing(keywords)} found in subject or body")

    def find(words: Words) -> str | None:
        for keyword, token, phrase in needles:
            if (token in words.tokens) if token is not None else (phrase in words.joined):
                return keyword
        return None

    def check(message: Message) -> Verdict:
        if (keyword := find(message.subject_words)) is not None:
            return Verdict(True, f"keyword '{keyword}' found in subject")
        if (keyword := find(message.body_words)) is not None:
            return Verdict(True, f"keyword '{keyword}' found in body")
        return miss

    return check


def subject_matches(regex: str) -> Check:
    """The subject matches `regex` somewhere (re.search; anchor it with ^ and $ if needed).
    The pattern was vetted by regex_guard when the rules were loaded."""
    pattern = re.compile(regex)
    hit = Verdict(True, f"subject matches /{regex}/")
    miss = Verdict(False, f"subject does not match /{regex}/")
    return lambda message: hit if pattern.search(message.regex_subject) else miss


def body_matches(regex: str) -> Check:
    """The body (its first REGEX_BODY_LIMIT characters) matches `regex` somewhere."""
    pattern = re.compile(regex)
    hit = Verdict(True, f"body matches /{regex}/")
    miss = Verdict(False, f"body does not match /{regex}/")
    return lambda message: hit if pattern.search(message.regex_body) else miss


def language_in(codes: Sequence[str]) -> Check:
    """The detected language of subject and body is one of `codes` (ISO 639-1)."""
    wanted = frozenset(codes)
    listed = listing(list(codes))
    unjudged = Verdict(False, "too little text to judge its language")
    languages.prepare()  # load the profiles with the rules, not on the first message

    def check(message: Message) -> Verdict:
        found = message.language
        if found is None:
            return unjudged
        if found in wanted:
            return Verdict(True, f"language is {found}")
        return Verdict(False, f"language {found} is not {listed}")

    return check


def all_of(checks: Sequence[Check]) -> Check:
    """Every check holds; a miss is explained by the first check that failed."""

    def check(message: Message) -> Verdict:
        reasons: list[str] = []
        for one in checks:
            verdict = one(message)
            if not verdict.matched:
                return verdict
            reasons.append(verdict.reason)
        return Verdict(True, " and ".join(reasons))

    return check


def any_of(checks: Sequence[Check]) -> Check:
    """At least one check holds; a hit is explained by the first check that held."""

    def check(message: Message) -> Verdict:
        reasons: list[str] = []
        for one in checks:
            verdict = one(message)
            if verdict.matched:
                return verdict
            reasons.append(verdict.reason)
        return Verdict(False, " and ".join(reasons))

    return check


def negation(inner: Check) -> Check:
    """The inner check does not hold. Its reason is a fact either way, so it is kept as is."""

    def check(message: Message) -> Verdict:
        matched, reason = inner(message)
        return Verdict(not matched, reason)

    return check
