"""The case's Slack thread from the notifier's side, against the real RabbitMQ and Redis with the
Slack and Twilio stand-ins: a reply sent by SMS and then Twilio's delivery report, each said
once in the thread however often the report comes; a bounce said there too; and the card's
Reply button naming where a reply would go, first when the card is posted, then after the
bounce changed it; and an older change arriving late, which never draws over a newer one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from casegate_notifier.domain.samples import sample_contact, sample_snapshot
from casegate_notifier.settings import Settings
from casegate_shared.bus import Bus
from casegate_shared.events import (
    CaseChange,
    CaseRouted,
    CaseUpdated,
    Channel,
    DeliveryUpdated,
    Priority,
    envelope,
    new_case_ref,
)
from casegate_shared.settings import BusSettings
from tests.conftest import eventually
from tests.integration.test_notifier_delivery import ROOT, notifier, outcomes, settings_for
from tests.integration.test_notifier_providers import twilio_settings
from tests.standins.slack import SlackStandIn
from tests.standins.twilio import TwilioStandIn

TEAM_CHANNEL = "C0BILLING"
CARD_TS = "1700000000.000100"
PUBLIC = "https://casegate.example.com"


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as standin:
        standin.posts[(TEAM_CHANNEL, CARD_TS)] = {"type": "message", "text": "card", "ts": CARD_TS}
        yield standin


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioStandIn]:
    async with TwilioStandIn() as standin:
        yield standin


@pytest.fixture
def settings(
    bus_settings: BusSettings, redis_url: str, slack: SlackStandIn, twilio: TwilioStandIn,
    tmp_path: Path,
) -> Settings:
    policy = tmp_path / "notify.yaml"
    shipped = (ROOT / "config/notify.yaml").read_text()
    team = f"teams:\n  billing: {{slack_channel: {TEAM_CHANNEL}}}"
    policy.write_text(shipped.replace("teams: {}", team))
    return settings_for(
        bus_settings, redis_url, notify_policy_file=policy, public_url=PUBLIC,
        slack_bot_token=slack.token, slack_api_base=slack.api_base, slack_rate_per_s=50.0,
        **twilio_settings(twilio),
    )


def in_thread(slack: SlackStandIn, ts: str, words: str) -> list[dict[str, Any]]:
    return [m for (channel, _), m in list(slack.posts.items())
            if channel == TEAM_CHANNEL and m.get("thread_ts") == ts and words in json.dumps(m)]


def reply_button_value(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    [actions] = [b for b in blocks if b["type"] == "actions"]
    [reply] = [e for e in actions["elements"] if e["action_id"] == "reply"]
    doc: dict[str, Any] = json.loads(reply["value"])
    return doc


@asynccontextmanager
async def replied_by_sms(
    settings: Settings, publisher: Bus, slack: SlackStandIn, twilio: TwilioStandIn
) -> AsyncIterator[tuple[str, str, str]]:
    """An agent's reply on a case with a thread, sent by SMS and echoed as sent; yields the
    case ref, the notification key and the message SID Twilio's report will name."""
    ref = new_case_ref()
    case = sample_snapshot(ref=ref, slack_thread=f"{TEAM_CHANNEL}:{CARD_TS}",
                           customer=sample_contact(preferred_channel=Channel.SMS))
    reply = CaseUpdated(change=CaseChange.REPLY_ADDED, ref=ref, actor="bob", case=case,
                        body="A courier picks it up tomorrow.")
    async with outcomes(settings), notifier(settings):
        await publisher.publish(envelope(reply, source="case-store", subject=ref,
                                         routing_key="case.reply_added"))

        async def echoed() -> bool:
            return bool(in_thread(slack, CARD_TS, "Reply sent by SMS to +1***0100"))

        await eventually(echoed)
        [created] = twilio.created()
        query = parse_qs(urlsplit(created.form["StatusCallback"]).query)
        assert query["ref"] == [ref]
        [sid] = [s for s, m in twilio.messages.items() if m["to"] == "+14155550100"]
        yield ref, query["key"][0], sid


