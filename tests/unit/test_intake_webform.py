"""The web form adapter: validation of each field, normalization into MessageReceived, the
honeypot check, and the pages that show customer input."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from casegate_intake.adapters import Forbidden, Invalid
from casegate_intake.adapters import webform
from casegate_intake.pages import WEBFORM_PAGE, refusal_page, thank_you_page
from casegate_shared.events import CASE_REF_PATTERN, Channel

FORM = {
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "subject": "Hello",
    "message": "Hi there",
}


def problems(fields: dict[str, object]) -> dict[str, str]:
    with pytest.raises(Invalid) as caught:
        webform.parse(fields)
    return caught.value.fields


def test_a_new_submission_is_normalized_and_promised_a_fresh_ref() -> None:
    before = datetime.now(UTC)
    raw = {**FORM, "name": "  Ada Lovelace ", "message": "a\r\nb", "phone": "+44 20 7946 0958"}
    msg = webform.parse(raw)
    assert msg.channel is Channel.WEBFORM
    assert re.fullmatch(r"webform:[0-9a-f-]{36}", msg.dedupe_key)
    sender = (msg.sender.name, msg.sender.email, msg.sender.phone)
    assert sender == ("Ada Lovelace", "ada@example.com", "+442079460958")
    assert (msg.subject, msg.body) == ("Hello", "a\nb")
    assert msg.case_ref is None
    assert msg.new_case_ref is not None and re.fullmatch(CASE_REF_PATTERN, msg.new_case_ref)
    assert msg.received_at.tzinfo is not None
    assert before <= msg.received_at <= datetime.now(UTC) + timedelta(seconds=1)


def test_each_submission_is_its_own_message() -> None:
    a, b = webform.parse(FORM), webform.parse(FORM)
    assert a.dedupe_key != b.dedupe_key and a.new_case_ref != b.new_case_ref


def test_a_named_ref_is_normalized_and_no_new_ref_is_promised() -> None:
    msg = webform.parse({**FORM, "ref": " cs-7k3m9q "})
    assert (msg.case_ref, msg.new_case_ref) == ("CS-7K3M9Q", None)


def test_blank_optional_fields_count_as_absent() -> None:
    msg = webform.parse({**FORM, "phone": "  ", "ref": "", "submit": "Send"})
    assert msg.sender.phone is None and msg.case_ref is None and msg.new_case_ref is not None


def test_missing_fields_are_each_named() -> None:
    assert problems({}) == {f: "is required" for f in ("name", "email", "subject", "message")}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""), ("name", "   "), ("name", "x" * 201), ("name", "Ada\nBcc: x@example.com"),
        ("name", 42), ("email", "ada"), ("email", "ada@"), ("email", "a b@example.com"),
        ("email", ""), ("email", "ada@example.com\r\nBcc: x@example.com"), ("phone", "12345"),
        ("phone", "+44 20 7946 0958 ext 1"), ("subject", ""), ("subject", "x" * 301),
        ("subject", "Hi\r\nBcc: all@example.com"), ("subject", "Hi\u2028there"),
        ("subject", "Hi\0"),
        ("message", ""), ("message", " \n "), ("message", "x" * 20_001), ("message", "nul\0byte"),
        ("message", ["a", "list"]), ("ref", "CS-123"), ("ref", "CS-0O1IL0"), ("ref", "case 7"),
    ],
)
def test_a_bad_field_is_named_alone(field: str, value: object) -> None:
    found = problems({**FORM, field: value})
    assert list(found) == [field]
    assert found[field] and "Value error" not in found[field]


def test_limits_are_inclusive() -> None:
    msg = webform.parse({**FORM, "name": "n" * 200, "subject": "s" * 300, "message": "m" * 20_000})
    assert (len(msg.sender.name or ""), len(msg.subject), len(msg.body)) == (200, 300, 20_000)


def test_problems_never_echo_the_submitted_value() -> None:
    secret = "4111111111111111"
    assert all(secret not in p for p in problems({**FORM, "phone": secret, "ref": secret}).values())


def test_honeypot_refuses_only_a_filled_trap() -> None:
    webform.verify(FORM)
    webform.verify({**FORM, webform.HONEYPOT_FIELD: ""})
    with pytest.raises(Forbidden):
        webform.verify({**FORM, webform.HONEYPOT_FIELD: "https://spam.example"})


def test_pages_escape_what_they_show() -> None:
    assert "<script>" not in thank_you_page("<script>alert(1)</script>")
    page = refusal_page("bad <b>", {"<i>": "<img src=x>"})
    assert "<b>" not in page and "<img" not in page and "&lt;img src=x&gt;" in page


def test_the_form_page_labels_every_field_and_hides_the_trap() -> None:
    for name in ("name", "email", "phone", "subject", "message", webform.HONEYPOT_FIELD):
        assert f'<label for="{name}"' in WEBFORM_PAGE and f'name="{name}"' in WEBFORM_PAGE
    assert 'aria-hidden="true"' in WEBFORM_PAGE and 'lang="en"' in WEBFORM_PAGE
