"""Intake's Twilio webhooks over real HTTP against the real RabbitMQ, signed by the Twilio
stand-in with the twilio package's own code: an SMS is answered with empty TwiML only after
the broker confirmed it; forged or missing signatures get 403 and publish nothing; a retried
webhook publishes the same event id and dedupe key; MMS media land in the blob store; status
callbacks become `notification.delivery_updated`."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from aio_pika.abc import AbstractQueue
from aiohttp import web

from casegate_intake.app import BUS, SETTINGS, init_app
from casegate_intake.settings import Settings
from casegate_shared.blobs import LocalBlobStore
from casegate_shared.events import DeliveryUpdated, Envelope, MessageReceived, derived_event_id
from casegate_shared.settings import BusSettings
from tests.conftest import free_port
from tests.standins.twilio import TwilioStandIn, sid

PUBLIC = "https://casegate.example.com"
QUIET_S = 0.3
OBSERVED = ["message.received.#", "agent.action", "notification.delivery_updated"]
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 2000


@dataclass
class Intake:
    url: str
    app: web.Application
    observed: AbstractQueue

    async def next_event(self) -> aio_pika.abc.AbstractIncomingMessage | None:
        return await self.observed.get(no_ack=True, fail=False)

    async def events(self) -> list[aio_pika.abc.AbstractIncomingMessage]:
        await asyncio.sleep(QUIET_S)  # a confirmed publish is there at once; wait for strays
        found = []
        while (raw := await self.next_event()) is not None:
            found.append(raw)
        return found


@asynccontextmanager
async def start_intake(
    bus_settings: BusSettings, *, observe: list[str] | None = None, **overrides: Any
) -> AsyncIterator[Intake]:
    """Intake on a free port, with an exclusive queue bound to what it may publish."""
    connection = await aio_pika.connect(bus_settings.amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        bus_settings.bus_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    observed = await channel.declare_queue(exclusive=True)
    for key in OBSERVED if observe is None else observe:
        await observed.bind(exchange, key)
    port = free_port()
    settings = Settings(**bus_settings.model_dump(), intake_port=port, **overrides)
    app = await init_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Intake(f"http://127.0.0.1:{port}", app, observed)
    finally:
        await runner.cleanup()
        await connection.close()


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioStandIn]:
    async with TwilioStandIn() as standin:
        yield standin


@pytest.fixture
async def intake(
    bus_settings: BusSettings, twilio: TwilioStandIn, tmp_path: Path
) -> AsyncIterator[Intake]:
    async with start_intake(
        bus_settings,
        public_url=PUBLIC,
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token,
        twilio_api_base=twilio.api_base,
        blob_dir=str(tmp_path / "blobs"),
    ) as running:
        yield running


def inbound(body: str = "My parcel has not arrived", **extra: str) -> dict[str, str]:
    """The fields of Twilio's inbound message webhook."""
    return {
        "ToCountry": "US",
        "SmsMessageSid": (message_sid := extra.pop("MessageSid", sid("SM"))),
        "MessageSid": message_sid,
        "SmsSid": message_sid,
        "AccountSid": "AC" + "0" * 32,
        "From": "+14155550100",
        "To": "+14155550199",
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "ApiVersion": "2010-04-01",
        **extra,
    }


async def send(
    twilio: TwilioStandIn,
    intake: Intake,
    params: dict[str, str],
    path: str = "/v1/twilio/sms",
    **kw: Any,
) -> tuple[int, str, str]:
    """Post as Twilio does, signing the public URL it would have called."""
    return await twilio.post_signed(intake.url + path, params, signed_url=PUBLIC + path, **kw)


def message_of(raw: aio_pika.abc.AbstractIncomingMessage) -> Envelope[MessageReceived]:
    return Envelope[MessageReceived].model_validate_json(raw.body)


# --- accepted -------------------------------------------------------------------------


async def test_signed_sms_is_confirmed_before_empty_twiml(
    twilio: TwilioStandIn, intake: Intake
) -> None:
    params = inbound()
    status, ctype, text = await send(twilio, intake, params)
    assert (status, ctype) == (200, "text/xml")
    assert text.replace(" ", "").endswith("<Response/>")

    raw = await intake.next_event()  # confirmed before the answer: already queued
    assert raw is not None and raw.routing_key == "message.received.sms"
    event = message_of(raw)
    msg = event.data
    assert msg.dedupe_key == f"twilio:{params['MessageSid']}"
    assert event.id == derived_event_id(msg.dedupe_key)
    assert (msg.channel, msg.sender.phone, msg.body) == ("sms", "+14155550100", params["Body"])
    assert await intake.events() == []


