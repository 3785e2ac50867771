"""Hot reload under load: the rules file is replaced while 1000 cases flow through a running
router on the real broker. Every case is routed exactly once, by the old rules or the new ones,
and every decision names the version of the file that decided it."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
from aiohttp import web

from casegate_router.app import POLICIES, init_app
from casegate_router.domain.loader import version_of
from casegate_router.settings import Settings
from casegate_shared.bus import Bus
from casegate_shared.events import (
    CaseCustomer,
    CaseOpened,
    Channel,
    Envelope,
    Priority,
    RouteDecided,
    envelope,
    new_case_ref,
)
from casegate_shared.settings import BusSettings
from tests.conftest import ROOT

CASES = 1000
SWAP_AFTER = 300

OLD = """\
rules:
  - name: billing
    when: {keywords: [refund]}
    then: {team: billing-old, priority: P2}
default: {team: support-old, priority: P3}
"""
NEW = """\
rules:
  - name: billing
    when: {keywords: [refund]}
    then: {team: billing-new, priority: P2}
  - name: sms
    when: {channel: [sms]}
    then: {team: mobile-new, priority: P3}
default: {team: support-new, priority: P3}
"""
OLD_VERSION, NEW_VERSION = version_of(OLD), version_of(NEW)


def opened(i: int) -> Envelope[CaseOpened]:
    ref = new_case_ref()
    return envelope(
        CaseOpened(
            ref=ref,
            customer=CaseCustomer(id=i, email=f"c{i}@example.com"),
            channel=Channel.SMS if i % 3 == 0 else Channel.EMAIL,
            subject="refund" if i % 2 else "hello",
            body="",
            priority=Priority.P3,
            status="new",
            opened_at=datetime.now(UTC),
        ),
        source="case-store",
        subject=ref,
    )


def expected_team(i: int, version: str) -> str:
    suffix = "old" if version == OLD_VERSION else "new"
    if i % 2:
        return f"billing-{suffix}"
    if i % 3 == 0 and suffix == "new":
        return "mobile-new"
    return f"support-{suffix}"


async def test_rules_change_while_cases_flow(
    bus_settings: BusSettings, publisher: Bus, tmp_path: Path
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(OLD)
    for name in ("sla.yaml", "teams.yaml"):
        shutil.copy(ROOT / "config" / name, tmp_path / name)
    settings = Settings(
        **bus_settings.model_dump(),
        rules_file=rules_file,
        sla_file=tmp_path / "sla.yaml",
        teams_file=tmp_path / "teams.yaml",
    )

    observer = await aio_pika.connect(bus_settings.amqp_url)
    channel = await observer.channel()
    exchange = await channel.declare_exchange(
        bus_settings.bus_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    decided_queue = await channel.declare_queue(exclusive=True)
    await decided_queue.bind(exchange, RouteDecided.event_type)

    app = await init_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        events = [opened(i) for i in range(CASES)]
        index_of = {e.data.ref: i for i, e in enumerate(events)}
        after_swap: set[str] = set()  # published once the new rules were seen in force

        async def publish_all() -> None:
            for start in range(0, CASES, 25):
                batch = events[start : start + 25]
                swapped = app[POLICIES].current().version == NEW_VERSION
                await asyncio.gather(*(publisher.publish(e) for e in batch))
                if swapped:
                    after_swap.update(e.data.ref for e in batch)
                if start + 25 == SWAP_AFTER:
                    # A deploy: write beside, rename over (what editors and ConfigMaps do too).
                    staged = tmp_path / "rules.yaml.tmp"
                    staged.write_text(NEW)
                    os.replace(staged, rules_file)

        decisions: dict[str, list[Envelope[RouteDecided]]] = {}

        async def collect() -> None:
            async with decided_queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    decision = Envelope[RouteDecided].model_validate_json(message.body)
                    decisions.setdefault(decision.data.ref, []).append(decision)
                    if sum(map(len, decisions.values())) >= CASES:
                        return

        collector = asyncio.create_task(collect())
        await publish_all()
        await asyncio.wait_for(collector, timeout=120)
        await asyncio.sleep(1.0)  # anything more arriving now would be a double
        extra = await decided_queue.get(no_ack=True, fail=False)
        assert extra is None, "a case was routed twice"
    finally:
        await runner.cleanup()
        await observer.close()

    assert set(decisions) == set(index_of), "a case was not routed"
    assert all(len(d) == 1 for d in decisions.values()), "a case was routed twice"
    versions: dict[str, int] = {}
    for ref, [decision] in decisions.items():
        note = decision.data.explanation[-1]
        assert (note.rule, note.matched) == ("@version", True)
        version = note.reason.removeprefix("rules version ")
        assert version in (OLD_VERSION, NEW_VERSION)
        assert decision.data.team == expected_team(index_of[ref], version), ref
        versions[version] = versions.get(version, 0) + 1
        if ref in after_swap:
            assert version == NEW_VERSION, "a case published after the swap used the old rules"
    assert versions.get(OLD_VERSION, 0) >= SWAP_AFTER // 2, versions
    assert len(after_swap) >= CASES // 2, "the new rules were not in force soon enough"
    assert set(versions) == {OLD_VERSION, NEW_VERSION}
