"""The SLA sweeper with several replicas and a SIGKILL: every running clock gets exactly one
warning and one breach, none lost, none doubled; paused and met clocks stay quiet; a route
decision sets the due times; an escalation decision moves the case."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from typing import Any

import asyncpg
from tests.conftest import eventually, free_port
from tests.integration.test_case_store_service import Observer, running

from casegate_case_store.clocks import apply_sla_decision
from casegate_case_store.domain.cases import CaseStatus
from casegate_case_store.domain.transitions import customer_returned
from casegate_case_store.settings import Settings
from casegate_case_store.store.changes import apply_status, lock_visible_any
from casegate_case_store.store.db import create_pool
from casegate_case_store.store.sla import SlaSweeper
from casegate_shared.bus import Bus
from casegate_shared.events import EscalationDecided, Priority, SlaDecided, envelope
from casegate_shared.settings import BusSettings

SEED = """
INSERT INTO customers (id, name) VALUES (1, 'Pat') ON CONFLICT DO NOTHING;
"""
CASES = """
INSERT INTO cases (ref, customer_id, channel, subject, status, priority, team,
                   first_response_warn_at, first_response_due)
SELECT 'CS-' || lpad(g::text, 6, 'A'), 1, 'email', 'case ' || g, $2, 'P2', 'billing',
       now() + make_interval(secs => $3), now() + make_interval(secs => $4)
