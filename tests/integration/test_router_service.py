"""The router as it runs: init_app on the real broker with its policy files, a `case.opened`
in, exactly one `case.route_decided` out; a `case.sla_breached` in, one
`case.escalation_decided` out; the dry-run endpoint, reloads and readiness over real HTTP."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from aiohttp import web

from casegate_router.app import init_app
from casegate_router.domain import RulesError
from casegate_router.domain.loader import version_of
from casegate_router.settings import Settings
from casegate_shared.bus import ERROR_HEADER, Bus
from casegate_shared.events import (
    CaseChange,
    CaseCustomer,
    CaseOpened,
    CaseSnapshot,
    CaseUpdated,
    Channel,
    Contact,
    Envelope,
    EscalationDecided,
    Priority,
    RouteDecided,
    derived_event_id,
    envelope,
    new_case_ref,
)
from casegate_shared.settings import BusSettings
from tests.conftest import ROOT, eventually, free_port

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
    escalated: aio_pika.abc.AbstractQueue  # sees every case.escalation_decided
    rules_file: Path
    channel: aio_pika.abc.AbstractChannel
    settings: Settings


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
    """The rules given, the shipped SLA and teams files beside them (all in the test's own
    directory, which the router watches)."""
    for name in ("sla.yaml", "teams.yaml"):
        if not (rules_file.parent / name).exists():
            shutil.copy(ROOT / "config" / name, rules_file.parent / name)
    return Settings(
        **bus_settings.model_dump(),
        rules_file=rules_file,
        sla_file=rules_file.parent / "sla.yaml",
        teams_file=rules_file.parent / "teams.yaml",
    )


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
    escalated = await channel.declare_queue(exclusive=True)
    await escalated.bind(exchange, EscalationDecided.event_type)

    settings = settings_for(bus_settings, rules_file)
    runner = web.AppRunner(await init_app(settings))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    publisher = Bus(bus_settings, source="test")
    await publisher.connect()
    try:
        yield Router(
            f"http://127.0.0.1:{port}", publisher, decided, escalated, rules_file, channel, settings
        )
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
        ("@sla_policy", True, "SLA policy standard"),
        ("@version", True, f"rules version {version_of(RULES)}"),
    ]
    # The SLA clocks case-store keeps and its sweeper watches, in emea business time (P2:
    # 4 working hours to a first response, 24 to resolution, warnings at 80 %).
    assert (data.sla_policy, data.region, data.rules_version) == (
        "standard", "emea", version_of(RULES),
    )
    assert data.first_response_warn_at and data.first_response_due and data.resolution_due
    opened_at = case.data.opened_at
    assert opened_at < data.first_response_warn_at < data.first_response_due
    assert data.first_response_due < data.resolution_warn_at < data.resolution_due
    assert data.first_response_due - opened_at >= timedelta(hours=4)


async def test_unmatched_case_goes_to_the_default_and_says_why(router: Router) -> None:
    case = opened("Hello", "Can I change my address?", channel=Channel.EMAIL)
    await router.bus.publish(case)
    data = (await first(router.decided)).data
    assert (data.team, data.priority, data.rule) == ("support", Priority.P3, "default")
    assert [(v.rule, v.matched) for v in data.explanation] == [
        ("billing", False), ("sms", False), ("default", True), ("@sla_policy", True),
        ("@version", True),
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
        "sla_policy": "standard",
        "assignment": None,
        "rules_version": version_of(RULES),
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

    status, answer = await post(url, b'{"channel": "sms", "at": "2025-01-06T10:00:00", "priority": "P0"}')
    assert status == 422
    assert set(answer["fields"]) == {"at", "priority"}  # type: ignore[arg-type]

    async with aiohttp.ClientSession() as http:
        too_big = b'{"channel": "sms", "body": "' + b"x" * (1024 * 1024 + 1) + b'"}'
        async with http.post(url, data=too_big) as resp:
            assert resp.status == 413


async def test_ready_when_the_bus_consumes(router: Router) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{router.url}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["checks"] == ["bus"]


async def test_bad_rules_file_stops_the_start_before_connecting(
    tmp_path: Path, bus_settings: BusSettings
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES.replace("keywords:", "keyword:"))
    with pytest.raises(RulesError) as caught:
        await init_app(settings_for(bus_settings, rules_file))
    assert str(caught.value) == f"{rules_file}:4: rules[0].when.keyword: unknown field"


async def test_rules_naming_an_unknown_sla_policy_stop_the_start(
    tmp_path: Path, bus_settings: BusSettings
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES.replace("team: mobile,", "team: mobile, sla_policy: gold,"))
    with pytest.raises(RulesError) as caught:
        await init_app(settings_for(bus_settings, rules_file))
    assert str(caught.value).startswith(
        f"{rules_file}:8: rules[1].then.sla_policy: unknown SLA policy 'gold'"
    )


async def test_explain_endpoint_takes_the_customer_and_the_time(router: Router) -> None:
    router.rules_file.write_text(VIP_RULES)
    await eventually(lambda: version_is(router, version_of(VIP_RULES)))
    status, answer = await post(
        f"{router.url}/v1/rules/explain",
        b'{"channel": "email", "subject": "hi", "customer_tier": "gold",'
        b' "at": "2025-01-11T12:00:00+01:00", "sender_email": "ada@example.com"}',
    )
    assert status == 200, answer
    assert (answer["team"], answer["sla_policy"], answer["tags"]) == ("weekend", "premium", ["vip"])
    assert answer["explanation"] == [
        {"rule": "vip", "matched": True, "reason": "customer tier is gold"},
        {"rule": "weekend", "matched": True,
         "reason": "sender domain is example.com and arrived outside business hours of region emea"},
    ]


VIP_RULES = """\
rules:
  - name: vip
    when: {customer_tier: [gold]}
    then: {tags: [vip], sla_policy: premium}
    stop: false
  - name: weekend
    when: {sender_domain: [example.com], business_hours: false}
    then: {team: weekend, priority: P2}
