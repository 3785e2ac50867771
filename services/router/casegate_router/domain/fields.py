"""The value types of rules-file fields: each validates and normalizes one kind of value
(a regular expression vetted by regex_guard, a phone number in E.164, an address, a domain,
a language code), so a rule holds only values its condition can use as they are."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import phonenumbers
from pydantic import AfterValidator, StringConstraints, ValidationInfo

from . import language
from .regex_guard import UnsafePattern, check_pattern


def _valid_regex(value: str) -> str:
    try:
        re.compile(value)  # some errors (look-behind width) only compiling finds
        check_pattern(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    except UnsafePattern as exc:
        raise ValueError(f"refused regular expression: {exc}") from None
    return value


def _phone(value: str) -> str:
    """'+49 30 1234567' -> '+49301234567'; '+49*' stays a prefix."""
    compact = re.sub(r"[\s().\-/]", "", value)
    if compact.endswith("*"):
        if not re.fullmatch(r"\+\d{1,14}\*", compact):
            raise ValueError("a prefix is + and digits, then *, such as +49*")
        return compact
    try:
        number = phonenumbers.parse(compact, None)
    except phonenumbers.NumberParseException:
        raise ValueError(
            "expected a number in international form, such as +49 30 1234567"
        ) from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _address(value: str) -> str:
    local, at, domain = value.strip().lower().rpartition("@")
    if not (at and local and "." in domain) or any(c.isspace() for c in value.strip()):
        raise ValueError("expected an email address such as ada@example.com")
    return f"{local}@{domain}"


def _domain(value: str) -> str:
    domain = value.strip().lower().lstrip("@")
    if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", domain):
        raise ValueError("expected a domain such as example.com")
    return domain


def _language(value: str) -> str:
    code = value.strip().lower()
    if code not in language.known_codes():
        known = ", ".join(sorted(language.known_codes()))
        raise ValueError(f"unknown language {value!r} (known: {known})")
    return code


def context_value(info: ValidationInfo, key: str) -> Any:
    context: Any = info.context
    return context.get(key) if isinstance(context, Mapping) else None


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Team = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Regex = Annotated[
    str, StringConstraints(min_length=1, max_length=1000), AfterValidator(_valid_regex)
]
Phone = Annotated[str, StringConstraints(min_length=2, max_length=40), AfterValidator(_phone)]
Address = Annotated[str, StringConstraints(max_length=320), AfterValidator(_address)]
Domain = Annotated[str, StringConstraints(max_length=253), AfterValidator(_domain)]
Language = Annotated[str, StringConstraints(max_length=10), AfterValidator(_language)]
Word = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
