"""The Twilio SMS provider: one text through the official client's async HTTP client.

Failures are sorted for the handler: 429 and 5xx are temporary (a 429 also pauses the sending
number for every replica, and one that asks for a short wait is retried here after it);
refusals about the recipient (21610 unsubscribed, 21211 invalid number, …) are permanent, and
so are 401 and 403: our credentials or account are refused, which no retry mends until an
operator does, so the notification moves on to the customer's next channel at once and an
error log names the settings to check. A timeout or dropped connection after the request
went out is "maybe sent": the attempt is marked in Redis and the next attempt first looks for
the message at Twilio (same recipient, sender and text, created since) instead of sending it
blindly a second time. (Longer than the other adapters for that reconciliation, and for a
small shim over Twilio's HTTP client.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError
from twilio.base import values
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from ..domain.delivery import Outbound, SendResult
from ..domain.sms import OutboundSms, segments
from .ratelimit import Rate, RateLimiter, TooLong

log = logging.getLogger(__name__)
_wire_log = logging.getLogger(__name__ + ".wire")
_wire_log.setLevel(logging.WARNING)  # twilio logs every request (numbers included) at info

# Our credentials (401) or account (403) refused: permanent for the request, and the operator's
# to mend; the settings to check are named in the reason and in an error log. Not a breaker
# failure: an open breaker makes sends wait, which is the endless retry this avoids.
ACCOUNT_STATUSES: dict[int, str] = {
    401: "credentials refused: check CASEGATE_TWILIO_ACCOUNT_SID and CASEGATE_TWILIO_AUTH_TOKEN",
    403: "account may not send this: check the Twilio account of CASEGATE_TWILIO_ACCOUNT_SID "
    "(suspended, or not permitted) and CASEGATE_TWILIO_FROM",
}
IN_ADAPTER_RETRIES = 1  # after a short Retry-After: the provider did not take the message
MAYBE_SENT_TTL_S = 7 * 24 * 3600
_response_headers: ContextVar[Mapping[str, str] | None] = ContextVar("twilio_headers", default=None)


class _HttpClient(AsyncTwilioHttpClient):
    """Twilio's aiohttp client with a timeout that holds, keeping each response's headers for the
    caller's task (the client's exceptions drop them, and Retry-After is among them)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(pool_connections=False, logger=_wire_log)
        self.session = aiohttp.ClientSession()
        self._timeout_s = timeout_s

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if auth is not None:  # as a header: aiohttp is retiring its BasicAuth class
            headers = {**(headers or {}), "Authorization": aiohttp.encode_basic_auth(*auth)}
        _response_headers.set(None)
        # The client passes its caller's timeout (None) on to aiohttp, where None means "wait
        # forever" and overrides the session's: a hung request would outlive its lease.
        response = await super().request(
            method, url, params, data, headers, None, timeout or self._timeout_s, allow_redirects
        )
        _response_headers.set(response.headers)
        return response


@asynccontextmanager
async def api_client(
    account_sid: str, auth_token: str, api_base: str, timeout_s: float = 10.0
) -> AsyncIterator[Client]:
    """A Twilio REST client on the async HTTP client, its API domain at `api_base`."""
    http = _HttpClient(timeout_s)
    client = Client(account_sid, auth_token, http_client=http)
    client.api.base_url = api_base.rstrip("/")  # https://api.twilio.com, or a stand-in
    try:
        yield client
    finally:
        await http.close()


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    try:
        return max(0.0, float((headers or {}).get("Retry-After", "")))
    except ValueError:
        return None


def classify(exc: TwilioRestException | TwilioServiceException) -> SendResult:
    """Twilio's refusal as a result (legacy errors and RFC 9457 problem documents alike)."""
    status, code = exc.status, exc.code
    detail = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
    reason = f"twilio {status} code {code}: {detail}"
    if status == 429 or status >= 500:
        return SendResult.failed(reason, temporary=True)
    if status in ACCOUNT_STATUSES:
        return SendResult.failed(f"{reason} ({ACCOUNT_STATUSES[status]})", temporary=False)
    return SendResult.failed(reason, temporary=False)  # the request itself is refused


