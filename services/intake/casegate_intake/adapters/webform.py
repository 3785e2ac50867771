"""The web form channel: a person's submission -> one normalized `MessageReceived`.

There is no provider signature to check, so `verify` is a honeypot: the page carries a field
people never see; a client that fills it is a bot and is refused.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from casegate_shared.events import (
    CASE_REF_PATTERN,
    Channel,
    MessageReceived,
    Sender,
    new_case_ref,
    utcnow,
)

from ..domain.text import body_problem, normalize_newlines, normalize_phone, single_line_problem
from . import Forbidden, invalid_from

HONEYPOT_FIELD = "website"

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Subject = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Body = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]


class WebForm(BaseModel):
    """What a customer may submit; unknown fields (a submit button, the honeypot) are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    name: Name
    email: EmailStr
    phone: str | None = None
    subject: Subject
    message: Body
    ref: str | None = None

    @field_validator("name", "subject", mode="before")
    @classmethod
    def _one_line(cls, value: object) -> object:
        # Checked before stripping: a trailing CR/LF is as suspicious as one in the middle.
        if isinstance(value, str) and (problem := single_line_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("message", mode="before")
    @classmethod
    def _body(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if problem := body_problem(value):
            raise ValueError(problem)
        return normalize_newlines(value)

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                raise ValueError("must not be empty")
        return value

    @field_validator("phone", "ref", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: object) -> object:
        # A browser sends an empty optional input as "".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return None if value is None else normalize_phone(value)

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().upper()
        if not re.fullmatch(CASE_REF_PATTERN, value):
            raise ValueError("is not a case reference like CS-7K3M9Q")
        return value


def verify(fields: Mapping[str, object]) -> None:
    """Refuse submissions that filled the field only machines can see."""
    trap = fields.get(HONEYPOT_FIELD)
    if trap not in (None, ""):
        raise Forbidden("honeypot field was filled in")


def parse(fields: Mapping[str, object]) -> MessageReceived:
    """Validate a submission and normalize it; raises `Invalid` naming each bad field."""
    try:
        form = WebForm.model_validate(dict(fields))
    except ValidationError as exc:
        raise invalid_from(exc) from None
    return MessageReceived(
        channel=Channel.WEBFORM,
        dedupe_key=f"webform:{uuid.uuid4()}",
        sender=Sender(name=form.name, email=form.email, phone=form.phone),
        subject=form.subject,
        body=form.message,
        received_at=utcnow(),
        case_ref=form.ref,
        new_case_ref=None if form.ref else new_case_ref(),
    )
