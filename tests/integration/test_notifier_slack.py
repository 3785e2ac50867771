"""The Slack adapter with slack_sdk's AsyncWebClient pointed at the Slack stand-in, and its
per-channel rate in the real Redis: a case posted with Block Kit, updated in place, answered in
its thread; a 429 retried after its Retry-After; errors sorted; one rate per channel shared by
replicas."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from casegate_notifier.adapters.ratelimit import Rate, RateLimiter
from casegate_notifier.adapters.slack import SlackPoster, web_client
from casegate_notifier.domain.delivery import Medium, Outbound
from casegate_shared.events import CaseSnapshot, Channel, Contact, Priority
from tests.standins.slack import SlackStandIn

CHANNEL = "C0SUPPORT"
Factory = Callable[..., AbstractAsyncContextManager[SlackPoster]]


def case(**over: object) -> CaseSnapshot:
    base: dict[str, object] = {
        "ref": "CS-7K3M9Q",
        "subject": "Parcel never arrived",
        "channel": Channel.EMAIL,
        "status": "open",
        "priority": Priority.P1,
        "team": "logistics",
        "customer": Contact(customer_id=7, name="<!channel> Ada & co", email="ada@example.com"),
        "first_response_due": datetime(2024, 3, 1, 9, 30, tzinfo=UTC),
    }
    return CaseSnapshot(**{**base, **over})  # type: ignore[arg-type]


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as standin:
        yield standin


@pytest.fixture
def poster(slack: SlackStandIn, redis_url: str, key_prefix: str) -> Factory:
    """A factory of adapters sharing Redis, each with its own connections, as replicas have."""

    @asynccontextmanager
    async def make(
        *, per_second: float = 50.0, max_wait_s: float = 3.0
    ) -> AsyncIterator[SlackPoster]:
        redis = Redis.from_url(redis_url, decode_responses=True)
        client_cm = web_client(slack.token, slack.api_base, timeout_s=5, max_wait_s=max_wait_s)
        try:
            async with client_cm as client:
                limiter = RateLimiter(redis, key_prefix, max_wait_s=max_wait_s)
                yield SlackPoster(client, limiter, Rate(per_second))
        finally:
            await redis.aclose()

    return make


async def test_a_case_is_posted_with_blocks_and_its_thread_is_returned(
    slack: SlackStandIn, poster: Factory
) -> None:
    async with poster() as p:
        result = await p.post_case(case(), CHANNEL, "Where is my <b>parcel</b>?")
    assert result.ok
    [call] = slack.calls_of("chat.postMessage")
    assert call.token == slack.token and call.args["channel"] == CHANNEL
    [(channel, ts)] = slack.posts
    assert result.provider_message_id == f"{channel}:{ts}"
    wire = json.dumps(call.args["blocks"])
    assert "CS-7K3M9Q" in wire and '"action_id": "claim"' in wire
    assert "&lt;!channel&gt; Ada &amp; co" in wire and "<!channel>" not in wire
    assert "&lt;b&gt;parcel&lt;/b&gt;" in wire
    assert "CS-7K3M9Q" in call.args["text"]


async def test_the_post_is_updated_in_place_and_answered_in_its_thread(
    slack: SlackStandIn, poster: Factory
) -> None:
    async with poster() as p:
        thread = (await p.post_case(case(), CHANNEL)).provider_message_id
        assert thread is not None
        updated = await p.update_case(case(status="resolved", assignee="grace"), thread)
        reply = await p.reply_in_thread(thread, "CS-7K3M9Q", "Thanks, got it <3", author="Customer")
        via_contract = await p.send(Outbound(
            to=CHANNEL, subject="", text="Reminder: due <soon>", message_id="x",
            case_ref="CS-7K3M9Q", dedupe_key="k", channel=Medium.SLACK, thread=thread,
        ))
    assert updated.ok and updated.provider_message_id == thread
    [update] = slack.calls_of("chat.update")
    assert f"{update.args['channel']}:{update.args['ts']}" == thread
    assert "claim" not in json.dumps(update.args["blocks"])  # resolved: no buttons left
    channel, ts = thread.split(":")
    assert slack.posts[(channel, ts)]["blocks"] == update.args["blocks"]
    assert reply.ok and via_contract.ok
    in_thread = [c for c in slack.calls_of("chat.postMessage") if c.args.get("thread_ts") == ts]
    assert len(in_thread) == 2
    assert "&lt;3" in json.dumps(in_thread[0].args["blocks"])
    assert in_thread[1].args["text"] == "Reminder: due &lt;soon&gt;"


async def test_a_429_is_retried_after_its_retry_after(slack: SlackStandIn, poster: Factory) -> None:
    slack.fail(status=429, retry_after=1, method="chat.postMessage")
    async with poster() as p:
        result = await p.post_case(case(), CHANNEL)
    assert result.ok
    first, second = slack.calls_of("chat.postMessage")
    assert (first.answered, second.answered) == (429, 200)
    assert second.at - first.at >= 0.95


async def test_a_long_retry_after_pauses_the_channel_for_every_replica(
    slack: SlackStandIn, poster: Factory
) -> None:
    slack.fail(status=429, retry_after=30, method="chat.postMessage")
    async with poster(max_wait_s=2) as one, poster(max_wait_s=2) as other:
        result = await one.post_case(case(), CHANNEL)
        assert not result.ok and result.temporary and result.retry_after_s == 30
        started = time.monotonic()
        held = await other.post_case(case(), CHANNEL)
        elsewhere = await other.post_case(case(), "C0OTHER")
    assert not held.ok and held.temporary and time.monotonic() - started < 1
    assert elsewhere.ok  # the pause is per channel
    assert [c.args["channel"] for c in slack.calls_of("chat.postMessage")] == [CHANNEL, "C0OTHER"]


@pytest.mark.parametrize(
    ("status", "error", "temporary"),
    [
        (200, "channel_not_found", False),
        (200, "is_archived", False),
        (200, "invalid_auth", True),  # our token: wait for the operator
        (500, "internal_error", True),
        (503, "service_unavailable", True),
    ],
)
async def test_errors_are_sorted(
    slack: SlackStandIn, poster: Factory, status: int, error: str, temporary: bool
) -> None:
    slack.fail(status=status, error=error)
    async with poster() as p:
        result = await p.post_case(case(), CHANNEL)
    assert not result.ok and result.temporary is temporary and error in (result.reason or "")


async def test_updating_a_post_that_is_gone_is_permanent(poster: Factory) -> None:
    async with poster() as p:
        result = await p.update_case(case(), f"{CHANNEL}:1700000000.999999")
    assert not result.ok and not result.temporary and "message_not_found" in (result.reason or "")


async def test_one_channel_one_rate_across_replicas(slack: SlackStandIn, poster: Factory) -> None:
    rate, n = 4.0, 8
    async with AsyncExitStack() as stack:
        replicas = [await stack.enter_async_context(poster(per_second=rate)) for _ in range(3)]
        results = await asyncio.gather(
            *(replicas[i % 3].post_case(case(), CHANNEL) for i in range(n)),
            replicas[0].post_case(case(), "C0OTHER"),
        )
    assert all(r.ok for r in results)
    calls = slack.calls_of("chat.postMessage")
    same = sorted(c.at for c in calls if c.args["channel"] == CHANNEL)
    assert same[-1] - same[0] >= (n - 1) / rate * 0.9
    [other] = [c.at for c in calls if c.args["channel"] == "C0OTHER"]
    assert other - min(c.at for c in calls) < 0.5  # another channel does not queue behind it