async def test_retried_webhook_publishes_the_same_event_id_and_dedupe_key(
    twilio: TwilioStandIn, intake: Intake
) -> None:
    params = inbound()
    assert (await send(twilio, intake, params))[0] == 200
    assert (await send(twilio, intake, params))[0] == 200  # Twilio's retry after 15 s
    events = [message_of(r) for r in await intake.events()]
    assert len(events) == 2
    assert events[0].id == events[1].id
    key = f"twilio:{params['MessageSid']}"
    assert events[0].data.dedupe_key == events[1].data.dedupe_key == key


@pytest.mark.parametrize(
    ("word", "kind"),
    [("STOP", "opt_out"), ("unsubscribe", "opt_out"), ("START", "opt_in"), ("HELP", "help"),
     ("please stop texting", "message")],
)
async def test_keywords_are_published_with_their_kind_and_the_keyword_as_body(
    twilio: TwilioStandIn, intake: Intake, word: str, kind: str
) -> None:
    assert (await send(twilio, intake, inbound(word)))[0] == 200
    [raw] = await intake.events()
    message = message_of(raw).data
    assert (message.body, message.kind.value) == (word, kind)


async def test_mms_media_are_fetched_with_credentials_into_the_blob_store(
    twilio: TwilioStandIn, intake: Intake
) -> None:
    message_sid = sid("MM")
    url = twilio.add_media(JPEG, "image/jpeg", message_sid)
    params = inbound("", MessageSid=message_sid, NumMedia="1", MediaUrl0=url,
                     MediaContentType0="image/jpeg")
    assert (await send(twilio, intake, params))[0] == 200
    [raw] = await intake.events()
    [att] = message_of(raw).data.attachments
    assert (att.content_type, att.size, att.omitted_reason) == ("image/jpeg", len(JPEG), None)
    assert att.blob_key == hashlib.sha256(JPEG).hexdigest() and att.filename.startswith("media-0")
    blobs = LocalBlobStore(intake.app[SETTINGS].blob_dir)
    stored = b"".join([chunk async for chunk in blobs.open(att.blob_key)])
    assert stored == JPEG
    [media_get] = [r for r in twilio.requests if "/Media/" in r.path]
    assert media_get.headers["Authorization"].startswith("Basic ")


