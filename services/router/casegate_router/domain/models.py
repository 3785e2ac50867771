"""The base of every policy-file model: immutable, and strict about unknown fields (a typo in a
field name is an error with its line, never a silently ignored setting)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
