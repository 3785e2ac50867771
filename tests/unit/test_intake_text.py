"""Intake's text rules: what may reach a header, a body, and how phone numbers normalize."""

from __future__ import annotations

import pytest

from casegate_intake.domain.text import (
    body_problem,
    normalize_newlines,
    normalize_phone,
    single_line_problem,
)


@pytest.mark.parametrize(
    "value", ["Ada Lovelace", "Zoë Ø'Brien-Åsa", "Refund: order #1234 (urgent)", "日本語"]
)
def test_ordinary_single_line_text_is_fit(value: str) -> None:
    assert single_line_problem(value) is None


@pytest.mark.parametrize(
    "value",
    ["a\rb", "a\nb", "a\r\n", "\0", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x1b"],
)
def test_every_line_boundary_and_control_is_unfit_for_a_header(value: str) -> None:
    assert single_line_problem(value) is not None


def test_every_character_splitlines_breaks_on_is_refused() -> None:
    # The email package folds headers with splitlines(): the rule must cover all it splits on.
    breakers = [chr(c) for c in range(0x110000) if len(f"a{chr(c)}b".splitlines()) > 1]
    assert breakers, "sanity: splitlines breaks on something"
    assert all(single_line_problem(ch) for ch in breakers)


def test_bodies_may_span_lines_but_never_hold_nul() -> None:
    assert body_problem("line one\nline two\r\n\ttabbed") is None
    assert body_problem("a\0b") is not None


def test_newlines_are_normalized_to_lf() -> None:
    assert normalize_newlines("a\r\nb\rc\nd") == "a\nb\nc\nd"


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("+44 20 7946 0958", "+442079460958"),
        ("+1-202-555-0143", "+12025550143"),
        ("+12345678", "+12345678"),
    ],
)
def test_phone_numbers_normalize_to_e164(raw: str, normalized: str) -> None:
    assert normalize_phone(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "020 7946 0958",
        "+1234567",
        "+1234567890123456",
        "+44 (20) 7946",
        "+44 20 7946 0958x1",
        "+４４２０７９４６０",  # full-width digits
    ],
)
def test_phone_numbers_that_are_not_e164_like_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_phone(raw)
