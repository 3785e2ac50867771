"""Which adapter carries each medium, from the settings: SMTP or the sandbox for email, Twilio
or the sandbox for SMS, Slack or the sandbox for Slack, and the signed webhook sender.

Twilio and Slack are used when their credentials are set; without them those media go to the
sandbox, like email without an SMTP URL. The Twilio adapter takes its own message type, so a
small bridge hands it ours.
"""

from __future__ import annotations

import contextlib
from typing import Any

from redis.asyncio import Redis

from .adapters.sandbox import Sandbox
from .adapters.smtp import SmtpSender
from .adapters.webhook import WebhookSender
from .domain.delivery import Medium, Outbound, Provider, SendResult
from .domain.policy import Policy
from .settings import Settings


class SmsBridge:
    """The Twilio adapter is given an `OutboundSms`; the text is the rendered SMS template."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = str(inner.name)

    async def send(self, outbound: Outbound) -> SendResult:
        from .domain.sms import OutboundSms

        sms = OutboundSms(
            to=outbound.to,
            body=outbound.text,
            case_ref=outbound.case_ref,
            dedupe_key=outbound.dedupe_key,
        )
        result: SendResult = await self._inner.send(sms)
        return result


async def build_providers(
    settings: Settings,
    redis: Redis,
    sandbox: Sandbox,
    policy: Policy,
    stack: contextlib.AsyncExitStack,
) -> dict[Medium, Provider]:
    """One provider per medium; whatever needs closing is entered into `stack`."""
    s = settings
    providers: dict[Medium, Provider] = {
        Medium.EMAIL: (
            SmtpSender(s.smtp_url, s.smtp_from, s.smtp_timeout_s, s.smtp_reply_to)
            if s.smtp_url else sandbox
        ),
        Medium.SMS: sandbox,
        Medium.SLACK: sandbox,
    }
    max_wait_s = max(1.0, s.send_lease_s / 6)  # a rate-limited send still ends inside its lease
    if s.twilio_account_sid and s.twilio_auth_token and s.twilio_from:
        from .adapters.ratelimit import Rate, RateLimiter
        from .adapters.twilio_sms import TwilioSms, api_client

        client = await stack.enter_async_context(api_client(
            s.twilio_account_sid, s.twilio_auth_token.get_secret_value(), s.twilio_api_base,
            s.provider_timeout_s,
        ))
        twilio = TwilioSms(
            client, redis, RateLimiter(redis, s.redis_prefix, max_wait_s),
            from_number=s.twilio_from,
            rate=Rate(s.twilio_rate_per_s),
            prefix=s.redis_prefix,
            status_callback_base=s.public_url,
        )
        providers[Medium.SMS] = SmsBridge(twilio)
    if s.slack_bot_token is not None:
        from .adapters.ratelimit import Rate, RateLimiter
        from .adapters.slack import SlackPoster, web_client

        slack = await stack.enter_async_context(web_client(
            s.slack_bot_token.get_secret_value(), s.slack_api_base,
            timeout_s=s.provider_timeout_s, max_wait_s=max_wait_s,
        ))
        providers[Medium.SLACK] = SlackPoster(
            slack, RateLimiter(redis, s.redis_prefix, max_wait_s), Rate(s.slack_rate_per_s)
        )
    subscribers: dict[str, tuple[str, bytes]] = {}
    for name, hook in policy.webhooks.items():
        secret = s.webhook_secrets.get(name)
        if secret is None:
            raise ValueError(f"webhook {name!r} has no secret in CASEGATE_WEBHOOK_SECRETS")
        subscribers[name] = (hook.url, secret.get_secret_value().encode())
    webhooks = WebhookSender(
        subscribers,
        allow_http=s.webhook_allow_http,
        allow_private=s.webhook_allow_private,
        timeout_s=s.webhook_timeout_s,
    )
    stack.push_async_callback(webhooks.close)
    providers[Medium.WEBHOOK] = webhooks
    return providers
