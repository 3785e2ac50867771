"""Intake over real HTTP against the real RabbitMQ: what a web form submission puts on the bus,
what every kind of bad submission gets back (and that it puts nothing on the bus), what happens
when the broker cannot confirm, and the ops routes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import aio_pika
import aiohttp
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aiohttp import web
from yarl import URL

from casegate_intake.app import BUS, init_app
from casegate_intake.settings import Settings
from casegate_shared.events import CASE_REF_PATTERN, Envelope, MessageReceived
from casegate_shared.settings import BusSettings
from tests.conftest import free_port

FORM = {
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "phone": "+44 20 7946 0958",
    "subject": "Refund for order 1234",
    "message": "I was charged twice.\nPlease refund one.",
}
QUIET_S = 0.3  # how long "nothing was published" waits (a confirmed publish is there at once)


@dataclass
class Intake:
    url: str
    app: web.Application
    observed: AbstractQueue | None

    async def next_event(self) -> AbstractIncomingMessage | None:
        assert self.observed is not None
        return await self.observed.get(no_ack=True, fail=False)

    async def assert_nothing_published(self) -> None:
        await asyncio.sleep(QUIET_S)
        assert await self.next_event() is None, "a refused submission reached the bus"


@asynccontextmanager
async def start_intake(
    bus_settings: BusSettings, *, observe: bool = True, **overrides: Any
) -> AsyncIterator[Intake]:
    """Intake on a free port; an exclusive queue bound to every `message.received.*` first."""
    connection = await aio_pika.connect(bus_settings.amqp_url)
    channel = await connection.channel()
    observed = None
    if observe:
        exchange = await channel.declare_exchange(
            bus_settings.bus_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        observed = await channel.declare_queue(exclusive=True)
        await observed.bind(exchange, "message.received.#")
    port = free_port()
    settings = Settings(**bus_settings.model_dump(), intake_port=port, **overrides)
    app = await init_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Intake(f"http://127.0.0.1:{port}", app, observed)
    finally:
        await runner.cleanup()
        await connection.close()


@pytest.fixture
async def intake(bus_settings: BusSettings) -> AsyncIterator[Intake]:
    async with start_intake(bus_settings) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def multipart(fields: dict[str, str]) -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter("form-data")
    for name, value in fields.items():
        part = writer.append(value)
        part.set_content_disposition("form-data", name=name)
    return writer


ENCODINGS: dict[str, Callable[[dict[str, str]], dict[str, Any]]] = {
    "json": lambda f: {"json": f},
    "urlencoded": lambda f: {"data": f},
    "multipart": lambda f: {"data": multipart(f)},
}


# --- accepted submissions -------------------------------------------------------------


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
async def test_valid_form_is_confirmed_on_the_bus_before_202(
    intake: Intake, http: aiohttp.ClientSession, encoding: str
) -> None:
    async with http.post(intake.url + "/v1/webform", **ENCODINGS[encoding](FORM)) as resp:
        assert resp.status == 202, await resp.text()
        body = await resp.json()
    assert body["status"] == "received"
    assert re.fullmatch(CASE_REF_PATTERN, body["ref"])

    # 202 came after the confirm, so the message is already queued: no waiting here.
    raw = await intake.next_event()
    assert raw is not None
    assert raw.routing_key == "message.received.webform"
    event = Envelope[MessageReceived].model_validate_json(raw.body)
    assert event.type == "message.received.webform"
    assert (event.source, event.subject) == ("intake", body["ref"])
    assert event.correlationid == body["correlation_id"] == raw.correlation_id
    assert raw.message_id == event.id
    msg = event.data
    assert msg.channel == "webform" and msg.dedupe_key.startswith("webform:")
    assert (msg.new_case_ref, msg.case_ref) == (body["ref"], None)
    assert (msg.sender.name, msg.sender.email, msg.sender.phone) == (
        "Ada Lovelace", "ada@example.com", "+442079460958",
    )
    assert (msg.subject, msg.body) == (FORM["subject"], FORM["message"])
    await intake.assert_nothing_published()  # exactly one


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_browser_form_gets_a_thank_you_page_naming_the_ref(
    intake: Intake, http: aiohttp.ClientSession, encoding: str
) -> None:
    headers = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}
    post = ENCODINGS[encoding](FORM)
    async with http.post(intake.url + "/v1/webform", headers=headers, **post) as resp:
        assert resp.status == 202
        assert resp.content_type == "text/html"
        page = await resp.text()
    raw = await intake.next_event()
    assert raw is not None
    ref = Envelope[MessageReceived].model_validate_json(raw.body).data.new_case_ref
    assert ref is not None and ref in page


async def test_a_named_case_ref_is_kept_and_no_new_one_is_promised(
    intake: Intake, http: aiohttp.ClientSession
) -> None:
    async with http.post(intake.url + "/v1/webform", json={**FORM, "ref": "cs-7k3m9q"}) as resp:
        assert resp.status == 202
        assert (await resp.json())["ref"] == "CS-7K3M9Q"
    raw = await intake.next_event()
    assert raw is not None
    msg = Envelope[MessageReceived].model_validate_json(raw.body).data
    assert (msg.case_ref, msg.new_case_ref) == ("CS-7K3M9Q", None)


class FormFields(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.names: list[str] = []
        self.labelled: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.action = a.get("action")
        elif tag in ("input", "textarea") and a.get("name"):
            self.names.append(str(a["name"]))
        elif tag == "label" and a.get("for"):
            self.labelled.add(str(a["for"]))


async def test_the_form_page_posts_what_the_endpoint_accepts(
    intake: Intake, http: aiohttp.ClientSession
) -> None:
    async with http.get(intake.url + "/webform") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        parser = FormFields()
        parser.feed(await resp.text())
    assert {"name", "email", "phone", "subject", "message"} <= set(parser.names)
    assert set(parser.names) <= parser.labelled, "every input needs a label"
    assert parser.action is not None
    target = resp.url.join(URL(parser.action))
    filled = {n: FORM.get(n, "") for n in parser.names}  # the honeypot stays empty
    async with http.post(target, data=filled, headers={"Accept": "text/html"}) as resp:
        assert resp.status == 202
    assert await intake.next_event() is not None


# --- refused submissions: the status, the reason, and nothing on the bus ---------------


def raw_body(data: bytes, ctype: str) -> dict[str, Any]:
    return {"data": data, "headers": {"Content-Type": ctype}}


async def chunked(size: int) -> AsyncIterator[bytes]:
    """A body without Content-Length: only reading it can tell its size."""
    for _ in range(size // 4096 + 1):
        yield b" " * 4096


def with_file() -> dict[str, Any]:
    form = aiohttp.FormData(FORM)
    form.add_field("file", b"%PDF-1.7", filename="invoice.pdf", content_type="application/pdf")
    return {"data": form}


def fields_named(*names: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body["error"] == "invalid" and set(body["fields"]) == set(names)


def error_is(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body["error"] == kind and bool(body["reason"])


JSON = "application/json"
URLENCODED = "application/x-www-form-urlencoded"
Request = Callable[[], dict[str, Any]]
REFUSALS: dict[str, tuple[Request, int, Callable[[dict[str, Any]], bool]]] = {
    "malformed json": (
        lambda: raw_body(b'{"name": "Ada",', JSON), 400, error_is("malformed")
    ),
    "json array": (lambda: {"json": [FORM]}, 400, error_is("not_an_object")),
    "invalid utf-8": (lambda: raw_body(b'{"name": "\xff"}', JSON), 400, error_is("malformed")),
    "malformed multipart": (
        lambda: raw_body(b"--x\r\nno headers", "multipart/form-data; boundary=y"),
        400,
        error_is("malformed"),
    ),
    "unknown charset": (
        lambda: raw_body(b"name=Ada", f"{URLENCODED}; charset=xx"), 400, error_is("malformed")
    ),
    "missing fields": (
        lambda: {"json": {"phone": "+442079460958"}},
        422,
        fields_named("name", "email", "subject", "message"),
    ),
    "bad email": (lambda: {"json": {**FORM, "email": "ada@"}}, 422, fields_named("email")),
    "crlf in subject": (
        lambda: {"data": {**FORM, "subject": "Hi\r\nBcc: all@example.com"}},
        422,
        fields_named("subject"),
    ),
    "number as name": (lambda: {"json": {**FORM, "name": 42}}, 422, fields_named("name")),
    "file upload": (with_file, 422, fields_named("file")),
    "wrong content type": (
        lambda: raw_body(b"name=Ada", "text/plain"), 415, error_is("unsupported_media_type")
    ),
    "declared too big": (
        lambda: raw_body(b" " * (64 * 1024 + 1), JSON), 413, error_is("too_large")
    ),
    "chunked too big": (
        lambda: {"data": chunked(70 * 1024), "headers": {"Content-Type": JSON}},
        413,
        error_is("too_large"),
    ),
    "honeypot filled": (
        lambda: {"data": {**FORM, "website": "http://spam.example"}}, 403, error_is("forbidden")
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_bad_submission_is_refused_and_nothing_is_published(
    intake: Intake, http: aiohttp.ClientSession, case: str
) -> None:
    request, status, check = REFUSALS[case]
    async with http.post(intake.url + "/v1/webform", **request()) as resp:
        assert resp.status == status, await resp.text()
        body = await resp.json()
    assert check(body), body
    await intake.assert_nothing_published()


async def test_a_declared_oversize_is_refused_before_the_body_arrives(intake: Intake) -> None:
    # Headers promise 10 MB and no byte of it is sent: only an up-front check can answer.
    host, port = intake.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/webform HTTP/1.1\r\nHost: intake\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000\r\n\r\n{"
    )
    await writer.drain()
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout=3)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    await intake.assert_nothing_published()


async def test_the_size_limit_is_exact_and_configurable(
    bus_settings: BusSettings, http: aiohttp.ClientSession
) -> None:
    async with start_intake(bus_settings, webform_max_bytes=2048) as intake:
        doc = json.dumps(FORM).encode()
        at_limit = doc + b" " * (2048 - len(doc))
        async with http.post(intake.url + "/v1/webform", **raw_body(at_limit, JSON)) as resp:
            assert resp.status == 202
        assert await intake.next_event() is not None
        over = raw_body(at_limit + b" ", JSON)
        async with http.post(intake.url + "/v1/webform", **over) as resp:
            assert resp.status == 413
        await intake.assert_nothing_published()


async def test_refusals_are_logged_at_info_with_the_reason_but_not_the_body(
    intake: Intake, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"my card number is {uuid.uuid4().hex}"
    caplog.set_level(logging.INFO, logger="casegate_intake")
    bad = {**FORM, "email": "nope", "message": secret}
    async with http.post(intake.url + "/v1/webform", json=bad) as resp:
        assert resp.status == 422
    [record] = [r for r in caplog.records if r.name.startswith("casegate_intake")]
    assert record.levelno == logging.INFO
    assert record.__dict__["status"] == 422 and "email" in record.__dict__["reason"]
    assert secret not in caplog.text


# --- the broker cannot confirm ---------------------------------------------------------


async def test_lost_broker_connection_gives_503_and_never_202(
    intake: Intake, http: aiohttp.ClientSession
) -> None:
    await intake.app[BUS].connection.close()  # type: ignore[union-attr]
    async with http.post(intake.url + "/v1/webform", json=FORM) as resp:
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) > 0
        assert (await resp.json())["error"] == "unavailable"
    browser = {"Accept": "text/html"}
    async with http.post(intake.url + "/v1/webform", data=FORM, headers=browser) as resp:
        assert resp.status == 503 and "Retry-After" in resp.headers
    await intake.assert_nothing_published()


async def test_unroutable_message_gives_503_not_a_silent_drop(
    bus_settings: BusSettings, http: aiohttp.ClientSession
) -> None:
    async with start_intake(bus_settings, observe=False) as intake:  # nothing bound, no reader
        async with http.post(intake.url + "/v1/webform", json=FORM) as resp:
            assert resp.status == 503
            assert "Retry-After" in resp.headers


# --- ops routes ------------------------------------------------------------------------


async def status_of(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as resp:
        return resp.status, await resp.text()


async def test_health_readiness_and_metrics(intake: Intake, http: aiohttp.ClientSession) -> None:
    assert (await status_of(http, intake.url + "/healthz"))[0] == 200
    assert (await status_of(http, intake.url + "/readyz"))[0] == 200
    async with http.post(intake.url + "/v1/webform", json=FORM) as resp:
        assert resp.status == 202
    async with http.get(intake.url + "/metrics") as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"
        metrics = await resp.text()
    assert re.search(r'^casegate_intake_webform_total\{outcome="accepted"\} [1-9]', metrics, re.M)
    assert 'casegate_bus_published_total{type="message.received.webform"}' in metrics

    await intake.app[BUS].connection.close()  # type: ignore[union-attr]
    status, text = await status_of(http, intake.url + "/readyz")
    assert status == 503 and "bus" in json.loads(text)["failures"]
    assert (await status_of(http, intake.url + "/healthz"))[0] == 200

