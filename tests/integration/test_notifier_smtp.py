"""The notifier with the SMTP provider against a real SMTP server (aiosmtpd) on a free port:
the acknowledgement arrives with the ref in the subject and a valid Message-ID; a server that
is down at first gets the mail once when it is back; a 5xx fails it for good; customer text
with line breaks never becomes a header of its own."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from casegate_notifier.app import init_app
from casegate_notifier.settings import Settings
from casegate_shared.bus import Bus
from casegate_shared.events import (
    CaseCustomer,
    CaseOpened,
    Channel,
    Envelope,
    Priority,
    envelope,
    new_case_ref,
)
from casegate_shared.settings import BusSettings
from tests.conftest import eventually, free_port
from tests.support.bus_events import published


MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")


class Mailbox:
    """aiosmtpd handler keeping what it accepts; can refuse recipients with a fixed reply."""

    def __init__(self, rcpt_reply: str | None = None) -> None:
        self.rcpt_reply = rcpt_reply
        self.rcpt_attempts = 0
        self.received: list[tuple[list[str], bytes]] = []
        self._lock = threading.Lock()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self._lock:
            self.rcpt_attempts += 1
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.received.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"

    def messages(self) -> list[EmailMessage]:
        with self._lock:
            raws = [raw for _, raw in self.received]
        return [message_from_bytes(r, policy=policy.default) for r in raws]  # type: ignore[misc]


@asynccontextmanager
async def smtp_server(mailbox: Mailbox, port: int) -> AsyncIterator[Controller]:
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    await asyncio.to_thread(controller.start)
    try:
        yield controller
    finally:
        await asyncio.to_thread(controller.stop)


def case_opened(
    subject: str = "Invoice is wrong", name: str = "Ann Lee", email: str = "ann@example.com"
) -> Envelope[CaseOpened]:
    ref = new_case_ref()
    return envelope(
        CaseOpened(
            ref=ref,
            customer=CaseCustomer(id=1, name=name, email=email),
            channel=Channel.WEBFORM,
            subject=subject,
            body="The amount is wrong.",
            priority=Priority.P3,
            status="new",
            opened_at=datetime.now(UTC),
        ),
        source="case-store",
        subject=ref,
    )


def settings_for(bus_settings: BusSettings, redis_url: str, smtp_port: int) -> Settings:
    return Settings(
        **bus_settings.model_dump(),
        redis_url=redis_url,
        redis_prefix=f"p{bus_settings.bus_prefix}",
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        smtp_from="Support Desk <support@casegate.localhost>",
        smtp_reply_to="Support Desk <inbox@casegate.localhost>",
    )


@asynccontextmanager
async def notifier(settings: Settings) -> AsyncIterator[TestServer]:
    server = TestServer(await init_app(settings), port=free_port())
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def outcomes(bus_settings: BusSettings) -> AbstractAsyncContextManager[list[dict[str, Any]]]:
    """Every notification.* event published on this test's exchange, parsed, as it arrives."""
    return published(bus_settings, "notification.*")

async def test_acknowledgement_arrives_over_smtp_with_ref_and_message_id(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    mailbox, port = Mailbox(), free_port()
    event = case_opened()
    ref = event.data.ref
    settings = settings_for(bus_settings, redis_url, port)
    async with (
        smtp_server(mailbox, port),
        outcomes(bus_settings) as seen,
        notifier(settings) as srv,
    ):
        await publisher.publish(event)

        async def delivered() -> bool:
            return len(seen) >= 1

        await eventually(delivered)
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.make_url("/sandbox/messages")) as resp:
                assert resp.status == 404  # the sandbox is not the provider here

    [(rcpt_tos, _)] = mailbox.received
    assert rcpt_tos == ["ann@example.com"]
    [mail] = mailbox.messages()
    assert mail["Subject"] == f"[{ref}] We received your request: Invoice is wrong"
    assert mail["To"] == "Ann Lee <ann@example.com>"
    assert mail["From"] == "Support Desk <support@casegate.localhost>"
    assert mail["Reply-To"] == "Support Desk <inbox@casegate.localhost>"  # intake's mailbox
    assert mail["Auto-Submitted"] == "auto-generated"
    message_id = mail["Message-ID"]
    assert MESSAGE_ID.fullmatch(message_id), message_id
    assert message_id.endswith("@casegate.localhost>") and ref in message_id
    assert mail.get_content_type() == "multipart/alternative"
    plain = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert plain is not None and ref in plain.get_content()
    assert html is not None and ref in html.get_content()

    [out] = seen
    assert out["type"] == "notification.sent" and out["subject"] == ref
    assert out["data"]["provider"] == "smtp"
    assert out["data"]["provider_message_id"] == message_id