default: {team: support, priority: P3}
"""


async def version_is(router: Router, version: str) -> bool:
    status, answer = await post(f"{router.url}/v1/rules/explain", b'{"channel": "sms"}')
    return status == 200 and answer["rules_version"] == version


async def metric(router: Router, name: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{router.url}/metrics") as resp:
            text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_changed_rules_file_is_applied_and_a_broken_one_refused(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    ok_before = await metric(router, 'casegate_router_rules_reload_total{result="ok"}')
    errors_before = await metric(router, 'casegate_router_rules_reload_total{result="error"}')

    # A deploy that writes a new file and renames it over the old one.
    changed = RULES.replace("team: mobile", "team: texting")
    staged = router.rules_file.with_suffix(".new")
    staged.write_text(changed)
    os.replace(staged, router.rules_file)
    await eventually(lambda: version_is(router, version_of(changed)))
    os.utime(router.rules_file, (1_700_000_000, 1_700_000_000))  # same text: no reload
    case = opened("hi", "text me", channel=Channel.SMS)
    await router.bus.publish(case)
    data = (await first(router.decided)).data
    assert data.team == "texting"
    assert data.explanation[-1].reason == f"rules version {version_of(changed)}"
    assert await metric(router, 'casegate_router_rules_reload_total{result="ok"}') == ok_before + 1
    mtime = await metric(router, "casegate_router_rules_loaded_mtime_seconds")
    assert abs(mtime - router.rules_file.stat().st_mtime) < 86400 * 365 * 30  # a real time

    # An editor saving a broken file in place: refused, the rules in force stay.
    router.rules_file.write_text(changed.replace("priority: P3", "priority: P9"))

    async def refused() -> bool:
        return await metric(router, 'casegate_router_rules_reload_total{result="error"}') == errors_before + 1

    await eventually(refused)
    [logged] = [r for r in caplog.records if r.name == "casegate_router.reload" and r.levelname == "ERROR"]
    assert logged.getMessage() == "changed rules file refused, the rules in force stay"
    assert logged.problems == [  # type: ignore[attr-defined]
        f"{router.rules_file}:8: rules[1].then.priority: Input should be 'P1', 'P2', 'P3' or 'P4'",
        f"{router.rules_file}:9: default.priority: Input should be 'P1', 'P2', 'P3' or 'P4'",
    ]
    assert await version_is(router, version_of(changed))
    case = opened("hi", "text me", channel=Channel.SMS)
    await router.bus.publish(case)
    assert (await first(router.decided)).data.team == "texting"

    # Fixing it applies the fix.
    router.rules_file.write_text(RULES)
    await eventually(lambda: version_is(router, version_of(RULES)))
    assert await metric(router, 'casegate_router_rules_reload_total{result="ok"}') == ok_before + 2


async def test_customer_and_region_come_from_the_case_snapshot(router: Router) -> None:
    router.rules_file.write_text(VIP_RULES)
    await eventually(lambda: version_is(router, version_of(VIP_RULES)))
    case = opened("hello", "just a question")
    snapshot = CaseSnapshot(
        ref=case.data.ref, subject="hello", channel=Channel.WEBFORM, status="new",
        priority=Priority.P3, region="apac",
        customer=Contact(customer_id=1, email="ada@example.com", tier="gold", tags=["press"]),
    )
    # Saturday noon in Berlin is Saturday evening in Tokyo: outside business hours either way.
    saturday = datetime(2025, 1, 11, 11, 0, tzinfo=UTC)
    await router.bus.publish(
        case.model_copy(update={"data": case.data.model_copy(update={"case": snapshot, "opened_at": saturday})})
    )
    data = (await first(router.decided)).data
    assert (data.team, data.priority, data.tags) == ("weekend", Priority.P2, ["vip"])
    assert [(v.rule, v.reason) for v in data.explanation] == [
        ("vip", "customer tier is gold"),
        ("weekend", "sender domain is example.com and arrived outside business hours of region apac"),
        ("@sla_policy", "SLA policy premium"),
        ("@version", f"rules version {version_of(VIP_RULES)}"),
    ]


def breach(team: str, clock: str | None, priority: Priority = Priority.P3) -> Envelope[CaseUpdated]:
    ref = new_case_ref()
    snapshot = CaseSnapshot(
        ref=ref, subject="s", channel=Channel.EMAIL, status="open", priority=priority, team=team,
        customer=Contact(customer_id=1),
    )
    return envelope(
        CaseUpdated(change=CaseChange.SLA_BREACHED, ref=ref, actor="case-store", case=snapshot,
                    clock=clock, due_at=datetime.now(UTC)),
        source="case-store",
        subject=ref,
        routing_key="case.sla_breached",
    )


async def test_a_breach_gets_one_escalation_decision(router: Router) -> None:
    event = breach("billing", "resolution", Priority.P2)
    await router.bus.publish(event)
    deadline = asyncio.get_running_loop().time() + 10
    while (message := await router.escalated.get(no_ack=True, fail=False)) is None:
        assert asyncio.get_running_loop().time() < deadline, "no case.escalation_decided arrived"
        await asyncio.sleep(0.02)
    decided = Envelope[EscalationDecided].model_validate_json(message.body)
    assert decided.id == derived_event_id("case.escalation_decided", event.id)
    assert (decided.subject, decided.correlationid) == (event.data.ref, event.correlationid)
    assert decided.data.model_dump() == {
        "ref": event.data.ref,
        "clock": "resolution",
        "team": "billing-escalations",
        "assignee": "billing-lead",
        "priority": Priority.P1,
        "reason": "resolution target breached for team billing; by the path of team billing: "
        "to team billing-escalations, assigned to billing-lead, priority P2 -> P1",
    }


async def test_a_breach_without_a_clock_is_parked_with_the_reason(router: Router) -> None:
    await router.bus.publish(breach("billing", None))
    parked = f"{router.settings.bus_prefix}.router.escalations.dlq"
    queue = await router.channel.declare_queue(parked, durable=True, passive=True)
    deadline = asyncio.get_running_loop().time() + 10
    while (message := await queue.get(no_ack=True, fail=False)) is None:
        assert asyncio.get_running_loop().time() < deadline, "nothing was parked"
        await asyncio.sleep(0.02)
    assert "the breach names no known clock" in str(message.headers[ERROR_HEADER])
    assert await router.escalated.get(no_ack=True, fail=False) is None


def test_service_with_a_bad_rules_file_exits_with_the_problem(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES.replace("P2", "P5"))
    env = {
        **os.environ,
        "CASEGATE_RULES_FILE": str(rules_file),
        "CASEGATE_SLA_FILE": str(ROOT / "config/sla.yaml"),
        "CASEGATE_TEAMS_FILE": str(ROOT / "config/teams.yaml"),
        "CASEGATE_ROUTER_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", "casegate_router"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert "the rules file is invalid" in done.stdout
    assert f"{rules_file}:5: rules[0].then.priority" in done.stdout
