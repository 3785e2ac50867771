"""The reply modal's words: where the reply goes, read back from the Reply button's value, and
that nothing in that value can become Slack markup."""

from __future__ import annotations

import json
import re

import pytest

from casegate_intake.adapters import Invalid
from casegate_intake.adapters.slack_reply import (
    ReplyDestination,
    destination_text,
    reply_modal,
    reply_value,
)


def value(**doc: object) -> str:
    return json.dumps({"ref": "CS-7K3M9Q", **doc})


def test_a_bare_ref_has_no_destination_and_the_modal_speaks_in_general_terms() -> None:
    ref, to = reply_value("CS-7K3M9Q")
    assert (ref, to) == ("CS-7K3M9Q", None)
    assert "preferred channel" in destination_text(ref, to)


def test_an_sms_destination_is_named_with_the_number_as_people_write_it() -> None:
    ref, to = reply_value(value(via="sms", to="+447700900123", next=True))
    assert to == ReplyDestination("sms", "+447700900123", has_fallback=True)
    text = destination_text(ref, to)
    assert "*SMS* to `+44 7700 900123`" in text
    assert "(or the next channel if that fails)" in text


def test_a_lone_channel_says_there_is_nothing_behind_it() -> None:
    ref, to = reply_value(value(via="email", to="ana@example.com", next=False))
    text = destination_text(ref, to)
    assert "*email* to `ana@example.com`" in text and "no other channel" in text


def test_an_unreachable_customer_is_said_so_and_the_reply_only_recorded() -> None:
    ref, to = reply_value(value(unreachable="customer has no reachable channel (sms: opted out)"))
    text = destination_text(ref, to)
    assert "cannot be reached" in text and "sms: opted out" in text and "not sent" in text


@pytest.mark.parametrize(
    "doc",
    [
        {"via": "email", "to": "<!channel>&<@U0BOSS>@example.com", "next": True},
        {"via": "email", "to": "a`<!here>`b@example.com"},
        {"unreachable": "<https://evil.example|click> <!channel> & co"},
    ],
)
def test_nothing_in_the_value_becomes_markup(doc: dict[str, object]) -> None:
    ref, to = reply_value(value(**doc))
    modal = reply_modal(ref, "C1:1.2", to)
    text = json.dumps([b for b in modal["blocks"] if b["type"] != "input"])
    assert "<!" not in text and "<@" not in text and "<http" not in text
    words = modal["blocks"][0]["text"]["text"]
    assert not re.search(r"&(?!amp;|lt;|gt;)", words)


@pytest.mark.parametrize(
    "doc",
    [
        {"via": "fax", "to": "+447700900123"},  # no such channel
        {"via": "sms", "to": ""},
        {"via": "sms", "to": "+44\n7700"},  # controls in an address
        {"via": "email", "to": "a" * 400 + "@example.com"},
        {"via": "sms", "to": 447700900123},
    ],
)
def test_a_destination_that_does_not_read_as_one_is_left_out(doc: dict[str, object]) -> None:
    assert reply_value(value(**doc)) == ("CS-7K3M9Q", None)


@pytest.mark.parametrize("raw", ["{not json", '{"to": "+447700900123"}', '{"ref": 7}'])
def test_a_value_that_names_no_case_is_refused(raw: str) -> None:
    with pytest.raises(Invalid):
        reply_value(raw)


def test_the_modal_says_the_destination_is_as_of_the_cards_last_update() -> None:
    ref, to = reply_value(value(via="sms", to="+447700900123", next=True))
    with_it = json.dumps(reply_modal(ref, None, to)["blocks"])
    assert "last update" in with_it
    assert "last update" not in json.dumps(reply_modal(ref, None, None)["blocks"])


def test_quiet_hours_that_can_hold_the_reply_are_said() -> None:
    ref, to = reply_value(value(via="sms", to="+447700900123", quiet="22:00-07:00 Europe/Berlin"))
    assert "quiet hours (`22:00–07:00 Europe/Berlin`)" in destination_text(ref, to)
    _, odd = reply_value(value(via="sms", to="+447700900123", quiet="<!channel> always"))
    assert odd is not None and odd.quiet is None  # only the notifier's own wording is shown
