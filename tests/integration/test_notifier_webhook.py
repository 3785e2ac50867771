"""Signed outbound webhooks through the running notifier to a real HTTP server on loopback:
the signature verifies, a retried event posts once, a 5xx is retried, a redirect is not
followed, and loopback is refused unless explicitly allowed (checked on the resolved address,
so a name such as `localhost` does not slip by)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY

from casegate_notifier.adapters.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from casegate_shared.bus import Bus
from casegate_shared.settings import BusSettings
from tests.conftest import eventually, free_port
from tests.integration.test_notifier_delivery import notifier, outcomes, settings_for
from tests.integration.test_notifier_smtp import case_opened

SECRET = "whsec-test-123"


@dataclass
class Receiver:
    port: int
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # statuses to answer first, then 204
    redirected: int = 0


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(free_port())

    async def hook(request: web.Request) -> web.Response:
        r.posts.append((dict(request.headers), await request.read()))
        status = r.answers.pop(0) if r.answers else 204
        if status == 301:
            raise web.HTTPMovedPermanently(location=f"http://127.0.0.1:{r.port}/elsewhere")
        return web.Response(status=status)

    async def elsewhere(request: web.Request) -> web.Response:
        r.redirected += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/elsewhere", elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", r.port)
    await site.start()
    try:
        yield r
    finally:
        await runner.cleanup()


def policy_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "notify.yaml"
    path.write_text(
        "webhooks:\n"
        f"  crm: {{url: '{url}', events: [case.opened]}}\n"
        "rules: []\n"
    )
    return path


def webhook_results(result: str) -> float:
    labels = {"channel": "webhook", "provider": "webhook", "result": result}
    return REGISTRY.get_sample_value("casegate_notifications_total", labels) or 0.0


async def test_a_signed_post_once_per_event_retried_after_a_5xx(
    bus_settings: BusSettings, redis_url: str, publisher: Bus, tmp_path: Path
) -> None:
    async with receiver() as r:
        r.answers = [503]
        settings = settings_for(
            bus_settings, redis_url,
            notify_policy_file=policy_file(tmp_path, f"http://127.0.0.1:{r.port}/hook"),
            webhook_secrets={"crm": SECRET}, webhook_allow_http=True, webhook_allow_private=True,
            retry_base_s=0.05,
        )
        event = case_opened()
        async with outcomes(bus_settings), notifier(settings):
            await publisher.publish(event)
            await publisher.publish(event)

            async def delivered() -> bool:
                return len(r.posts) >= 2

            await eventually(delivered)
            await asyncio.sleep(0.5)
    assert len(r.posts) == 2  # the 503, then the one that went; the duplicate event added none
    (first_headers, first_body), (headers, body) = r.posts
    assert first_body == body
    assert first_headers["X-Casegate-Delivery"] == headers["X-Casegate-Delivery"]
    stamp, signature = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert verify(SECRET.encode(), stamp, body, signature, now=time.time())
    assert not verify(b"wrong", stamp, body, signature, now=time.time())
    doc: dict[str, Any] = json.loads(body)
    assert (doc["type"], doc["ref"], doc["event_id"]) == ("case.opened", event.data.ref, event.id)
    assert doc["data"]["subject"] == "Invoice is wrong" and "body" not in doc["data"]
    assert headers["Content-Type"] == "application/json"


async def test_redirects_are_not_followed(
    bus_settings: BusSettings, redis_url: str, publisher: Bus, tmp_path: Path
) -> None:
    async with receiver() as r:
        r.answers = [301]
        settings = settings_for(
            bus_settings, redis_url,
            notify_policy_file=policy_file(tmp_path, f"http://127.0.0.1:{r.port}/hook"),
            webhook_secrets={"crm": SECRET}, webhook_allow_http=True, webhook_allow_private=True,
        )
        failed_before = webhook_results("failed")
        async with outcomes(bus_settings), notifier(settings):
            await publisher.publish(case_opened())

            async def failed() -> bool:
                return webhook_results("failed") > failed_before

            await eventually(failed)
            await asyncio.sleep(0.3)
    assert len(r.posts) == 1 and r.redirected == 0


async def test_loopback_is_refused_unless_allowed_even_behind_a_name(
    bus_settings: BusSettings, redis_url: str, publisher: Bus, tmp_path: Path
) -> None:
    async with receiver() as r:
        failed_before = webhook_results("failed")
        for url in (f"http://localhost:{r.port}/hook", f"http://127.0.0.1:{r.port}/hook"):
            settings = settings_for(
                bus_settings, redis_url,
                notify_policy_file=policy_file(tmp_path, url),
                webhook_secrets={"crm": SECRET}, webhook_allow_http=True,  # private not allowed
            )
            async with outcomes(bus_settings), notifier(settings):
                await publisher.publish(case_opened())

                async def refused(before: float = failed_before) -> bool:
                    return webhook_results("failed") > before

                await eventually(refused)
                failed_before = webhook_results("failed")
        await asyncio.sleep(0.2)
    assert r.posts == []
