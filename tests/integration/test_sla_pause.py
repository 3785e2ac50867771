"""A case that waited for the customer: case-store moves its SLA clocks on by the wall time
at once, the router answers in business time of the case's region, case-store applies that
answer to that resume only, and the timeline says what happened. Real bus, real database,
both services running."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from tests.conftest import eventually, free_port
from tests.integration.test_case_store_api import token_for
from tests.integration.test_case_store_service import running

from casegate_case_store.settings import Settings as CaseStoreSettings
from casegate_case_store.store.users import Role
from casegate_router.app import init_app as init_router
from casegate_router.domain import PolicyFiles, load_policies
from casegate_router.domain.sla import calendar_for, resume_clocks
from casegate_router.settings import Settings as RouterSettings
from casegate_shared.bus import Bus
from casegate_shared.events import Priority, SlaDecided, envelope
from casegate_shared.settings import BusSettings

ROOT = Path(__file__).resolve().parents[2]
TIMES = ("first_response_warn_at", "first_response_due", "resolution_warn_at", "resolution_due")


@pytest.fixture
async def router(bus_settings: BusSettings, tmp_path: Path) -> AsyncIterator[None]:
    for name in ("rules.yaml", "sla.yaml", "teams.yaml"):
        shutil.copy(ROOT / "config" / name, tmp_path / name)
    settings = RouterSettings(**bus_settings.model_dump(), rules_file=tmp_path / "rules.yaml",
                              sla_file=tmp_path / "sla.yaml", teams_file=tmp_path / "teams.yaml",
                              rules_reload=False)
    runner = web.AppRunner(await init_router(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", free_port()).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def waiting_case(db: asyncpg.Connection, paused_at: datetime) -> tuple[str, dict[str, datetime]]:
    """An emea case that has waited for the customer since `paused_at`, its clocks far off."""
    times = {name: paused_at + timedelta(days=days)
             for name, days in zip(TIMES, (5, 6, 12, 14), strict=True)}
    await db.execute("INSERT INTO customers (id, name) VALUES (1, 'Pat')")
    ref = await db.fetchval(
        "INSERT INTO cases (ref, customer_id, channel, subject, status, priority, team, region, "
        "pending_since, first_response_warn_at, first_response_due, resolution_warn_at, "
        "resolution_due) VALUES ('CS-PA7E9K', 1, 'email', 'Invoice', 'pending_customer', 'P3', "
        "'billing', 'emea', $1, $2, $3, $4, $5) RETURNING ref", paused_at, *times.values(),
    )
    return ref, times


async def test_the_clocks_lose_only_the_working_time_of_the_wait(
    bus_settings: BusSettings, clean_db: str, router: None
) -> None:
    db = await asyncpg.connect(clean_db)
    settings = CaseStoreSettings(**bus_settings.model_dump(), database_url=clean_db,
                                 case_store_port=free_port())
    paused_at = datetime.now(UTC) - timedelta(days=3)  # three days hold at most 30 working hours
    try:
        ref, before = await waiting_case(db, paused_at)
        token = await token_for(db, "sue", Role.SUPERVISOR)
        async with running(settings), aiohttp.ClientSession() as http:
            answer = await http.post(
                f"http://127.0.0.1:{settings.case_store_port}/v1/cases/{ref}/status",
                json={"status": "open", "reason_code": "in_progress"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status == 200, await answer.text()

            async def moved_for_the_wait() -> bool:
                return bool(await db.fetchval(
                    "SELECT count(*) FROM timeline_entries WHERE kind = 'sla' "
                    "AND body LIKE 'SLA clocks moved for the wait:%'"))

            await eventually(moved_for_the_wait)
            row = await db.fetchrow(f"SELECT clocks_resumed_at, {', '.join(TIMES)} FROM cases")
        resumed_at = row["clocks_resumed_at"]
        sla = load_policies(PolicyFiles(ROOT / "config" / "rules.yaml",
                                        ROOT / "config" / "sla.yaml",
                                        ROOT / "config" / "teams.yaml")).sla
        calendar = calendar_for(sla.policy(None), Priority.P3, sla.region("emea"))
        expected = resume_clocks(calendar, paused_at, resumed_at, before)
        assert {name: row[name] for name in TIMES} == expected.times
        # A late answer to another resume (the case waited again since) changes nothing.
        stale = SlaDecided(ref=ref, resumed_at=resumed_at - timedelta(minutes=5),
                           first_response_due=resumed_at, reason="an older wait")
        bus = Bus(bus_settings, source="test")
        await bus.connect()
        try:
            async with running(settings):
                await bus.publish(envelope(stale, source="router", subject=ref))

                async def seen() -> bool:
                    return bool(await db.fetchval(
                        "SELECT count(*) FROM inbox WHERE consumer = 'clocks'") >= 2)

                await eventually(seen)
        finally:
            await bus.close()
        assert await db.fetchval("SELECT first_response_due FROM cases") == row["first_response_due"]
    finally:
        await db.close()
