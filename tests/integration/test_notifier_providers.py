"""The notifier with its real provider adapters pointed at local stand-ins that speak Twilio's and
Slack's wire formats (the official SDKs underneath): email refused for good falls back to an
SMS through Twilio and an unsubscribed number falls back to email, each outcome naming the
channel it replaced; a new case is posted to its team's Slack channel as a card with buttons."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from casegate_notifier.domain.samples import sample_snapshot
from casegate_shared.bus import Bus
from casegate_shared.events import CaseChange, CaseRouted, Channel, Priority, envelope, new_case_ref
from casegate_shared.settings import BusSettings
from tests.conftest import eventually, free_port
from tests.integration.test_notifier_delivery import ROOT, notifier, outcomes, settings_for, updated
from tests.integration.test_notifier_smtp import Mailbox, smtp_server
from tests.standins.slack import SlackStandIn
from tests.standins.twilio import TwilioStandIn


def twilio_settings(twilio: TwilioStandIn) -> dict[str, Any]:
    return {
        "twilio_account_sid": twilio.account_sid,
        "twilio_auth_token": twilio.auth_token,
        "twilio_from": "+15005550006",
        "twilio_api_base": twilio.api_base,
        "twilio_rate_per_s": 50.0,
    }


async def test_email_refused_for_good_goes_by_twilio_sms_instead(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    mailbox, port = Mailbox(rcpt_reply="550 5.1.1 no such user"), free_port()
    event = updated(CaseChange.STATUS_CHANGED, status="resolved")
    async with TwilioStandIn() as twilio, smtp_server(mailbox, port):
        settings = settings_for(bus_settings, redis_url, smtp_port=port, **twilio_settings(twilio))
        async with outcomes(bus_settings) as seen, notifier(settings):
            await publisher.publish(event)

            async def answered() -> bool:
                return any(o["data"]["recipient"] == "+14155550100" for o in seen)

            await eventually(answered)
            await asyncio.sleep(0.3)
        [created] = twilio.created()
    assert created.form["To"] == "+14155550100" and created.form["From"] == "+15005550006"
    assert f"{event.data.ref} is resolved" in created.form["Body"]
    assert mailbox.rcpt_attempts == 1 and mailbox.received == []
    [out] = [o for o in seen if o["data"]["recipient"] == "+14155550100"]
    data = out["data"]
    assert out["type"] == "notification.sent" and data["provider"] == "twilio"
    assert data["channel"] == "sms" and data["fallback_from"] == "email" and "550" in data["reason"]
    assert data["provider_message_id"].startswith("SM")


async def test_an_unsubscribed_number_falls_back_to_email(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    mailbox, port = Mailbox(), free_port()
    event = updated(CaseChange.STATUS_CHANGED, status="resolved", preferred_channel=Channel.SMS)
    async with TwilioStandIn() as twilio, smtp_server(mailbox, port):
        twilio.fail(400, code=21610)
        settings = settings_for(bus_settings, redis_url, smtp_port=port, **twilio_settings(twilio))
        async with outcomes(bus_settings) as seen, notifier(settings):
            await publisher.publish(event)

            async def answered() -> bool:
                return any(o["data"]["recipient"] == "ann@example.com" for o in seen)

            await eventually(answered)
            await asyncio.sleep(0.3)
        assert len(twilio.created()) == 1  # refused once, never tried again
    [(rcpt_tos, _)] = mailbox.received
    assert rcpt_tos == ["ann@example.com"]
    [out] = [o for o in seen if o["data"]["recipient"] == "ann@example.com"]
    assert out["type"] == "notification.sent"
    assert out["data"]["fallback_from"] == "sms" and "21610" in out["data"]["reason"]


async def test_a_new_case_is_posted_to_its_teams_slack_channel_as_a_card(
    bus_settings: BusSettings, redis_url: str, publisher: Bus, tmp_path: Path
) -> None:
    policy = tmp_path / "notify.yaml"
    shipped = (ROOT / "config/notify.yaml").read_text()
    policy.write_text(shipped.replace("teams: {}", "teams:\n  billing: {slack_channel: C0BILLING}"))
    ref = new_case_ref()
    case = sample_snapshot(ref=ref, subject="Charged twice <!channel>", status="open")
    routed = envelope(
        CaseRouted(ref=ref, team="billing", priority=Priority.P2, rule="billing", case=case),
        source="case-store", subject=ref,
    )
    warning = updated(CaseChange.SLA_WARNING, ref=ref)
    async with SlackStandIn() as slack:
        settings = settings_for(
            bus_settings, redis_url, notify_policy_file=policy,
            slack_bot_token=slack.token, slack_api_base=slack.api_base, slack_rate_per_s=50.0,
        )
        async with outcomes(bus_settings) as seen, notifier(settings):
            await publisher.publish(routed)
            await publisher.publish(warning)

            async def both() -> bool:
                return len(seen) >= 2

            await eventually(both)
            await asyncio.sleep(0.3)
        posts = slack.calls_of("chat.postMessage")
    by_channel = {p.args["channel"]: p.args for p in posts}
    assert set(by_channel) == {"C0BILLING", "U0BOB"}
    card = by_channel["C0BILLING"]
    blocks = card["blocks"] if isinstance(card["blocks"], list) else json.loads(card["blocks"])
    actions = [b for b in blocks if b["type"] == "actions"]
    buttons = [e["action_id"] for e in actions[0]["elements"]]
    assert buttons == ["claim", "resolve", "escalate", "reply"]
    assert "<!channel>" not in str(blocks[1:]) and "<!channel>" not in card["text"]
    team_out = next(o for o in seen if o["data"]["recipient"] == "C0BILLING")
    assert team_out["data"]["provider"] == "slack" and team_out["data"]["template"] == "case_routed"
    assert team_out["data"]["provider_message_id"].startswith("C0BILLING:")  # the case's thread
