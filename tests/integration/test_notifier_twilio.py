"""The Twilio SMS adapter with the official client pointed at the Twilio stand-in, and its rate
limiter in the real Redis: what goes over the wire, how each kind of failure is reported, a
429 honoured, a timeout reconciled instead of resent, and one rate shared by three replicas."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import pytest
from redis.asyncio import Redis

from casegate_notifier.adapters.ratelimit import Rate, RateLimiter
from casegate_notifier.adapters.twilio_sms import TwilioSms, api_client
from casegate_notifier.domain.delivery import Outbound
from casegate_notifier.domain.sms import OutboundSms
from tests.conftest import eventually, free_port
from tests.standins.twilio import TwilioStandIn

FROM = "+14155550199"
PUBLIC = "https://casegate.example.com"

Factory = Callable[..., AbstractAsyncContextManager[TwilioSms]]


def sms(n: int = 0, body: str = "Your case CS-7K3M9Q has been resolved.") -> OutboundSms:
    to = f"+1415555{n:04d}"
    return OutboundSms(to=to, body=body, case_ref="CS-7K3M9Q", dedupe_key=f"ev{n}/sms/{to}")


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioStandIn]:
    async with TwilioStandIn() as standin:
        yield standin


@pytest.fixture
def adapter(twilio: TwilioStandIn, redis_url: str, key_prefix: str) -> Factory:
    """A factory of adapters sharing Redis (each with its own connection, as replicas have)."""

    @asynccontextmanager
    async def make(
        *, per_second: float = 50.0, max_wait_s: float = 5.0, timeout_s: float = 5.0,
        api_base: str | None = None,
    ) -> AsyncIterator[TwilioSms]:
        redis = Redis.from_url(redis_url, decode_responses=True)
        base = api_base or twilio.api_base
        try:
            async with api_client(twilio.account_sid, twilio.auth_token, base, timeout_s) as client:
                yield TwilioSms(
                    client,
                    redis,
                    RateLimiter(redis, key_prefix, max_wait_s=max_wait_s),
                    from_number=FROM,
                    rate=Rate(per_second),
                    prefix=key_prefix,
                    status_callback_base=PUBLIC,
                )
        finally:
            await redis.aclose()

    return make


async def test_an_sms_goes_out_as_twilio_expects_it(
    twilio: TwilioStandIn, adapter: Factory
) -> None:
    async with adapter() as sender:
        result = await sender.send(sms())
    assert result.ok and result.provider_message_id in twilio.messages
    [request] = twilio.created()
    assert request.headers["Authorization"].startswith("Basic ")
    form = request.form
    assert (form["To"], form["From"], form["Body"]) == (
        "+14155550000", FROM, "Your case CS-7K3M9Q has been resolved.")
    callback = urlsplit(form["StatusCallback"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == f"{PUBLIC}/v1/twilio/status"
    assert parse_qs(callback.query) == {"ref": ["CS-7K3M9Q"], "key": ["ev0/sms/+14155550000"]}


async def test_the_provider_contract_takes_an_outbound(
    twilio: TwilioStandIn, adapter: Factory
) -> None:
    outbound = Outbound(
        to="+14155550001", subject="", text="Hello", message_id="m", case_ref="CS-7K3M9Q",
        dedupe_key="ev/sms/+14155550001",
    )
    async with adapter() as sender:
        assert (await sender.send(outbound)).ok
    assert twilio.created()[0].form["Body"] == "Hello"


async def test_server_errors_for_a_while_are_temporary_then_it_is_sent_once(
    twilio: TwilioStandIn, adapter: Factory
) -> None:
    twilio.fail(503, times=None)
    async with adapter() as sender:
        for _ in range(3):
            result = await sender.send(sms())
            assert not result.ok and result.temporary and "503" in (result.reason or "")
        twilio.recover()
        result = await sender.send(sms())
    assert result.ok
    assert len(twilio.messages) == 1 and len(twilio.created()) == 4


@pytest.mark.parametrize("code", [21610, 21211])
async def test_recipient_errors_are_permanent(
    twilio: TwilioStandIn, adapter: Factory, code: int
) -> None:
    twilio.fail(400, code=code)
    async with adapter() as sender:
        result = await sender.send(sms())
    assert not result.ok and not result.temporary and str(code) in (result.reason or "")
    assert twilio.messages == {}


async def test_a_short_retry_after_is_honoured_and_the_sms_sent(
    twilio: TwilioStandIn, adapter: Factory
) -> None:
    twilio.fail(429, retry_after=1)
    async with adapter() as sender:
        result = await sender.send(sms())
    assert result.ok
    first, second = twilio.created()
    assert second.at - first.at >= 0.95  # waited as Twilio asked before trying again
    assert len(twilio.messages) == 1


async def test_a_long_retry_after_pauses_the_number_for_every_replica(
    twilio: TwilioStandIn, adapter: Factory
) -> None:
    twilio.fail(429, retry_after=30)
    async with adapter(max_wait_s=2) as one, adapter(max_wait_s=2) as other:
        result = await one.send(sms(1))
        assert not result.ok and result.temporary and result.retry_after_s == 30
        started = time.monotonic()
        held = await other.send(sms(2))  # another replica: held back without asking Twilio
    assert not held.ok and held.temporary and (held.retry_after_s or 0) > 25
    assert time.monotonic() - started < 1
    assert len(twilio.created()) == 1


async def test_three_replicas_share_one_rate(twilio: TwilioStandIn, adapter: Factory) -> None:
    rate, n = 5.0, 15
    async with AsyncExitStack() as stack:
        replicas = [await stack.enter_async_context(adapter(per_second=rate)) for _ in range(3)]
        results = await asyncio.gather(*(replicas[i % 3].send(sms(i)) for i in range(n)))
    assert all(r.ok for r in results)
    arrivals = sorted(r.at for r in twilio.created())
    assert len(arrivals) == n
    assert arrivals[-1] - arrivals[0] >= (n - 1) / rate * 0.9
    for i, start in enumerate(arrivals):  # no 0.95 s window holds more than `rate` sends
        assert sum(1 for a in arrivals[i:] if a - start < 0.95) <= rate


async def test_a_timeout_is_reconciled_never_resent(
    twilio: TwilioStandIn, adapter: Factory
) -> None:
    twilio.stall(1.5)  # Twilio takes the message but answers after the client gave up
    async with adapter(timeout_s=0.5) as sender:
        first = await sender.send(sms())
        assert not first.ok and first.temporary and "unknown" in (first.reason or "")

        async def created() -> bool:
            return len(twilio.messages) == 1

        await eventually(created)
        second = await sender.send(sms())  # the handler's retry
    assert second.ok and second.provider_message_id in twilio.messages
    assert len(twilio.created()) == 1  # looked it up instead of sending again


async def test_twilio_unreachable_is_temporary(adapter: Factory) -> None:
    async with adapter(api_base=f"http://127.0.0.1:{free_port()}") as sender:
        result = await sender.send(sms())
    assert not result.ok and result.temporary


async def test_wrong_credentials_fail_for_good_and_name_the_settings_to_check(
    twilio: TwilioStandIn, redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No retry mends a wrong auth token: the notification moves on to the customer's next
    channel at once, and the operator reads which settings to fix (never the token itself)."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        async with api_client(twilio.account_sid, "wrong-token", twilio.api_base) as client:
            sender = TwilioSms(
                client, redis, RateLimiter(redis, key_prefix, 5), from_number=FROM,
                rate=Rate(50), prefix=key_prefix,
            )
            with caplog.at_level(logging.ERROR, logger="casegate_notifier.adapters.twilio_sms"):
                result = await sender.send(sms())
    finally:
        await redis.aclose()
    assert not result.ok and not result.temporary and "401" in (result.reason or "")
    assert "CASEGATE_TWILIO_AUTH_TOKEN" in (result.reason or "")
    assert len(twilio.created()) == 1  # asked once, not again inside the adapter
    assert "StatusCallback" not in twilio.created()[0].form  # no public URL, no callback
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "CASEGATE_TWILIO_AUTH_TOKEN" in record.__dict__["reason"]
    assert "wrong-token" not in caplog.text


async def test_an_account_forbidden_to_send_fails_for_good(
    twilio: TwilioStandIn, adapter: Factory
) -> None:
    twilio.fail(403, code=20403)
    async with adapter() as sender:
        result = await sender.send(sms())
    assert not result.ok and not result.temporary
    assert "403" in (result.reason or "") and "CASEGATE_TWILIO_ACCOUNT_SID" in (result.reason or "")
    assert len(twilio.created()) == 1


async def test_the_status_callback_signs_like_twilio(
    twilio: TwilioStandIn, adapter: Factory
) -> None:
    """The stand-in replays a created message's status to its callback, signed over the URL
    the adapter gave; a local server stands in for intake and checks the signature."""
    from aiohttp import web
    from twilio.request_validator import RequestValidator

    seen: list[bool] = []

    async def callback(request: web.Request) -> web.Response:
        form = await request.post()
        url = PUBLIC + request.raw_path
        seen.append(RequestValidator(twilio.auth_token).validate(
            url, form, request.headers["X-Twilio-Signature"]))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/v1/twilio/status", callback)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with adapter() as sender:
            result = await sender.send(sms())
        assert result.provider_message_id is not None
        status = await twilio.report_status(result.provider_message_id, "delivered",
                                            via=f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
    assert status == 204 and seen == [True]