async def test_server_down_at_first_is_retried_and_delivered_once(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    bus_settings = bus_settings.model_copy(update={"bus_retry_base_ms": 200, "bus_max_attempts": 6})
    mailbox, port = Mailbox(), free_port()  # nothing listens on `port` yet
    event = case_opened()
    labels = {"channel": "email", "provider": "smtp", "result": "retry"}
    retries_before = REGISTRY.get_sample_value("casegate_notifications_total", labels) or 0.0
    settings = settings_for(bus_settings, redis_url, port)
    async with outcomes(bus_settings) as seen, notifier(settings):
        await publisher.publish(event)

        async def failed_once() -> bool:
            now = REGISTRY.get_sample_value("casegate_notifications_total", labels) or 0.0
            return now > retries_before

        await eventually(failed_once)
        assert seen == [] and mailbox.received == []
        async with smtp_server(mailbox, port):

            async def delivered() -> bool:
                return len(seen) >= 1

            await eventually(delivered, timeout=15)
            await asyncio.sleep(0.5)
    assert len(mailbox.received) == 1
    [mail] = mailbox.messages()
    assert f"[{event.data.ref}]" in mail["Subject"]
    assert [o["type"] for o in seen] == ["notification.sent"]


async def test_permanent_refusal_publishes_failed_and_is_not_retried(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    mailbox, port = Mailbox(rcpt_reply="550 5.1.1 no such user"), free_port()
    event = case_opened()
    settings = settings_for(bus_settings, redis_url, port)
    async with smtp_server(mailbox, port), outcomes(bus_settings) as seen, notifier(settings):
        await publisher.publish(event)

        async def failed() -> bool:
            return len(seen) >= 1

        await eventually(failed)
        await asyncio.sleep(0.5)  # several retry delays (50 ms, 100 ms): none may come
    assert mailbox.rcpt_attempts == 1 and mailbox.received == []
    [out] = seen
    assert out["type"] == "notification.failed"
    assert out["data"]["outcome"] == "failed"
    assert "550" in out["data"]["reason"]
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        key = f"{settings.redis_prefix}:notify:{out['data']['notification_key']}"
        assert await redis.get(key) == "failed"
    finally:
        await redis.aclose()


async def test_line_breaks_in_subject_and_name_never_become_headers(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    mailbox, port = Mailbox(), free_port()
    event = case_opened(
        subject="Help\r\nBcc: victim@evil.test\r\nX-Injected: subject",
        name="Eve\r\nX-Injected: name\nCc: other@evil.test",
    )
    settings = settings_for(bus_settings, redis_url, port)
    async with smtp_server(mailbox, port), outcomes(bus_settings) as seen, notifier(settings):
        await publisher.publish(event)

        async def delivered() -> bool:
            return len(seen) >= 1

        await eventually(delivered)
    [(rcpt_tos, raw)] = mailbox.received
    assert rcpt_tos == ["ann@example.com"]  # nobody smuggled in as a recipient
    head = raw.split(b"\r\n\r\n", 1)[0]
    lines = [line for line in head.split(b"\r\n") if not line[:1].isspace()]  # skip folds
    names = {line.split(b":", 1)[0].lower() for line in lines}
    assert not names & {b"bcc", b"cc", b"x-injected"}, head
    [mail] = mailbox.messages()
    assert mail["Subject"].startswith(f"[{event.data.ref}] We received your request: Help ")
    assert "\r" not in mail["Subject"] and "\n" not in mail["Subject"]
    assert mail["To"].addresses[0].addr_spec == "ann@example.com"
    assert len(mail["To"].addresses) == 1
