"""SMS rules and the Twilio adapter's pure steps: keywords, E.164, signature checks made with
the twilio package's own signing code, and what a webhook's fields become."""

from __future__ import annotations

import pytest
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import RequestValidator

from casegate_intake.adapters import Forbidden, Invalid, twilio_sms
from casegate_intake.domain.sms import SmsKeyword, e164, sms_keyword
from casegate_shared.events import AttachmentRef, Channel

TOKEN = "12345678901234567890123456789012"
URL = "https://casegate.example.com/v1/twilio/sms"
SID = "SM" + "0123456789abcdef" * 2


def fields(**values: str) -> MultiDictProxy[str]:
    base = {"MessageSid": SID, "From": "+14155550100", "To": "+14155550199", "Body": "Hello"}
    return MultiDictProxy(MultiDict({**base, **values}))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", SmsKeyword.OPT_OUT),
        ("stop", SmsKeyword.OPT_OUT),
        ("  Stop. ", SmsKeyword.OPT_OUT),
        ("STOPALL", SmsKeyword.OPT_OUT),
        ("unsubscribe", SmsKeyword.OPT_OUT),
        ("Cancel!", SmsKeyword.OPT_OUT),
        ("END", SmsKeyword.OPT_OUT),
        ("quit", SmsKeyword.OPT_OUT),
        ("START", SmsKeyword.OPT_IN),
        ("yes", SmsKeyword.OPT_IN),
        ("Unstop", SmsKeyword.OPT_IN),
        ("HELP", SmsKeyword.HELP),
        ("info?", SmsKeyword.HELP),
        ("please stop texting me", None),
        ("STOP IT", None),
        ("stopp", None),
        ("", None),
        (None, None),
        ("Yes, my order is late", None),
    ],
)
def test_keyword_only_when_it_is_the_whole_message(
    body: str | None, expected: SmsKeyword | None
) -> None:
    assert sms_keyword(body) == expected


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+14155550100", None, "+14155550100"),
        ("+44 20 7946 0958", None, "+442079460958"),
        ("(415) 555-0100", "US", "+14155550100"),
        ("(415) 555-0100", None, None),  # no country code and no region to read it in
        ("12345", None, None),  # a short code
        ("CASEGATE", None, None),  # an alphanumeric sender id
        ("", None, None),
        (None, None, None),
    ],
)
def test_phone_numbers_become_e164(
    raw: str | None, region: str | None, expected: str | None
) -> None:
    assert e164(raw, region) == expected


def test_signature_made_by_twilio_is_accepted() -> None:
    params = fields()
    signature = RequestValidator(TOKEN).compute_signature(URL, params)
    twilio_sms.verify(RequestValidator(TOKEN), URL, params, signature)


@pytest.mark.parametrize(
    "tamper",
    ["body", "url", "token", "missing", "empty"],
)
def test_forged_or_missing_signature_is_forbidden(tamper: str) -> None:
    params = fields()
    signature: str | None = RequestValidator(TOKEN).compute_signature(URL, params)
    url, validator = URL, RequestValidator(TOKEN)
    if tamper == "body":
        params = fields(Body="Hello, changed")
    elif tamper == "url":
        url = URL.replace("casegate.example.com", "evil.example.com")
    elif tamper == "token":
        validator = RequestValidator("x" * 32)
    elif tamper == "missing":
        signature = None
    else:
        signature = ""
    with pytest.raises(Forbidden):
        twilio_sms.verify(validator, url, params, signature)


def test_sha256_signature_named_in_settings_header_is_accepted() -> None:
    params = fields()
    signature = RequestValidator(TOKEN).compute_signature(URL, params, "HMAC_SHA256")
    settings = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    twilio_sms.verify(RequestValidator(TOKEN), URL, params, signature, settings)
    with pytest.raises(Forbidden):  # the same signature read as SHA-1 does not match
        twilio_sms.verify(RequestValidator(TOKEN), URL, params, signature)


def test_inbound_sms_is_normalized() -> None:
    params = fields(Body="My parcel is late\r\nabout CS-7k3m9q", From="+1 415 555 0100")
    msg = twilio_sms.parse(params, [])
    assert msg.channel is Channel.SMS
    assert msg.dedupe_key == f"twilio:{SID}"
    assert msg.sender.phone == "+14155550100"
    assert msg.body == "My parcel is late\nabout CS-7k3m9q"
    assert msg.case_ref == "CS-7K3M9Q"
    assert msg.subject == "" and msg.new_case_ref is None


def test_same_webhook_twice_has_one_dedupe_key() -> None:
    assert twilio_sms.parse(fields(), []).dedupe_key == twilio_sms.parse(fields(), []).dedupe_key


def test_keyword_message_keeps_the_keyword_as_its_body() -> None:
    msg = twilio_sms.parse(fields(Body=" STOP "), [])
    assert msg.body == "STOP" and sms_keyword(msg.body) is SmsKeyword.OPT_OUT
    assert msg.kind.value == "opt_out"  # case-store suppresses the number, opens nothing


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"MessageSid": "nope"}, "MessageSid"),
        ({"From": "12345"}, "From"),
        ({"Body": "nul\0byte"}, "Body"),
    ],
)
def test_bad_fields_are_named(override: dict[str, str], field: str) -> None:
    with pytest.raises(Invalid) as err:
        twilio_sms.parse(fields(**override), [])
    assert field in err.value.fields


def test_media_are_listed_up_to_ten() -> None:
    urls = {f"MediaUrl{i}": f"https://api.twilio.com/m/{i}" for i in range(12)}
    params = fields(NumMedia="12", MediaContentType0="image/jpeg", **urls)
    media = twilio_sms.media_of(params)
    assert len(media) == 10
    assert media[0].content_type == "image/jpeg"
    assert media[1].content_type == "application/octet-stream"
    with pytest.raises(Invalid):
        twilio_sms.media_of(fields(NumMedia="many"))


def test_attachments_travel_with_the_message() -> None:
    ref = AttachmentRef(
        blob_key="a" * 64, filename="media-0.jpg", content_type="image/jpeg", size=3
    )
    assert twilio_sms.parse(fields(), [ref]).attachments == [ref]


def test_status_callback_becomes_a_delivery_update() -> None:
    update = twilio_sms.parse_status(
        fields(MessageStatus="undelivered", ErrorCode="30006"), "CS-7K3M9Q", "ev/sms/+14155550100"
    )
    assert (update.ref, update.provider, update.provider_message_id) == ("CS-7K3M9Q", "twilio", SID)
    assert (update.status, update.error_code) == ("undelivered", "30006")
    assert update.notification_key == "ev/sms/+14155550100"


@pytest.mark.parametrize(
    ("ref", "status", "field"),
    [
        (None, "delivered", "ref"),
        ("CS-0000", "delivered", "ref"),
        ("CS-7K3M9Q", "exploded", "MessageStatus"),
    ],
)
def test_status_callback_needs_ref_and_known_status(
    ref: str | None, status: str, field: str
) -> None:
    with pytest.raises(Invalid) as err:
        twilio_sms.parse_status(fields(MessageStatus=status), ref, None)
    assert field in err.value.fields
