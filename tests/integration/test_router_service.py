"""The router as it runs: init_app on the real broker with a rules file, a `case.opened` in,
exactly one `case.route_decided` out; the dry-run endpoint and readiness over real HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from aiohttp import web

from casegate_router.app import init_app
from casegate_router.domain import RulesError
from casegate_router.settings import Settings
from casegate_shared.bus import Bus
from casegate_shared.events import (
    CaseCustomer,
    CaseOpened,
    Channel,
    Envelope,
    Priority,
    RouteDecided,
    derived_event_id,
    envelope,
    new_case_ref,
)
from casegate_shared.settings import BusSettings
from tests.conftest import ROOT, free_port

RULES = """\
rules:
  - name: billing
    when:
      keywords: [refund, invoice]
    then: {team: billing, priority: P2}
  - name: sms
    when: {channel: [sms]}
    then: {team: mobile, priority: P3}
default: {team: support, priority: P3}
"""


@dataclass
class Router:
    url: str
    bus: Bus  # a second connection, the test's own publisher
    decided: aio_pika.abc.AbstractQueue  # sees every case.route_decided


def opened(subject: str, body: str, channel: Channel = Channel.WEBFORM) -> Envelope[CaseOpened]:
    ref = new_case_ref()
    return envelope(
        CaseOpened(
            ref=ref,
            customer=CaseCustomer(id=1, name="Ada", email="ada@example.com"),
            channel=channel,
            subject=subject,
            body=body,
            priority=Priority.P3,
            status="new",
            opened_at=datetime.now(UTC),
        ),
        source="case-store",
        subject=ref,
    )


def settings_for(bus_settings: BusSettings, rules_file: Path) -> Settings:
    return Settings(**bus_settings.model_dump(), rules_file=rules_file)


@pytest.fixture
async def router(bus_settings: BusSettings, tmp_path: Path) -> AsyncIterator[Router]:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    observer = await aio_pika.connect(bus_settings.amqp_url)
    channel = await observer.channel()
    exchange = await channel.declare_exchange(
        bus_settings.bus_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    decided = await channel.declare_queue(exclusive=True)
    await decided.bind(exchange, RouteDecided.event_type)

    runner = web.AppRunner(await init_app(settings_for(bus_settings, rules_file)))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    publisher = Bus(bus_settings, source="test")
    await publisher.connect()
    try:
        yield Router(f"http://127.0.0.1:{port}", publisher, decided)
    finally:
        await publisher.close()
        await runner.cleanup()
        await observer.close()


async def received(
    queue: aio_pika.abc.AbstractQueue, settle: float
) -> list[Envelope[RouteDecided]]:
    """Everything that arrives until `settle` seconds pass without a new message."""
    found: list[Envelope[RouteDecided]] = []
    quiet_until = asyncio.get_running_loop().time() + settle
    while asyncio.get_running_loop().time() < quiet_until:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.02)
            continue
        found.append(Envelope[RouteDecided].model_validate_json(message.body))
        quiet_until = asyncio.get_running_loop().time() + settle
    return found


async def first(queue: aio_pika.abc.AbstractQueue, timeout: float = 10.0) -> Envelope[RouteDecided]:
    deadline = asyncio.get_running_loop().time() + timeout
    while (message := await queue.get(no_ack=True, fail=False)) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("no case.route_decided arrived")
        await asyncio.sleep(0.02)
    return Envelope[RouteDecided].model_validate_json(message.body)


async def test_opened_case_gets_exactly_one_decision_with_its_explanation(router: Router) -> None:
    case = opened("Where is my refund?", "Ordered last week.")
    await router.bus.publish(case)

    decision = await first(router.decided)
    assert await received(router.decided, settle=0.5) == []  # and nothing more
    assert decision.type == "case.route_decided"
    assert decision.source == "router"
    assert decision.subject == case.data.ref
    assert decision.correlationid == case.correlationid
    assert decision.id == derived_event_id("case.route_decided", case.id)
    data = decision.data
    assert (data.ref, data.team, data.priority, data.rule) == (
        case.data.ref, "billing", Priority.P2, "billing",
    )
    assert [(v.rule, v.matched, v.reason) for v in data.explanation] == [
        ("billing", True, "keyword 'refund' found in subject"),
    ]


async def test_unmatched_case_goes_to_the_default_and_says_why(router: Router) -> None:
    case = opened("Hello", "Can I change my address?", channel=Channel.EMAIL)
    await router.bus.publish(case)
    data = (await first(router.decided)).data
    assert (data.team, data.priority, data.rule) == ("support", Priority.P3, "default")
    assert [(v.rule, v.matched) for v in data.explanation] == [
        ("billing", False), ("sms", False), ("default", True),
    ]
    assert data.explanation[1].reason == "channel email is not sms"


async def test_redelivered_case_republishes_the_same_event(router: Router) -> None:
    case = opened("hi", "text me", channel=Channel.SMS)
    await router.bus.publish(case)
    await router.bus.publish(case)  # what the broker does after a lost ack
    decisions = [await first(router.decided), await first(router.decided)]
    assert {d.id for d in decisions} == {derived_event_id("case.route_decided", case.id)}
    assert {d.data.team for d in decisions} == {"mobile"}


async def post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            return resp.status, await resp.json()


async def test_explain_endpoint_answers_team_rule_and_reasons(router: Router) -> None:
    status, answer = await post(
        f"{router.url}/v1/rules/explain",
        b'{"channel": "sms", "subject": "", "body": "my INVOICE is wrong"}',
    )
    assert status == 200, answer
    assert answer == {
        "team": "billing",
        "priority": "P2",
        "rule": "billing",
        "tags": [],
        "explanation": [
            {"rule": "billing", "matched": True, "reason": "keyword 'invoice' found in body"}
        ],
    }


async def test_explain_endpoint_refuses_bad_input(router: Router) -> None:
    url = f"{router.url}/v1/rules/explain"
    status, answer = await post(url, b'{"channel": "sms", "subject": ')
    assert (status, answer) == (400, {"error": "the body is not valid JSON"})

    status, answer = await post(url, b'{"channel": "fax", "subjekt": "x", "body": 3}')
    assert status == 422
    assert answer["error"] == "invalid fields"
    assert set(answer["fields"]) == {"channel", "subjekt", "body"}  # type: ignore[arg-type]

    async with aiohttp.ClientSession() as http:
        too_big = b'{"channel": "sms", "body": "' + b"x" * (1024 * 1024 + 1) + b'"}'
        async with http.post(url, data=too_big) as resp:
            assert resp.status == 413


async def test_ready_when_the_bus_consumes(router: Router) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{router.url}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["checks"] == ["bus"]


async def test_bad_rules_file_stops_the_start_before_connecting(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES.replace("keywords:", "keyword:"))
    with pytest.raises(RulesError) as caught:
        await init_app(Settings(rules_file=rules_file))
    assert str(caught.value) == f"{rules_file}:4: rules[0].when.keyword: unknown field"


def test_service_with_a_bad_rules_file_exits_with_the_problem(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES.replace("P2", "P5"))
    env = {
        **os.environ,
        "CASEGATE_RULES_FILE": str(rules_file),
        "CASEGATE_ROUTER_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", "casegate_router"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert "the rules file is invalid" in done.stdout
    assert f"{rules_file}:5: rules[0].then.priority" in done.stdout