def report(ref: str, key: str, sid: str, status: str, code: str | None = None) -> Any:
    update = DeliveryUpdated(ref=ref, notification_key=key, provider="twilio",
                             provider_message_id=sid, status=status, error_code=code)
    return envelope(update, source="intake", subject=ref)


@pytest.mark.parametrize(
    ("status", "code", "said"),
    [
        ("delivered", None, "Reply delivered by SMS to +1***0100"),
        ("undelivered", "30003",
         "Reply not delivered by SMS to +1***0100: twilio reports it undelivered (error 30003)"),
    ],
)
async def test_twilios_report_on_a_reply_is_said_once_in_the_thread(
    settings: Settings, publisher: Bus, slack: SlackStandIn, twilio: TwilioStandIn,
    status: str, code: str | None, said: str,
) -> None:
    async with replied_by_sms(settings, publisher, slack, twilio) as (ref, key, sid):
        final = report(ref, key, sid, status, code)
        await publisher.publish(report(ref, key, sid, "sent"))  # says nothing new
        await publisher.publish(final)
        await publisher.publish(final)  # the bus delivering it again
        await publisher.publish(report(ref, key, sid, status, code))  # Twilio calling twice
        other = report(ref, f"{key}-other", sid, status, code)  # a message that was no reply
        await publisher.publish(other)

        async def told() -> bool:
            return bool(in_thread(slack, CARD_TS, said))

        await eventually(told)
        await asyncio.sleep(0.5)  # room for a second post, were there one
    assert len(in_thread(slack, CARD_TS, said)) == 1
    assert len(in_thread(slack, CARD_TS, "Reply ")) == 2  # sent, then the report


async def test_a_bounce_is_said_in_the_thread_and_the_card_then_points_the_reply_elsewhere(
    settings: Settings, publisher: Bus, slack: SlackStandIn
) -> None:
    ref = new_case_ref()
    case = sample_snapshot(ref=ref)
    routed = CaseRouted(ref=ref, team="billing", priority=Priority.P2, rule="billing", case=case)
    async with outcomes(settings), notifier(settings):
        await publisher.publish(envelope(routed, source="case-store", subject=ref))

        async def card() -> tuple[str, dict[str, Any]] | None:
            for (channel, ts), m in list(slack.posts.items()):
                if channel == TEAM_CHANNEL and ref in json.dumps(m) and "thread_ts" not in m:
                    return ts, m
            return None

        await eventually(lambda: _some(card))
        found = await card()
        assert found is not None
        ts, posted = found
        # Ann prefers email and falls back to SMS: so says the card's Reply button.
        assert reply_button_value(posted["blocks"]) == {
            "ref": ref, "via": "email", "to": "ann@example.com", "next": True}

        bounced_case = sample_snapshot(ref=ref, slack_thread=f"{TEAM_CHANNEL}:{ts}",
                                       customer=sample_contact(bouncing=["ann@example.com"]))
        bounce = CaseUpdated(change=CaseChange.BOUNCED, ref=ref, actor="mailer",
                             case=bounced_case, reply_to="ann@example.com")
        event = envelope(bounce, source="case-store", subject=ref, routing_key="case.bounced")
        await publisher.publish(event)
        await publisher.publish(event)  # redelivered: still one post

        async def redrawn() -> bool:
            blocks = slack.posts[(TEAM_CHANNEL, ts)]["blocks"]
            return bool(in_thread(slack, ts, "Email to a***@example.com bounced")) and (
                reply_button_value(blocks).get("via") == "sms")

        await eventually(redrawn)
        await asyncio.sleep(0.5)
    assert reply_button_value(slack.posts[(TEAM_CHANNEL, ts)]["blocks"]) == {
        "ref": ref, "via": "sms", "to": "+14155550100", "next": False}
    assert len(in_thread(slack, ts, "bounced")) == 1


