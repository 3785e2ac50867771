"""Intake's Slack routes over real HTTP against the real RabbitMQ and Redis, with requests
signed by slack_sdk's own code and the Slack stand-in answering the Web API: thread messages
become notes or replies, buttons become actions, the Reply button opens a modal that names
where the reply goes (as the card's button says) and whose submission is a reply; retries
publish nothing new; forged, stale or unsigned requests get 403 and publish nothing; our own
bot's messages are skipped."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from casegate_intake.app import BUS
from casegate_shared.events import AgentAction, Envelope, derived_event_id
from casegate_shared.settings import BusSettings
from tests.conftest import free_port
from tests.integration.test_intake_twilio import Intake, start_intake
from tests.support.tcp_proxy import HeldProxy
from tests.standins.slack import (
    SlackStandIn,
    block_action,
    event_callback,
    interactivity,
    signed_headers,
    url_verification,
    view_submission,
)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
JSON, FORM = "application/json", "application/x-www-form-urlencoded"
CHANNEL, POST_TS = "C0SUPPORT", "1700000000.000100"
AGENT = "U0AGENT01"


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as standin:
        yield standin


def slack_settings(slack: SlackStandIn, redis_url: str, key_prefix: str) -> dict[str, Any]:
    return {
        "slack_signing_secret": SECRET,
        "slack_bot_token": slack.token,
        "slack_api_base": slack.api_base,
        "redis_url": redis_url,
        "redis_prefix": key_prefix,
    }


@pytest.fixture
async def intake(
    bus_settings: BusSettings, slack: SlackStandIn, redis_url: str, key_prefix: str
) -> AsyncIterator[Intake]:
    settings = slack_settings(slack, redis_url, key_prefix)
    async with start_intake(bus_settings, **settings) as running:
        yield running


async def post(
    intake: Intake,
    path: str,
    body: bytes,
    content_type: str,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    extra: dict[str, str] | None = None,
    signed: bool = True,
) -> tuple[int, str, float]:
    headers = (
        signed_headers(secret, body, timestamp=timestamp, content_type=content_type)
        if signed
        else {"Content-Type": content_type}
    )
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        headers = {**headers, **(extra or {})}
        async with http.post(intake.url + path, data=body, headers=headers) as resp:
            return resp.status, await resp.text(), time.monotonic() - started


def thread_message(text: str, *, user: str = AGENT, **extra: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "channel": CHANNEL,
        "user": user,
        "text": text,
        "ts": "1700000100.000200",
        "thread_ts": POST_TS,
        "channel_type": "channel",
        **extra,
    }


def actions_of(raws: list[Any]) -> list[Envelope[AgentAction]]:
    assert all(r.routing_key == "agent.action" for r in raws)
    return [Envelope[AgentAction].model_validate_json(r.body) for r in raws]


# --- events ---------------------------------------------------------------------------


async def test_url_verification_is_answered_with_the_challenge(intake: Intake) -> None:
    status, text, _ = await post(intake, "/v1/slack/events", url_verification("3eZbrw1a"), JSON)
    assert status == 200 and json.loads(text) == {"challenge": "3eZbrw1a"}
    assert await intake.events() == []


async def test_thread_message_is_a_note_published_before_the_200(intake: Intake) -> None:
    body = event_callback(thread_message("Customer called, &lt;waiting&gt; on the courier"),
                          event_id="Ev0NOTE0001")
    status, _, elapsed = await post(intake, "/v1/slack/events", body, JSON)
    assert status == 200 and elapsed < 3
    raw = await intake.next_event()  # confirmed before the 200: already queued
    assert raw is not None
    [event] = actions_of([raw])
    action = event.data
    assert (action.action, action.thread_key, action.actor_slack_user) == (
        "note", f"{CHANNEL}:{POST_TS}", AGENT)
    assert action.body == "Customer called, <waiting> on the courier"
    assert action.dedupe_key == "slack:Ev0NOTE0001"
    assert event.id == derived_event_id("slack:Ev0NOTE0001")


async def test_reply_prefix_makes_a_reply_and_is_stripped(intake: Intake) -> None:
    body = event_callback(thread_message("!reply We have refunded you &amp; apologise"))
    assert (await post(intake, "/v1/slack/events", body, JSON))[0] == 200
    [event] = actions_of(await intake.events())
    assert (event.data.action, event.data.body) == ("reply", "We have refunded you & apologise")


async def test_slack_retry_is_answered_200_without_publishing_again(intake: Intake) -> None:
    body = event_callback(thread_message("note once"), event_id="Ev0RETRY001")
    assert (await post(intake, "/v1/slack/events", body, JSON))[0] == 200
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    assert (await post(intake, "/v1/slack/events", body, JSON, extra=retry))[0] == 200
    [event] = actions_of(await intake.events())
    assert event.data.dedupe_key == "slack:Ev0RETRY001"


async def test_without_redis_a_retry_repeats_the_same_event_id(
    bus_settings: BusSettings, slack: SlackStandIn, key_prefix: str
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = slack_settings(slack, dead_redis, key_prefix)
    async with start_intake(bus_settings, **settings) as intake:
        body = event_callback(thread_message("note"), event_id="Ev0NOREDIS1")
        assert (await post(intake, "/v1/slack/events", body, JSON))[0] == 200
        assert (await post(intake, "/v1/slack/events", body, JSON))[0] == 200
        events = actions_of(await intake.events())
    assert len(events) == 2 and events[0].id == events[1].id  # case-store's inbox absorbs it


async def test_broker_down_gives_503_and_leaves_the_retry_free_to_publish(
    intake: Intake, redis_url: str, key_prefix: str
) -> None:
    await intake.app[BUS].connection.close()  # type: ignore[union-attr]
    body = event_callback(thread_message("note"), event_id="Ev0DOWN0001")
    assert (await post(intake, "/v1/slack/events", body, JSON))[0] == 503
    redis = Redis.from_url(redis_url)
    try:
        assert await redis.exists(f"{key_prefix}:slack:seen:slack:Ev0DOWN0001") == 0
    finally:
        await redis.aclose()


async def test_a_retry_while_the_first_delivery_awaits_its_confirm_is_no_repeat(
    bus_settings: BusSettings, slack: SlackStandIn, redis_url: str, key_prefix: str
) -> None:
    """Slack retries after 3 s; the first delivery may still be waiting for the broker, and
    may yet fail. The retry must not be answered "seen" before the first was confirmed, or a
    failed first would leave the note published by nobody."""
    async with HeldProxy(bus_settings.amqp_url).running() as proxy:
        via_proxy = bus_settings.model_copy(update={"amqp_url": proxy.url})
        settings = slack_settings(slack, redis_url, key_prefix)
        async with start_intake(via_proxy, **settings) as intake:
            body = event_callback(thread_message("note"), event_id="Ev0SLOWCONF")
            proxy.hold()  # the broker's confirms stop coming back
            first = asyncio.create_task(post(intake, "/v1/slack/events", body, JSON))
            await asyncio.sleep(0.5)
            retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
            second = asyncio.create_task(post(intake, "/v1/slack/events", body, JSON,
                                              extra=retry))
            await asyncio.sleep(1.0)
            assert not second.done(), "the retry was answered before anything was confirmed"
            proxy.release()
            assert (await first)[0] == 200 and (await second)[0] == 200
            events = actions_of(await intake.events())
    assert events and {e.id for e in events} == {derived_event_id("slack:Ev0SLOWCONF")}


@pytest.mark.parametrize(
    "event",
    [
        thread_message("posted by our bot", bot_id="BCASEGATE"),
        thread_message("posted as our bot user", user="UCASEGATE"),  # learnt from auth.test
        thread_message("edited", subtype="message_changed"),
        {**thread_message("top-level chatter"), "thread_ts": None},
        {**thread_message("the case post itself"), "ts": POST_TS},
        {"type": "reaction_added", "user": AGENT, "reaction": "eyes"},
    ],
    ids=["bot_id", "bot_user", "edit", "top_level", "parent", "reaction"],
)
async def test_what_is_not_an_agent_writing_is_skipped(
    intake: Intake, slack: SlackStandIn, event: dict[str, Any]
) -> None:
    assert (await post(intake, "/v1/slack/events", event_callback(event), JSON))[0] == 200
    assert await intake.events() == []
    assert slack.calls_of("auth.test"), "the bot user id comes from auth.test"


@pytest.mark.parametrize("forgery", ["wrong_secret", "stale", "unsigned", "tampered"])
async def test_forged_stale_or_unsigned_events_are_403_and_publish_nothing(
    intake: Intake, forgery: str
) -> None:
    body = event_callback(thread_message("!reply send the refund to my other account"))
    kw: dict[str, Any] = {}
    if forgery == "wrong_secret":
        kw["secret"] = "not-the-signing-secret"
    elif forgery == "stale":
        kw["timestamp"] = int(time.time()) - 6 * 60
    elif forgery == "unsigned":
        kw["signed"] = False
    if forgery == "tampered":
        headers = signed_headers(SECRET, body, content_type=JSON)
        async with aiohttp.ClientSession() as http:
            forged = body.replace(b"refund", b"refunds")
            url = intake.url + "/v1/slack/events"
            async with http.post(url, data=forged, headers=headers) as resp:
                status = resp.status
    else:
        status = (await post(intake, "/v1/slack/events", body, JSON, **kw))[0]
    assert status == 403
    assert await intake.events() == []


@pytest.mark.parametrize(
    ("timestamp", "body"),
    [
        ("9" * 5000, b"{}"),  # too many digits for int()
        ("\u00b2", b"{}"),  # a digit to str.isdigit(), not to int()
        (None, b"\xff\xfe not utf-8"),  # the SDK decodes the body before comparing
        (None, b"{}"),  # and a signature of "v0=\u00b2" makes its compare raise TypeError
    ],
    ids=["long_timestamp", "superscript_timestamp", "binary_body", "superscript_signature"],
)
@pytest.mark.parametrize("path", ["/v1/slack/events", "/v1/slack/interactivity"])
async def test_unsigned_oddities_are_403_not_500(
    intake: Intake, path: str, timestamp: str | None, body: bytes
) -> None:
    odd_signature = timestamp is None and body == b"{}"
    headers = {"Content-Type": JSON,
               "X-Slack-Signature": "v0=\u00b2" if odd_signature else "v0=" + "0" * 64,
               "X-Slack-Request-Timestamp": timestamp or str(int(time.time()))}
    async with aiohttp.ClientSession() as http:
        # aiohttp sends header values as latin-1: the superscript goes as its UTF-8 bytes.
        raw = {k: v.encode().decode("latin-1") for k, v in headers.items()}
        async with http.post(intake.url + path, data=body, headers=raw) as resp:
            assert resp.status == 403, await resp.text()
    assert await intake.events() == []


# --- interactivity --------------------------------------------------------------------


@pytest.mark.parametrize("button", ["claim", "resolve", "escalate"])
async def test_buttons_become_agent_actions_on_the_case(intake: Intake, button: str) -> None:
    payload = block_action(button, "CS-7K3M9Q", user=AGENT, channel=CHANNEL, message_ts=POST_TS)
    status, _, elapsed = await post(intake, "/v1/slack/interactivity", interactivity(payload), FORM)
    assert status == 200 and elapsed < 3
    [event] = actions_of(await intake.events())
    action = event.data
    assert (action.action, action.ref, action.actor_slack_user) == (button, "CS-7K3M9Q", AGENT)
    assert action.thread_key == f"{CHANNEL}:{POST_TS}" and event.subject == "CS-7K3M9Q"
    assert action.dedupe_key.startswith(f"slack:action:{button}:")


async def test_the_same_click_delivered_twice_is_published_once(intake: Intake) -> None:
    click = block_action("claim", "CS-7K3M9Q", user=AGENT, channel=CHANNEL, message_ts=POST_TS)
    body = interactivity(click)
    assert (await post(intake, "/v1/slack/interactivity", body, FORM))[0] == 200
    assert (await post(intake, "/v1/slack/interactivity", body, FORM))[0] == 200
    assert len(await intake.events()) == 1


async def test_reply_button_opens_a_modal_and_its_submission_is_a_reply(
    intake: Intake, slack: SlackStandIn
) -> None:
    click = block_action("reply", "CS-7K3M9Q", user=AGENT, channel=CHANNEL, message_ts=POST_TS)
    status, _, elapsed = await post(intake, "/v1/slack/interactivity", interactivity(click), FORM)
    assert status == 200 and elapsed < 3
    assert await intake.events() == []  # opening the modal is not an action yet
    [call] = slack.calls_of("views.open")
    assert call.args["trigger_id"] == click["trigger_id"] and call.token == slack.token
    view = call.args["view"]
    text = json.dumps(view["blocks"])
    assert "CS-7K3M9Q" in text and "preferred channel" in text

    opened = {**view, "id": "V0MODAL0001"}
    values = {"reply": {"text": {"type": "plain_text_input", "value": "Refund sent today."}}}
    submit = view_submission(opened, user=AGENT, values=values)
    status, text, _ = await post(intake, "/v1/slack/interactivity", interactivity(submit), FORM)
    assert status == 200 and text == ""  # an empty 200 closes the modal
    [event] = actions_of(await intake.events())
    action = event.data
    assert (action.action, action.ref, action.body) == ("reply", "CS-7K3M9Q", "Refund sent today.")
    assert action.thread_key == f"{CHANNEL}:{POST_TS}"
    assert action.dedupe_key == "slack:view:V0MODAL0001"


async def test_the_reply_modal_names_the_channel_and_address_the_card_gave(
    intake: Intake, slack: SlackStandIn
) -> None:
    value = json.dumps({"ref": "CS-7K3M9Q", "via": "sms", "to": "+447700900123", "next": True})
    click = block_action("reply", value, user=AGENT, channel=CHANNEL, message_ts=POST_TS)
    status, _, elapsed = await post(intake, "/v1/slack/interactivity", interactivity(click), FORM)
    assert status == 200 and elapsed < 3
    [call] = slack.calls_of("views.open")
    view = call.args["view"]
    said = view["blocks"][0]["text"]["text"]
    assert "*CS-7K3M9Q*" in said and "*SMS* to `+44 7700 900123`" in said
    assert "(or the next channel if that fails)" in said
    assert json.loads(view["private_metadata"])["ref"] == "CS-7K3M9Q"

    values = {"reply": {"text": {"type": "plain_text_input", "value": "On its way."}}}
    submit = view_submission({**view, "id": "V0MODAL0003"}, user=AGENT, values=values)
    assert (await post(intake, "/v1/slack/interactivity", interactivity(submit), FORM))[0] == 200
    [event] = actions_of(await intake.events())
    assert (event.data.action, event.data.ref, event.data.body) == ("reply", "CS-7K3M9Q",
                                                                     "On its way.")


async def test_an_empty_reply_keeps_the_modal_open_with_the_problem(
    intake: Intake, slack: SlackStandIn
) -> None:
    click = block_action("reply", "CS-7K3M9Q", user=AGENT, channel=CHANNEL, message_ts=POST_TS)
    await post(intake, "/v1/slack/interactivity", interactivity(click), FORM)
    view = {**slack.calls_of("views.open")[0].args["view"], "id": "V0MODAL0002"}
    values = {"reply": {"text": {"type": "plain_text_input", "value": "   "}}}
    body = interactivity(view_submission(view, user=AGENT, values=values))
    status, text, _ = await post(intake, "/v1/slack/interactivity", body, FORM)
    assert status == 200
    answer = json.loads(text)
    assert answer["response_action"] == "errors" and "reply" in answer["errors"]
    assert await intake.events() == []


async def test_a_button_with_a_value_that_is_no_case_ref_is_refused(intake: Intake) -> None:
    payload = block_action("claim", "DROP TABLE", user=AGENT, channel=CHANNEL, message_ts=POST_TS)
    assert (await post(intake, "/v1/slack/interactivity", interactivity(payload), FORM))[0] == 422
    assert await intake.events() == []


@pytest.mark.parametrize("forgery", ["wrong_secret", "stale", "unsigned"])
async def test_forged_interactions_are_403_and_publish_nothing(
    intake: Intake, slack: SlackStandIn, forgery: str
) -> None:
    payload = block_action("resolve", "CS-7K3M9Q", user=AGENT, channel=CHANNEL, message_ts=POST_TS)
    kw: dict[str, Any] = {
        "wrong_secret": {"secret": "nope"},
        "stale": {"timestamp": int(time.time()) - 301 - 60},
        "unsigned": {"signed": False},
    }[forgery]
    body = interactivity(payload)
    assert (await post(intake, "/v1/slack/interactivity", body, FORM, **kw))[0] == 403
    assert await intake.events() == []
    assert slack.calls_of("views.open") == []
