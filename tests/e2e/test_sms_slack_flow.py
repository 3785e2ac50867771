"""End to end, four real processes, Twilio and Slack as local stand-ins speaking their wire
formats (the official SDKs inside the services are pointed at them): a customer texts, the
team sees the case in Slack, an agent claims it and replies from the thread, the customer
gets the reply by SMS, Twilio's delivery report lands on the timeline and in the thread, the
next SMS joins the same case, and after STOP the next update goes out by email instead."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from tests.standins.slack import SlackStandIn, block_action, event_callback, interactivity
from tests.standins.slack import signed_headers
from tests.standins.twilio import TwilioStandIn, sid

from casegate_case_store.store.users import Role, create_user
from casegate_shared.events import CASE_REF_PATTERN

from .conftest import ROOT, Inbox, Stack, stack_env, start_stack, stop_stack, wait_for

CUSTOMER = "+15550007777"
OUR_NUMBER = "+15550000000"
AGENT = "U0AGENT42"
CHANNEL = "C0SUPPORT"
SIGNING_SECRET = "e2e-slack-signing-secret"


@pytest.fixture(scope="module")
async def twilio() -> AsyncIterator[TwilioStandIn]:
    async with TwilioStandIn() as server:
        yield server


@pytest.fixture(scope="module")
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    amqp_url: str, database_url: str, smtp_server: tuple[Inbox, int], twilio: TwilioStandIn,
    slack: SlackStandIn, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    inbox, port = smtp_server
    tmp = tmp_path_factory.mktemp("sms-slack")
    policy = (ROOT / "config/notify.yaml").read_text().replace(
        "teams: {}", f"teams:\n  support:\n    slack_channel: {CHANNEL}"
    )
    (tmp / "notify.yaml").write_text(policy)
    env = stack_env(amqp_url, database_url, port, tmp)
    intake = f"http://127.0.0.1:{env['CASEGATE_INTAKE_PORT']}"
    env.update({
        "CASEGATE_NOTIFY_POLICY_FILE": str(tmp / "notify.yaml"),
        "CASEGATE_PUBLIC_URL": intake,
        "CASEGATE_TWILIO_ACCOUNT_SID": twilio.account_sid,
        "CASEGATE_TWILIO_AUTH_TOKEN": twilio.auth_token,
        "CASEGATE_TWILIO_FROM": OUR_NUMBER,
        "CASEGATE_TWILIO_API_BASE": twilio.api_base,
        "CASEGATE_TWILIO_RATE_PER_S": "20",
        "CASEGATE_SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "CASEGATE_SLACK_BOT_TOKEN": slack.token,
        "CASEGATE_SLACK_BOT_USER_ID": slack.bot_user_id,
        "CASEGATE_SLACK_API_BASE": slack.api_base,
        "CASEGATE_SLACK_RATE_PER_S": "20",
        "CASEGATE_BLOB_DIR": str(tmp / "blobs"),
    })
    s = start_stack(env, inbox)
    yield s
    if s.proc.poll() is None:
        stop_stack(s)


async def text_us(stack: Stack, twilio: TwilioStandIn, body: str) -> None:
    url = stack.url("intake", "/v1/twilio/sms")
    params = {"MessageSid": sid("SM"), "AccountSid": twilio.account_sid, "From": CUSTOMER,
              "To": OUR_NUMBER, "Body": body, "NumMedia": "0"}
    status, _, answer = await twilio.post_signed(url, params)
    assert status == 200, answer


async def slack_post(stack: Stack, path: str, body: bytes, content_type: str) -> None:
    headers = signed_headers(SIGNING_SECRET, body, content_type=content_type)
    async with aiohttp.ClientSession() as http:
        async with http.post(stack.url("intake", path), data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()


def sms_to_customer(twilio: TwilioStandIn) -> list[dict[str, Any]]:
    return [m for m in twilio.messages.values() if m["to"] == CUSTOMER]


async def test_sms_to_slack_claim_reply_delivery_stop_and_fallback(
    stack: Stack, twilio: TwilioStandIn, slack: SlackStandIn, database_url: str
) -> None:
    db = await asyncpg.connect(database_url)
    try:
        await create_user(db, "agent42", "Agent", [Role.RESOLVER], teams=["support"],
                          slack_user=AGENT)
        await text_us(stack, twilio, "My router keeps dropping the connection")

        # The routed case appears in the team's channel as a card.
        async def card() -> tuple[str, str] | None:
            for (channel, ts), message in slack.posts.items():
                found = re.search(CASE_REF_PATTERN, json.dumps(message))
                if channel == CHANNEL and found and "thread_ts" not in message:
                    return found.group(0), ts
            return None

        ref, ts = await wait_for(card)
        case_id = await db.fetchval("SELECT id FROM cases WHERE ref = $1", ref)
        # The customer got their acknowledgement by SMS, on the channel they wrote from.
        async def acknowledged() -> bool:
            return bool(sms_to_customer(twilio))

        await wait_for(acknowledged)

        # Claim from Slack.
        click = block_action("claim", ref, user=AGENT, channel=CHANNEL, message_ts=ts)
        await slack_post(stack, "/v1/slack/interactivity", interactivity(click),
                         "application/x-www-form-urlencoded")

        async def claimed() -> bool:
            return await db.fetchval(
                "SELECT u.handle FROM cases c JOIN users u ON u.id = c.assignee_id "
                "WHERE c.id = $1", case_id) == "agent42"

        await wait_for(claimed)

        async def thread_key() -> str | None:
            value: str | None = await db.fetchval(
                "SELECT slack_thread FROM cases WHERE id = $1", case_id)
            return value

        assert await wait_for(thread_key) == f"{CHANNEL}:{ts}"

        # The card in the channel is redrawn in place: it now shows who has the case.
        async def card_shows_assignee() -> bool:
            return "agent42" in json.dumps(slack.posts[(CHANNEL, ts)].get("blocks", []))

        await wait_for(card_shows_assignee)
        # Its Reply button says where a reply goes: by SMS, to the number they wrote from.
        [reply_button] = [e for b in slack.posts[(CHANNEL, ts)]["blocks"] if b["type"] == "actions"
                          for e in b["elements"] if e["action_id"] == "reply"]
        assert json.loads(reply_button["value"])["via"] == "sms"
        assert json.loads(reply_button["value"])["to"] == CUSTOMER

        # A thread message is an internal note; with the prefix it is a reply by SMS.
        for text in ("checking the line tests", "!reply A technician is on the way"):
            event = {"type": "message", "channel": CHANNEL, "user": AGENT, "text": text,
                     "ts": f"{time.time():.6f}", "thread_ts": ts}
            await slack_post(stack, "/v1/slack/events", event_callback(event), "application/json")

        async def reply_sms() -> dict[str, Any] | None:
            return next((m for m in sms_to_customer(twilio)
                         if "technician" in m["body"]), None)

        reply = await wait_for(reply_sms)

        # ... and the thread says it went out, by SMS, to whom (masked).
        async def echoed() -> bool:
            return any(m.get("thread_ts") == ts and "Reply sent by SMS" in json.dumps(m)
                       for (channel, _), m in slack.posts.items() if channel == CHANNEL)

        await wait_for(echoed)
        assert not any("line tests" in m["body"] for m in sms_to_customer(twilio))

        # Twilio reports delivery; it lands on the case's timeline.
        assert await twilio.report_status(reply["sid"], "delivered") in (200, 204)

        async def delivered() -> bool:
            return bool(await db.fetchval(
                "SELECT count(*) FROM timeline_entries WHERE case_id = $1 AND kind = 'delivery' "
                "AND body LIKE '%delivered%'", case_id))

        await wait_for(delivered)

        # ... and in the thread, under the reply it reports on.
        async def delivery_echoed() -> bool:
            return any(m.get("thread_ts") == ts and "Reply delivered by SMS" in json.dumps(m)
                       for (channel, _), m in slack.posts.items() if channel == CHANNEL)

        await wait_for(delivery_echoed)

        # The same number texts again: same case.
        await text_us(stack, twilio, "Still down this morning")

        async def joined() -> bool:
            return await db.fetchval(
                "SELECT count(*) FROM timeline_entries WHERE case_id = $1 AND kind = 'message_in'",
                case_id) == 2

        await wait_for(joined)

        # ... and the customer's new message is in the case's thread, for the team to read.
        async def in_thread() -> bool:
            return any(m.get("thread_ts") == ts and "Still down" in json.dumps(m)
                       for (channel, _), m in slack.posts.items() if channel == CHANNEL)

        await wait_for(in_thread)
        customer = await db.fetchval("SELECT customer_id FROM cases WHERE id = $1", case_id)
        assert await db.fetchval("SELECT count(*) FROM cases WHERE customer_id = $1",
                                 customer) == 1

        # STOP: no more SMS; the next update goes to their email instead.
        await db.execute("INSERT INTO customer_identities (customer_id, kind, value) "
                         "VALUES ($1, 'email', 'router.owner@example.com')", customer)
        await text_us(stack, twilio, "STOP")

        async def opted_out() -> bool:
            return bool(await db.fetchval(
                "SELECT opted_out_at IS NOT NULL FROM customer_identities WHERE value = $1",
                CUSTOMER))

        await wait_for(opted_out)
        before = len(sms_to_customer(twilio))
        event = {"type": "message", "channel": CHANNEL, "user": AGENT,
                 "text": "!reply The technician fixed the line", "ts": f"{time.time():.6f}",
                 "thread_ts": ts}
        await slack_post(stack, "/v1/slack/events", event_callback(event), "application/json")

        async def emailed() -> bool:
            return any("fixed the line" in _text(m) for m in stack.smtp.messages
                       if "router.owner@example.com" in str(m["To"]))

        await wait_for(emailed)
        assert len(sms_to_customer(twilio)) == before  # nothing more by SMS

        async def says_why() -> str | None:
            found: str | None = await db.fetchval(
                "SELECT body FROM timeline_entries WHERE case_id = $1 AND kind = 'notification' "
                "AND body LIKE '%by email%instead of SMS%'", case_id)
            return found

        try:
            assert "agent_reply sent by email" in await wait_for(says_why, timeout=10)
        except AssertionError:
            rows = await db.fetch("SELECT body FROM timeline_entries WHERE case_id = $1 "
                                  "AND kind = 'notification' ORDER BY id", case_id)
            raise AssertionError([r["body"] for r in rows]) from None
    finally:
        await db.close()


def _text(message: Any) -> str:
    if message.is_multipart():
        return "".join(_text(p) for p in message.get_payload())
    payload = message.get_payload(decode=True)
    return payload.decode(errors="replace") if payload else ""
