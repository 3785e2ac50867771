"""The Slack provider: a case posted to a team's channel (Block Kit), updated in place, and
messages in its thread, through slack_sdk's AsyncWebClient.

Each channel has a shared send rate (Slack allows about one post per second per channel;
Redis keeps it across replicas). slack_sdk retries a 429 only with a retry handler, so one
is added, but only for short Retry-After waits; a longer one pauses the channel for every
replica and is reported as temporary. A timeout after the request went out may still have
posted: it is reported temporary, and a repeat post is the accepted cost (Slack has no
idempotency key, and a second post does no harm a customer would see).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from casegate_shared.events import CaseSnapshot

from ..domain.delivery import Outbound, SendResult
from ..domain.reply_route import ReplyDestination
from ..domain.slack_blocks import case_blocks, escape, summary_text, thread_reply
from .ratelimit import Rate, RateLimiter, TooLong

log = logging.getLogger(__name__)

# Errors about the target or the content: no retry changes them.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text",
        "invalid_blocks", "invalid_blocks_format", "message_not_found", "cant_update_message",
        "edit_window_closed", "thread_not_found", "restricted_action", "too_many_attachments",
    }
)


def retry_after_s(headers: Any) -> float | None:
    """Retry-After from aiohttp's or slack_sdk's header shapes (a string or a list of one)."""
    for key, value in dict(headers or {}).items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return None
    return None


class ShortRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (waits Retry-After, then retries), for short waits only: a
    send must finish well inside its delivery lease."""

    def __init__(self, max_wait_s: float, max_retry_count: int = 1) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_s = max_wait_s

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not await super()._can_retry_async(
            state=state, request=request, response=response, error=error
        ):
            return False
        wait = retry_after_s(response.headers if response else None)
        return wait is not None and wait <= self.max_wait_s


@asynccontextmanager
async def web_client(
    token: str, api_base: str, *, timeout_s: float, max_wait_s: float
) -> AsyncIterator[AsyncWebClient]:
    """slack_sdk's async client on its own session (one call may take `timeout_s`), retrying
    a lost connection and a 429 that asks for at most `max_wait_s`."""
    handlers: list[AsyncRetryHandler] = [
        AsyncConnectionErrorRetryHandler(),  # slack_sdk's default: the request never arrived
        ShortRateLimitRetry(max_wait_s),
    ]
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield AsyncWebClient(
            token=token, base_url=api_base, session=session, retry_handlers=handlers
        )


def split_thread(slack_thread: str) -> tuple[str, str]:
    """'C123:1700000000.000100' -> ('C123', '1700000000.000100')."""
    channel, sep, ts = slack_thread.partition(":")
    if not sep or not channel or not ts:
        raise ValueError(f"not a channel:ts pair: {slack_thread!r}")
    return channel, ts


class SlackPoster:
    name = "slack"

    def __init__(self, client: AsyncWebClient, limiter: RateLimiter, rate: Rate) -> None:
        self._client = client
        self._limiter = limiter
        self._rate = rate

    async def send(self, outbound: Outbound) -> SendResult:
        """The provider contract: a message to a channel (`to`), or into the case's thread
        (`thread`). `blocks` go as given (build them with domain.slack_blocks, which escapes);
        `text` is plain text and is escaped here."""
        kwargs: dict[str, Any] = {"text": escape(outbound.text)}
        if outbound.blocks is not None:
            kwargs["blocks"] = outbound.blocks
        channel = outbound.to
        if outbound.thread:
            channel, kwargs["thread_ts"] = split_thread(outbound.thread)
        return await self._call(
            "chat_postMessage", channel, outbound.case_ref, unfurl_links=False,
            unfurl_media=False, **kwargs,
        )

    async def post_case(
        self,
        case: CaseSnapshot,
        channel: str,
        first_message: str | None = None,
        reply_to: ReplyDestination | None = None,
    ) -> SendResult:
        """Post the case to `channel`; the result's id is 'channel:ts', its thread from now on."""
        return await self._call(
            "chat_postMessage",
            channel,
            case.ref,
            text=summary_text(case),
            blocks=case_blocks(case, first_message, reply_to),
            unfurl_links=False,
            unfurl_media=False,
        )

    async def update_case(
        self,
        case: CaseSnapshot,
        slack_thread: str,
        first_message: str | None = None,
        reply_to: ReplyDestination | None = None,
    ) -> SendResult:
        """Redraw the case's post in place (status, assignee, due times, buttons, and where a
        reply would go now)."""
        channel, ts = split_thread(slack_thread)
        return await self._call(
            "chat_update", channel, case.ref, ts=ts, text=summary_text(case),
            blocks=case_blocks(case, first_message, reply_to),
        )

    async def reply_in_thread(
        self, slack_thread: str, ref: str, text: str, author: str | None = None
    ) -> SendResult:
        """A message under the case's post (a customer's new message, an outcome)."""
        channel, ts = split_thread(slack_thread)
        fallback, blocks = thread_reply(text, author)
        return await self._call(
            "chat_postMessage", channel, ref, thread_ts=ts, text=fallback, blocks=blocks,
            unfurl_links=False, unfurl_media=False,
        )

    async def _call(self, method: str, channel: str, ref: str, **kwargs: Any) -> SendResult:
        lane = f"slack:{channel}"
        try:
            await self._limiter.wait_turn(lane, self._rate)
        except TooLong as exc:
            return SendResult.failed(f"rate limit: {exc}", temporary=True, retry_after_s=exc.wait_s)
        except (RedisError, OSError) as exc:
            return SendResult.failed(f"rate limiter unavailable: {exc!r}", temporary=True)
        try:
            response = await getattr(self._client, method)(channel=channel, **kwargs)
        except SlackApiError as exc:
            return await self._failed(exc, lane, ref)
        except aiohttp.ClientConnectorError as exc:
            return SendResult.failed(f"slack unreachable: {exc!r}", temporary=True)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("slack outcome unknown", extra={"ref": ref, "error": repr(exc)})
            return SendResult.failed(f"outcome unknown: {type(exc).__name__}", temporary=True)
        ts = str(response.get("ts") or kwargs.get("ts"))
        posted_in = str(response.get("channel") or channel)
        log.info("slack post", extra={"ref": ref, "method": method, "channel": posted_in, "ts": ts})
        return SendResult.sent(f"{posted_in}:{ts}")

    async def _failed(self, exc: SlackApiError, lane: str, ref: str) -> SendResult:
        status = exc.response.status_code
        error = str(exc.response.get("error") or "") if isinstance(exc.response.data, dict) else ""
        reason = f"slack {status} {error}".strip()
        if status == 429:
            wait = retry_after_s(exc.response.headers) or 1.0
            try:
                await self._limiter.pause(lane, wait)
            except (RedisError, OSError):
                pass  # the wait is still reported; only the other replicas do not hear of it
            reason = f"{reason} (retry after {wait:g}s)"
            return SendResult.failed(reason, temporary=True, retry_after_s=wait)
        permanent = status < 500 and error in PERMANENT_ERRORS
        log.warning("slack refused", extra={"ref": ref, "reason": reason, "permanent": permanent})
        return SendResult.failed(reason, temporary=not permanent)
