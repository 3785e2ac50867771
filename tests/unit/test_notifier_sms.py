"""SMS segments (GSM-7 and UCS-2, single and concatenated, never splitting a character) and
how Twilio's answers are sorted into temporary and permanent failures."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.base.exceptions import TwilioRestException, TwilioServiceException

from casegate_notifier.adapters.twilio_sms import classify, retry_after_s
from casegate_notifier.domain.sms import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    Segments,
    SmsEncoding,
    segments,
)

GSM, UCS = SmsEncoding.GSM7, SmsEncoding.UCS2


@pytest.mark.parametrize(
    ("text", "encoding", "count", "units"),
    [
        ("", GSM, 0, 0),
        ("Your case CS-7K3M9Q is resolved.", GSM, 1, 32),
        ("a" * 160, GSM, 1, 160),
        ("a" * 161, GSM, 2, 161),
        ("a" * 306, GSM, 2, 306),
        ("a" * 307, GSM, 3, 307),
        ("€" * 80, GSM, 1, 160),  # extension characters take two septets
        ("€" * 81, GSM, 2, 162),
        ("a" * 152 + "€", GSM, 1, 154),
        ("a" * 152 + "€" + "a" * 10, GSM, 2, 164),  # the escape pair moves whole to segment 2
        ("Grüße aus Köln", GSM, 1, 14),  # ü, ß and ö are in the GSM-7 alphabet
        ("ç" * 70, UCS, 1, 70),  # lower-case c cedilla is not in GSM-7 (only Ç is)
        ("ç" * 71, UCS, 2, 71),
        ("ç" * 134, UCS, 2, 134),
        ("ç" * 135, UCS, 3, 135),
        ("😀" * 35, UCS, 1, 70),  # beyond the BMP: a surrogate pair each
        ("😀" * 36, UCS, 2, 72),
        ("a" * 66 + "😀" + "ç" * 3, UCS, 2, 71),  # the pair does not fit in 67 after 66: moves on
    ],
)
def test_segments(text: str, encoding: SmsEncoding, count: int, units: int) -> None:
    assert segments(text) == Segments(encoding, count, units)


def test_one_non_gsm_character_makes_the_whole_text_ucs2() -> None:
    assert segments("a" * 100).count == 1
    assert segments("a" * 99 + "→").encoding is UCS and segments("a" * 99 + "→").count == 2


gsm_text = st.text(alphabet=sorted(GSM7_BASIC | GSM7_EXTENSION), max_size=800)


@given(gsm_text)
def test_gsm_segments_hold_what_they_must(text: str) -> None:
    seg = segments(text)
    assert seg.encoding is GSM
    assert seg.units == len(text) + sum(c in GSM7_EXTENSION for c in text)
    if seg.units <= 160:
        assert seg.count == (1 if text else 0)
    else:
        # never fewer than the capacity allows, at most one more for escapes kept whole
        assert math.ceil(seg.units / 153) <= seg.count <= math.ceil(seg.units / 152)


@given(st.text(max_size=400))
def test_any_text_has_a_sane_count(text: str) -> None:
    seg = segments(text)
    single, multi = (160, 153) if seg.encoding is GSM else (70, 67)
    if seg.units <= single:
        assert seg.count == (1 if seg.units else 0)
    else:
        assert seg.count >= math.ceil(seg.units / multi)
        assert seg.count <= math.ceil(seg.units / (multi - 1))


def rest_error(status: int, code: int | None) -> TwilioRestException:
    return TwilioRestException(status, "https://api.twilio.com/x", "refused", code, "POST")


@pytest.mark.parametrize(
    ("status", "code", "temporary"),
    [
        (429, 20429, True),
        (500, 30001, True),
        (503, None, True),
        (401, 20003, False),  # our credentials: no retry mends them; the next channel, now
        (403, 20403, False),  # our account may not send: the same
        (400, 21610, False),  # unsubscribed (the customer sent STOP)
        (400, 21211, False),  # invalid number
        (400, 21408, False),  # region not enabled
        (400, 21614, False),  # not a mobile number
    ],
)
def test_twilio_errors_are_sorted(status: int, code: int | None, temporary: bool) -> None:
    result = classify(rest_error(status, code))
    assert not result.ok and result.temporary is temporary
    assert str(code) in (result.reason or "") or code is None


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_account_names_the_settings_to_check(status: int) -> None:
    reason = classify(rest_error(status, 20003)).reason or ""
    assert "CASEGATE_TWILIO_ACCOUNT_SID" in reason


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"Retry-After": "7"}, 7.0), ({"Retry-After": "soon"}, None), ({}, None), (None, None)],
)
def test_retry_after_is_read_when_it_is_a_number(
    headers: dict[str, str] | None, expected: float | None
) -> None:
    assert retry_after_s(headers) == expected


def test_problem_documents_are_sorted_too() -> None:
    problem = TwilioServiceException(
        type_uri="https://www.twilio.com/docs/errors/21610", title="Unsubscribed recipient",
        status=400, code=21610, detail="The recipient replied STOP",
    )
    result = classify(problem)
    assert not result.temporary and "STOP" in (result.reason or "")
    busy = TwilioServiceException(type_uri="x", title="Busy", status=503, code=30001)
    assert classify(busy).temporary