async def test_a_stop_keyword_redraws_the_card_so_its_reply_no_longer_goes_by_sms(
    settings: Settings, publisher: Bus, slack: SlackStandIn
) -> None:
    ref = new_case_ref()
    texts = sample_contact(preferred_channel=Channel.SMS, fallback=[Channel.SMS, Channel.EMAIL])
    case = sample_snapshot(ref=ref, channel=Channel.SMS, customer=texts,
                           slack_thread=f"{TEAM_CHANNEL}:{CARD_TS}")
    stopped = sample_snapshot(
        ref=ref, channel=Channel.SMS, slack_thread=f"{TEAM_CHANNEL}:{CARD_TS}",
        customer=texts.model_copy(update={"opted_out": [Channel.SMS]}))
    async with outcomes(settings), notifier(settings):
        changes = ((case, CaseChange.ASSIGNED), (stopped, CaseChange.CONTACT_CHANGED))
        for snapshot, change in changes:
            update = CaseUpdated(change=change, ref=ref, actor="customer", case=snapshot)
            await publisher.publish(envelope(update, source="case-store", subject=ref,
                                             routing_key=f"case.{change.value}"))
            want = "sms" if change is CaseChange.ASSIGNED else "email"

            async def redrawn(want: str = want) -> bool:
                blocks = slack.posts[(TEAM_CHANNEL, CARD_TS)].get("blocks")
                return bool(blocks) and reply_button_value(blocks).get("via") == want

            await eventually(redrawn)
    assert reply_button_value(slack.posts[(TEAM_CHANNEL, CARD_TS)]["blocks"]) == {
        "ref": ref, "via": "email", "to": "ann@example.com", "next": False}
    assert not in_thread(slack, CARD_TS, "")  # a redraw, nothing said in the thread


async def _some(check: Any) -> bool:
    return await check() is not None


async def test_an_older_change_arriving_late_is_said_in_the_thread_but_leaves_the_card_newer(
    settings: Settings, publisher: Bus, slack: SlackStandIn
) -> None:
    """A stop keyword (timeline entry 20) is drawn first; a customer's message written before
    it (entry 10, its snapshot still texting) comes later, as a retry would: it is posted in
    the thread, and the card's Reply still goes by email."""
    ref = new_case_ref()
    thread = f"{TEAM_CHANNEL}:{CARD_TS}"
    texts = sample_contact(preferred_channel=Channel.SMS, fallback=[Channel.SMS, Channel.EMAIL])
    texting = sample_snapshot(ref=ref, channel=Channel.SMS, customer=texts, slack_thread=thread)
    stopped = sample_snapshot(ref=ref, channel=Channel.SMS, slack_thread=thread,
                              customer=texts.model_copy(update={"opted_out": [Channel.SMS]}))
    newer = CaseUpdated(change=CaseChange.CONTACT_CHANGED, ref=ref, actor="customer",
                        case=stopped, entry_id=20)
    older = CaseUpdated(change=CaseChange.MESSAGE_ADDED, ref=ref, actor="customer",
                        case=texting, entry_id=10, body="Any news on my refund?")

    def via() -> str | None:
        blocks = slack.posts[(TEAM_CHANNEL, CARD_TS)].get("blocks")
        return reply_button_value(blocks).get("via") if blocks else None

    async with outcomes(settings), notifier(settings):
        await publisher.publish(envelope(newer, source="case-store", subject=ref,
                                         routing_key="case.contact_changed"))

        async def drawn() -> bool:
            return via() == "email"

        await eventually(drawn)
        await publisher.publish(envelope(older, source="case-store", subject=ref,
                                         routing_key="case.message_added"))

        async def said() -> bool:
            return bool(in_thread(slack, CARD_TS, "Any news on my refund?"))

        await eventually(said)
        await asyncio.sleep(0.5)  # room for the older redraw, were there one
    assert reply_button_value(slack.posts[(TEAM_CHANNEL, CARD_TS)]["blocks"]) == {
        "ref": ref, "via": "email", "to": "ann@example.com", "next": False}