FROM generate_series($5::int, $5::int + $1 - 1) g
"""


async def seed(db: asyncpg.Connection, n: int, *, start: int = 1, status: str = "open",
               warn_in: float = 0.5, due_in: float = 1.0) -> None:
    await db.execute(SEED)
    await db.execute(CASES, n, status, warn_in, due_in, start)


def sla_events(received: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((e["subject"], e["type"]) for e in received
                   if e["type"] in ("case.sla_warning", "case.sla_breached"))


def drain(observer: Observer) -> list[dict[str, Any]]:
    found = []
    while not observer.received.empty():
        found.append(observer.received.get_nowait())
    return found


async def test_two_replicas_raise_each_warning_and_breach_exactly_once(
    bus_settings: BusSettings, clean_db: str
) -> None:
    observer = Observer(bus_settings, ["case.#"])
    await observer.start()
    base = dict(**bus_settings.model_dump(), database_url=clean_db, sla_sweep_s=0.05,
                outbox_poll_s=0.2)
    db = await asyncpg.connect(clean_db)
    try:
        await seed(db, 500)
        await seed(db, 20, start=900, status="pending_customer")  # paused: never raised
        async with running(Settings(**base, case_store_port=free_port())), \
                running(Settings(**base, case_store_port=free_port())):
            async def done() -> bool:
                return await db.fetchval(
                    "SELECT count(*) FROM cases WHERE first_response_breached") == 500 and \
                    await db.fetchval("SELECT count(*) FROM outbox") == 0

            await eventually(done, timeout=60)
            await asyncio.sleep(1.0)
        received = drain(observer)
        ids = Counter(e["id"] for e in received)
        assert max(ids.values()) == 1
        counts = sla_events(received)
        assert len(counts) == 1000 and set(counts.values()) == {1}
        assert not any(ref.startswith("CS-AAA9") for ref, _ in counts)  # the paused ones
        warned = await db.fetchval("SELECT count(*) FROM timeline_entries WHERE kind = 'sla'")
        assert warned == 1000
    finally:
        await db.close()
        await observer.close()


async def test_a_replica_killed_mid_sweep_loses_and_doubles_nothing(
    bus_settings: BusSettings, clean_db: str
) -> None:
    observer = Observer(bus_settings, ["case.#"])
    await observer.start()
    db = await asyncpg.connect(clean_db)
    bus_env = {f"CASEGATE_{k.upper()}": str(v) for k, v in bus_settings.model_dump().items()}
    env = {**os.environ, **bus_env, "CASEGATE_DATABASE_URL": clean_db,
           "CASEGATE_CASE_STORE_PORT": str(free_port()), "CASEGATE_SLA_SWEEP_S": "0.05",
           "CASEGATE_LOG_LEVEL": "WARNING"}
    total = 2000
    try:
        await seed(db, total, warn_in=3.0, due_in=3.5)
        victim = subprocess.Popen([sys.executable, "-m", "casegate_case_store"], env=env)

        async def sweeping() -> bool:
            return await db.fetchval(
                "SELECT count(*) FROM cases WHERE first_response_warned") > 0

        await eventually(sweeping, timeout=30)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        survivor = Settings(**bus_settings.model_dump(), database_url=clean_db,
                            sla_sweep_s=0.05, outbox_poll_s=0.2, case_store_port=free_port())
        async with running(survivor):
            async def done() -> bool:
                return await db.fetchval(
                    "SELECT count(*) FROM cases WHERE first_response_breached") == total and \
                    await db.fetchval("SELECT count(*) FROM outbox") == 0

            await eventually(done, timeout=90)
            await asyncio.sleep(1.0)
        counts = sla_events(drain(observer))
        # The killed replica may have published a batch and died before deleting it from
        # the outbox: the survivor republishes it under the same event ids (consumers
        # dedupe on the id). Per case and clock there is still one event identity each.
        assert len(counts) == 2 * total
        entries = await db.fetchval("SELECT count(*) FROM timeline_entries WHERE kind = 'sla'")
        assert entries == 2 * total
    finally:
        await db.close()
        await observer.close()


async def test_route_decision_sets_due_times_and_escalation_moves_the_case(
    bus_settings: BusSettings, clean_db: str, publisher: Bus
) -> None:
    observer = Observer(bus_settings, ["case.escalated"])
    await observer.start()
    db = await asyncpg.connect(clean_db)
    settings = Settings(**bus_settings.model_dump(), database_url=clean_db, sla_sweep_s=0.05,
                        case_store_port=free_port())
    try:
        await seed(db, 1, warn_in=3600, due_in=7200)
        await db.execute("INSERT INTO users (handle, name, roles) VALUES "
                         "('lead', 'Lead', '{supervisor}')")
        ref = await db.fetchval("SELECT ref FROM cases")
        async with running(settings):
            decision = EscalationDecided(ref=ref, clock="first_response", team="escalations",
                                         assignee="lead", priority=Priority.P1,
                                         reason="billing breaches go to escalations")
            await publisher.publish(envelope(decision, source="router", subject=ref))
            (escalated,) = await observer.take()
        assert escalated["type"] == "case.escalated"
        assert escalated["data"]["escalated_to"] == "lead"
        snap = escalated["data"]["case"]
        assert (snap["team"], snap["assignee"], snap["priority"]) == ("escalations", "lead", "P1")
        body = await db.fetchval("SELECT body FROM timeline_entries WHERE kind = 'escalation'")
        assert "billing/(unassigned) -> escalations/lead" in body
    finally:
        await db.close()
        await observer.close()


async def test_a_clock_stopped_before_its_time_does_not_keep_the_sweeper_awake(
    clean_db: str,
) -> None:
    """A case answered before its warning time still has that time on it; the sweeper must
    sleep its full interval rather than wake at once for a clock it will never raise."""
    db = await asyncpg.connect(clean_db)
    pool = await create_pool(clean_db, max_size=2)
    try:
        await seed(db, 1, warn_in=-60, due_in=3600)
        await db.execute("UPDATE cases SET first_response_at = now() - interval '2 minutes'")
        sweeper = SlaSweeper(pool, interval_s=7.0)
        assert await sweeper.sweep_once() == 0
        assert await sweeper._until_next() == 7.0
        await db.execute("UPDATE cases SET first_response_at = NULL")  # running again: due now
        assert await sweeper._until_next() == 0.01
    finally:
        await pool.close()
        await db.close()


async def test_a_resumed_case_holds_its_clocks_until_the_routers_answer(clean_db: str) -> None:
    """The wall-time shift of a wait can be early (a wait that began in working hours and
    ended after them): until the router answers in working time, or the grace runs out, the
    case neither warns nor breaches, and the sweeper does not spin on its overdue times."""
    db = await asyncpg.connect(clean_db)
    pool = await create_pool(clean_db, max_size=2)
    try:
        # Both times overdue even after the hour waited is added to them.
        await seed(db, 1, warn_in=-7200, due_in=-5400)
        await db.execute("UPDATE cases SET status = 'pending_customer', "
                         "pending_since = now() - interval '1 hour'")
        ref = await db.fetchval("SELECT ref FROM cases")
        async with pool.acquire() as conn, conn.transaction():
            case = await lock_visible_any(conn, ref)
            assert case is not None
            now = await conn.fetchval("SELECT now()")
            stamp = customer_returned(CaseStatus.PENDING_CUSTOMER, now, now - timedelta(hours=1))
            await apply_status(conn, case, stamp, None, "test")
        hold = await db.fetchval("SELECT clocks_hold_until - clocks_resumed_at FROM cases")
        assert hold == timedelta(minutes=30)
        sweeper = SlaSweeper(pool, interval_s=7.0)
        assert await sweeper.sweep_once() == 0  # held
        assert await sweeper._until_next() == 7.0  # and not woken by the overdue times

        # The answer moves the times into the future and ends the hold: still nothing due.
        answer = SlaDecided(ref=ref, resumed_at=now, reason="test",
                            first_response_warn_at=now + timedelta(hours=2),
                            first_response_due=now + timedelta(hours=3))
        await apply_sla_decision(pool, envelope(answer, source="router"))
        assert await db.fetchval("SELECT clocks_hold_until FROM cases") is None
        assert await sweeper.sweep_once() == 0

        # No answer within the grace: the wall-time shift stands and the clocks fire.
        await db.execute("UPDATE cases SET clocks_hold_until = now() - interval '1 second', "
                         "first_response_warn_at = now() - interval '1 minute', "
                         "first_response_due = now() - interval '1 second'")
        assert await sweeper.sweep_once() == 2  # the warning, then the breach
    finally:
        await pool.close()
        await db.close()


async def test_an_answer_that_comes_after_the_case_waited_again_corrects_its_wait(
    clean_db: str,
) -> None:
    """The router's answer to the first wait comes only after the case waited for the
    customer again: its absolute times are stale, its correction of the first wait's
    wall-time shift is not, and later waits only added their own shifts."""
    db = await asyncpg.connect(clean_db)
    pool = await create_pool(clean_db, max_size=2)
    try:
        await seed(db, 1, warn_in=3600, due_in=7200)
        ref = await db.fetchval("SELECT ref FROM cases")
        now = await db.fetchval("SELECT now()")
        await db.execute("UPDATE cases SET status = 'pending_customer', "
                         "pending_since = $1::timestamptz - interval '1 hour'", now)
        async with pool.acquire() as conn, conn.transaction():
            case = await lock_visible_any(conn, ref)
            assert case is not None
            stamp = customer_returned(CaseStatus.PENDING_CUSTOMER, now, now - timedelta(hours=1))
            await apply_status(conn, case, stamp, None, "test")
        shifted = await db.fetchval("SELECT first_response_due FROM cases")
        # Waiting again before the answer: pending since a minute after the first resume.
        await db.execute("UPDATE cases SET status = 'pending_customer', "
                         "pending_since = $1::timestamptz + interval '1 minute'", now)
        stale = SlaDecided(ref=ref, resumed_at=now, reason="an hour of night",
                           first_response_due=now + timedelta(days=3),
                           corrections_s={"first_response_due": -1800.0})
        answer = envelope(stale, source="router")
        await apply_sla_decision(pool, answer)
        await apply_sla_decision(pool, answer)  # redelivered: its inbox claim stops it
        assert await db.fetchval("SELECT first_response_due FROM cases") == (
            shifted - timedelta(minutes=30))
        body = await db.fetchval("SELECT body FROM timeline_entries WHERE kind = 'sla' "
                                 "ORDER BY id DESC LIMIT 1")
        assert body.startswith("SLA clocks corrected for an earlier wait: an hour of night")
    finally:
        await pool.close()
        await db.close()