async def test_media_over_the_size_limit_is_noted_and_the_text_still_arrives(
    bus_settings: BusSettings, twilio: TwilioStandIn, tmp_path: Path
) -> None:
    async with start_intake(
        bus_settings, public_url=PUBLIC, twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token, twilio_api_base=twilio.api_base,
        blob_dir=str(tmp_path), attachment_max_bytes=1024,
    ) as intake:
        url = twilio.add_media(JPEG, "image/jpeg")
        params = inbound("see photo", NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")
        assert (await send(twilio, intake, params))[0] == 200
        [raw] = await intake.events()
    msg = message_of(raw).data
    assert msg.body == "see photo"
    [att] = msg.attachments
    assert att.blob_key is None and "1024" in (att.omitted_reason or "")


async def test_media_not_on_the_twilio_origin_is_never_fetched(
    twilio: TwilioStandIn, intake: Intake
) -> None:
    async with TwilioStandIn() as elsewhere:  # another origin, recording what reaches it
        url = elsewhere.add_media(JPEG, "image/jpeg")
        params = inbound("x", NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")
        assert (await send(twilio, intake, params))[0] == 200
        assert elsewhere.requests == []  # our credentials never went there
    [raw] = await intake.events()
    [att] = message_of(raw).data.attachments
    assert att.blob_key is None and att.omitted_reason


# --- refused --------------------------------------------------------------------------


@pytest.mark.parametrize("forgery", ["wrong_token", "tampered", "missing", "local_url", "garbage"])
async def test_forged_or_missing_signature_is_403_and_nothing_is_published(
    twilio: TwilioStandIn, intake: Intake, forgery: str
) -> None:
    params = inbound()
    path = "/v1/twilio/sms"
    kw: dict[str, Any] = {}
    if forgery == "wrong_token":
        kw["signature"] = TwilioStandIn(auth_token="f" * 32).sign(PUBLIC + path, params)
    elif forgery == "tampered":
        kw["signature"] = twilio.sign(PUBLIC + path, params)
        params = {**params, "Body": "send me the refund"}
    elif forgery == "local_url":  # signed for the address intake sees, not the public one
        kw["signature"] = twilio.sign(intake.url + path, params)
    elif forgery == "garbage":
        kw["signature"] = "bm90IGEgc2lnbmF0dXJl"
    if forgery == "missing":
        async with aiohttp.ClientSession() as http:
            async with http.post(intake.url + path, data=params) as resp:
                status = resp.status
    else:
        status, _, _ = await send(twilio, intake, params, **kw)
    assert status == 403
    assert await intake.events() == []


async def test_a_form_that_is_not_a_message_is_refused_with_the_field_named(
    twilio: TwilioStandIn, intake: Intake
) -> None:
    status, _, text = await send(twilio, intake, inbound(From="CASEGATE"))
    assert status == 422 and "From" in text
    assert await intake.events() == []


async def test_broker_down_gives_503_so_twilio_retries(
    twilio: TwilioStandIn, intake: Intake
) -> None:
    await intake.app[BUS].connection.close()  # type: ignore[union-attr]
    status, _, _ = await send(twilio, intake, inbound())
    assert status == 503
    assert await intake.events() == []


async def test_routes_exist_only_when_twilio_is_configured(bus_settings: BusSettings) -> None:
    async with start_intake(bus_settings) as intake, aiohttp.ClientSession() as http:
        async with http.post(intake.url + "/v1/twilio/sms", data=inbound()) as resp:
            assert resp.status in (404, 405)


# --- status callbacks -----------------------------------------------------------------


async def test_status_callback_becomes_delivery_updated(
    twilio: TwilioStandIn, intake: Intake
) -> None:
    message_sid = sid("SM")
    path = "/v1/twilio/status?ref=CS-7K3M9Q&key=ev1%2Fsms%2F%2B14155550100"
    params = {"MessageSid": message_sid, "MessageStatus": "undelivered", "ErrorCode": "30006",
              "AccountSid": twilio.account_sid, "To": "+14155550100", "From": "+14155550199"}
    status, _, _ = await send(twilio, intake, params, path=path)
    assert status == 204
    [raw] = await intake.events()
    assert raw.routing_key == "notification.delivery_updated"
    update = Envelope[DeliveryUpdated].model_validate_json(raw.body)
    assert update.subject == "CS-7K3M9Q"
    data = update.data
    assert (data.ref, data.provider_message_id, data.status, data.error_code) == (
        "CS-7K3M9Q", message_sid, "undelivered", "30006")
    assert data.notification_key == "ev1/sms/+14155550100"


async def test_status_callback_with_a_changed_ref_is_forged(
    twilio: TwilioStandIn, intake: Intake
) -> None:
    params = {"MessageSid": sid("SM"), "MessageStatus": "delivered"}
    signature = twilio.sign(PUBLIC + "/v1/twilio/status?ref=CS-7K3M9Q", params)
    status, _, _ = await twilio.post_signed(
        intake.url + "/v1/twilio/status?ref=CS-22222Z", params, signature=signature
    )
    assert status == 403
    assert await intake.events() == []


async def test_stand_in_reports_status_to_the_callback_it_was_given(
    twilio: TwilioStandIn, intake: Intake
) -> None:
    """The notifier's status callback URL, as the stand-in replays it to intake."""
    from casegate_notifier.adapters.twilio_sms import api_client

    async with api_client(twilio.account_sid, twilio.auth_token, twilio.api_base) as client:
        created = await client.messages.create_async(
            to="+14155550100", from_="+14155550199", body="Your case is resolved",
            status_callback=f"{PUBLIC}/v1/twilio/status?ref=CS-7K3M9Q",
        )
    assert await twilio.report_status(created.sid, "delivered", via=intake.url) == 204
    [raw] = await intake.events()
    data = Envelope[DeliveryUpdated].model_validate_json(raw.body).data
    assert (data.provider_message_id, data.status) == (created.sid, "delivered")
