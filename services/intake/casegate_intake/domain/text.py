"""Text rules every channel applies before a value may reach the bus.

Names and subjects end up in email headers, and Python 3.11.7 predates the header-injection
fixes: `str.splitlines()`, which the email package folds with, breaks on more than CR and LF
(VT, FF, FS, GS, RS, NEL, U+2028, U+2029). So a single-line value refuses every control
character and every line boundary. PostgreSQL text cannot hold NUL, so no value may carry it.
"""

from __future__ import annotations

import re
import unicodedata

LINE_SEPARATORS = frozenset("\u2028\u2029")
PHONE_PATTERN = re.compile(r"\+[0-9]{8,15}")
_PHONE_PUNCTUATION = re.compile(r"[ \-]")


def single_line_problem(value: str) -> str | None:
    """Why `value` is unfit for a header, or None when it is fit."""
    for ch in value:
        if ch in LINE_SEPARATORS or unicodedata.category(ch) == "Cc":
            if ch in "\r\n":
                return "must be a single line (no CR or LF)"
            return f"must not contain control or line-break character U+{ord(ch):04X}"
    return None


def body_problem(value: str) -> str | None:
    """Why `value` is unfit as a message body, or None when it is fit."""
    if "\0" in value:
        return "must not contain NUL characters"
    return None


def normalize_newlines(value: str) -> str:
    """Browsers send textarea line breaks as CRLF; store one form."""
    return value.replace("\r\n", "\n").replace("\r", "\n")


def normalize_phone(value: str) -> str:
    """`+44 20-7946 0958` -> `+442079460958`; raises ValueError when it is not E.164-like."""
    compact = _PHONE_PUNCTUATION.sub("", value)
    if not PHONE_PATTERN.fullmatch(compact):
        raise ValueError("must be an international number: + and 8 to 15 digits")
    return compact