class TwilioSms:
    name = "twilio"

    def __init__(
        self,
        client: Client,
        redis: Redis,
        limiter: RateLimiter,
        *,
        from_number: str,
        rate: Rate,
        prefix: str,
        status_callback_base: str | None = None,
    ) -> None:
        self._client = client
        self._redis = redis
        self._limiter = limiter
        self._from = from_number
        self._rate = rate
        self._prefix = prefix
        self._callback_base = status_callback_base.rstrip("/") if status_callback_base else None

    def status_callback(self, message: OutboundSms) -> str | None:
        """Where Twilio reports delivery: intake's route, naming the case and notification."""
        if self._callback_base is None:
            return None
        query = urlencode({"ref": message.case_ref, "key": message.dedupe_key})
        return f"{self._callback_base}/v1/twilio/status?{query}"

    async def send(self, outbound: OutboundSms | Outbound) -> SendResult:
        """The provider contract; an `Outbound`'s rendered text is the SMS body."""
        message = (
            outbound
            if isinstance(outbound, OutboundSms)
            else OutboundSms(outbound.to, outbound.text, outbound.case_ref, outbound.dedupe_key)
        )
        marker = f"{self._prefix}:sms:maybe:{message.dedupe_key}"
        try:
            if since := await self._redis.get(marker):
                found = await self._find(message, datetime.fromisoformat(_text(since)))
                if found:
                    log.info("earlier attempt had gone out", extra={"ref": message.case_ref})
                    return SendResult.sent(found)
        except (RedisError, OSError, TwilioException, aiohttp.ClientError, TimeoutError) as exc:
            reason = f"cannot reconcile an earlier attempt: {exc!r}"
            return SendResult.failed(reason, temporary=True)
        for attempt in range(IN_ADAPTER_RETRIES + 1):
            result, pause_s = await self._attempt(message, marker)
            worth_waiting = pause_s is not None and pause_s <= self._limiter.max_wait_s
            if not worth_waiting or attempt == IN_ADAPTER_RETRIES:
                return result
            log.info("twilio asked to slow down", extra={"retry_after_s": pause_s})
        return result  # pragma: no cover  (the loop always returns)

    async def _attempt(self, message: OutboundSms, marker: str) -> tuple[SendResult, float | None]:
        """One try; the second value is the pause Twilio asked for, when it is worth waiting."""
        lane = f"twilio:{self._from}"
        try:
            await self._limiter.wait_turn(lane, self._rate)
        except TooLong as exc:
            reason = f"rate limit: {exc}"
            return SendResult.failed(reason, temporary=True, retry_after_s=exc.wait_s), None
        except (RedisError, OSError) as exc:
            return SendResult.failed(f"rate limiter unavailable: {exc!r}", temporary=True), None
        started = datetime.now(UTC)
        seg = segments(message.body)
        try:
            created = await self._client.messages.create_async(
                to=message.to,
                from_=self._from,
                body=message.body,
                status_callback=self.status_callback(message) or values.unset,
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            result = classify(exc)
            if exc.status in ACCOUNT_STATUSES:
                # Every SMS fails like this until someone acts; the reason names the settings.
                log.error("twilio refused our account", extra={
                    "ref": message.case_ref, "status": exc.status, "code": exc.code,
                    "reason": ACCOUNT_STATUSES[exc.status]})
            if exc.status != 429:
                return result, None
            wait = retry_after_s(_response_headers.get()) or 1.0
            try:
                await self._limiter.pause(lane, wait)
            except (RedisError, OSError):
                pass  # the wait is still honoured here; only the other replicas do not hear of it
            reason = f"{result.reason} (retry after {wait:g}s)"
            return SendResult.failed(reason, temporary=True, retry_after_s=wait), wait
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:  # never reached Twilio
            return SendResult.failed(f"twilio unreachable: {exc!r}", temporary=True), None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return await self._maybe_sent(message, marker, started, exc), None
        log.info(
            "sms sent",
            extra={"ref": message.case_ref, "sid": created.sid, "encoding": seg.encoding.value,
                   "segments": seg.count},
        )
        return SendResult.sent(str(created.sid)), None

    async def _maybe_sent(
        self, message: OutboundSms, marker: str, started: datetime, exc: BaseException
    ) -> SendResult:
        log.warning("sms outcome unknown", extra={"ref": message.case_ref, "error": repr(exc)})
        try:
            await self._redis.set(marker, started.isoformat(), ex=MAYBE_SENT_TTL_S)
            found = await self._find(message, started)
        except (RedisError, OSError, TwilioException, aiohttp.ClientError, TimeoutError):
            found = None
        if found:
            return SendResult.sent(found)
        return SendResult.failed(
            f"outcome unknown ({type(exc).__name__}); reconciled before any resend", temporary=True
        )

    async def _find(self, message: OutboundSms, since: datetime) -> str | None:
        """The SID of our message to this recipient with this text created since `since`."""
        recent = await self._client.messages.list_async(
            to=message.to, from_=self._from, limit=20
        )
        floor = since - timedelta(minutes=1)  # clock skew between us and Twilio
        for m in recent:
            created = m.date_created
            if m.body == message.body and (created is None or created >= floor):
                return str(m.sid)
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
