"""The contract every channel adapter keeps, one module per provider.

Each adapter module offers the same two steps:
- `verify(...)`: is this request really from the provider (or a person, for the web form)?
  Raises `Forbidden`; the HTTP view answers 403.
- `parse(raw) -> MessageReceived`: validate and normalize provider-shaped input into the one
  message model the bus carries. Raises `Invalid` naming each bad field; the view answers 422.
"""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import ErrorDetails


class Forbidden(Exception):
    """The request failed the adapter's authenticity check."""


class Invalid(Exception):
    """The input was understood but its fields are wrong: field name -> what is wrong."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(", ".join(sorted(fields)))
        self.fields = fields


def _describe(error: ErrorDetails) -> str:
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_type":
        return "must be text"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return error["msg"]


def invalid_from(exc: ValidationError) -> Invalid:
    """One short, value-free message per bad field (the first problem found for each)."""
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in error["loc"]) or "form"
        fields.setdefault(name, _describe(error))
    return Invalid(fields)
