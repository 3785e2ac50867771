"""Automatic assignment end to end on the real broker and database: case-store and the router
in this process, a customer message in, the router's choice applied to the case.

The router's clock is the test's: who is on shift follows it, so "nobody is on shift, then
someone comes on" is a move of the clock, not a wait for Monday morning. The sweep runs once
as the router starts (a case already waiting is handed out), then when the test calls it, so
what the events do and what the sweep does can be told apart.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from casegate_case_store.settings import Settings as CaseStoreSettings
from casegate_case_store.store.users import Role, create_token, create_user
from casegate_router.app import ASSIGNER
from casegate_router.adapters.workload import Workload
from casegate_router.assigning import (
    SWEEP_BATCH,
    SWEEP_PAGES,
    UNREACHABLE,
    Assigner,
    InFlight,
)
from casegate_router.domain.policies import PolicyFiles, load_policies
from casegate_router.app import init_app as init_router
from casegate_router.settings import Settings as RouterSettings
from casegate_shared.bus import Bus, Defer
from casegate_shared.events import AssignmentDecided, envelope
from casegate_shared.settings import BusSettings
from tests.conftest import ROOT, eventually, free_port
from tests.support.bus_events import published
from tests.integration.test_case_store_service import (
    Observer,
    consumed,
    handled,
    message,
    running,
)

RULES = "default: {team: support, priority: P3}\n"
# carla has nothing open but works New York hours; dora is billing's only agent.
TEAMS = """\
teams:
  support:
    assignment: least_open
    members:
      - {handle: ana, region: emea}
      - {handle: ben, region: emea, caps: {webform: 5}}
      - {handle: carla, region: americas}
  billing:
    assignment: round_robin
    members:
      - {handle: dora, region: emea}
"""
# The shipped SLA file: emea is Berlin 08:00-18:00, americas New York 09:00-17:00.
MONDAY_11_BERLIN = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)  # New York: 05:00
SATURDAY = datetime(2025, 1, 11, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class RecordingObserver(Observer):
    """Keeps everything it received, for counting afterwards."""

    def __init__(self, bus_settings: BusSettings, keys: list[str]) -> None:
        super().__init__(bus_settings, keys)
        self.seen: list[dict[str, Any]] = []

    def drain(self) -> None:
        while not self.received.empty():
            self.seen.append(self.received.get_nowait())


@dataclass
class Stack:
    router: web.Application
    db: asyncpg.Connection
    publisher: Bus
    events: RecordingObserver
    clock: Clock
    api: str
    token: str
    db_url: str

    async def open_case(self) -> str:
        before = consumed("case-store.inbound")
        msg = message()
        await self.publisher.publish(msg)
        await handled("case-store.inbound", before, 1)
        assert msg.data.new_case_ref is not None
        return msg.data.new_case_ref

    async def sweep(self) -> int:
        return await self.router[ASSIGNER].sweep()

    async def assignee(self, ref: str) -> str | None:
        value: str | None = await self.db.fetchval(
            "SELECT u.handle FROM cases c LEFT JOIN users u ON u.id = c.assignee_id "
            "WHERE c.ref = $1", ref)
        return value

    async def assigned_to(self, ref: str, handle: str) -> None:
        async def done() -> bool:
            return await self.assignee(ref) == handle

        await eventually(done, timeout=15)

    async def entries(self, ref: str) -> list[tuple[str, str, str]]:
        rows = await self.db.fetch(
            "SELECT t.kind, t.actor, t.body FROM timeline_entries t JOIN cases c "
            "ON c.id = t.case_id WHERE c.ref = $1 ORDER BY t.id", ref)
        return [(r["kind"], r["actor"], r["body"]) for r in rows]

    def seen(self, kind: str, ref: str) -> list[dict[str, Any]]:
        return [e for e in self.events.seen if e["type"] == kind and e["subject"] == ref]


WAITING_BEFORE = "CS-AAAAA7"


async def seed_workload(db: asyncpg.Connection) -> None:
    """ana has three open cases (one waits for the customer: it still counts), ben one (and a
    resolved one, which does not count); one case waits in support's queue already."""
    await db.execute("INSERT INTO customers (id, name) VALUES (900, 'Earlier')")
    for handle in ("ana", "ben", "carla", "dora"):
        await create_user(db, handle, handle.title(), [Role.RESOLVER], teams=["support"])
    for ref, handle, status in (("CS-AAAAA2", "ana", "open"), ("CS-AAAAA3", "ana", "open"),
                                ("CS-AAAAA4", "ana", "pending_customer"),
                                ("CS-AAAAA5", "ben", "open"), ("CS-AAAAA6", "ben", "resolved"),
                                (WAITING_BEFORE, None, "open")):
        await db.execute(
            "INSERT INTO cases (ref, customer_id, channel, subject, status, team, assignee_id) "
            "VALUES ($1, 900, 'email', 'earlier', $3, 'support', "
            "(SELECT id FROM users WHERE handle = $2))", ref, handle, status)


@pytest.fixture
async def stack(bus_settings: BusSettings, clean_db: str, tmp_path: Path,
                publisher: Bus) -> AsyncIterator[Stack]:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "teams.yaml").write_text(TEAMS)
    shutil.copy(ROOT / "config" / "sla.yaml", tmp_path / "sla.yaml")
    db = await asyncpg.connect(clean_db)
    await seed_workload(db)
    lead = await create_user(db, "lea", "Lea", [Role.SUPERVISOR])
    _, token = await create_token(db, lead, "test")
    events = RecordingObserver(bus_settings, ["case.assignment_decided", "case.assigned"])
    await events.start()
    clock = Clock(MONDAY_11_BERLIN)
    router_settings = RouterSettings(
        **bus_settings.model_dump(), rules_file=tmp_path / "rules.yaml",
        sla_file=tmp_path / "sla.yaml", teams_file=tmp_path / "teams.yaml",
        rules_reload=False, database_url=clean_db, assign_interval_s=3600,
    )
    store_settings = CaseStoreSettings(
        **bus_settings.model_dump(), database_url=clean_db, case_store_port=free_port(),
        outbox_poll_s=0.2,
    )
    # case-store first: its queues must exist before the router publishes decisions.
    async with running(store_settings):
        app = await init_router(router_settings, clock=clock)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            yield Stack(app, db, publisher, events, clock,
                        f"http://127.0.0.1:{store_settings.case_store_port}", token, clean_db)
        finally:
            await runner.cleanup()
            await events.close()
            await db.close()


async def test_cases_go_to_agents_on_shift_wait_when_nobody_is_and_never_change_hands_late(
    stack: Stack,
) -> None:
    # Monday 11:00 in Berlin: ana (3 open) and ben (1) are on shift, carla (0) is not. The
    # sweep at start hands out the case that was waiting already.
    await stack.assigned_to(WAITING_BEFORE, "ben")

    # A new case is decided as soon as it is routed.
    first = await stack.open_case()
    await stack.assigned_to(first, "ben")
    [*_, last] = await stack.entries(first)
    assert last == ("assignment", "router", "Assigned: support/(unassigned) -> support/ben "
                    "(least_open: ben has the fewest open cases (2) of 2 agents free)")
    stack.events.drain()
    [decision] = stack.seen("case.assignment_decided", first)
    assert (decision["data"]["assignee"], decision["data"]["cap"]) == ("ben", 5)

    # Saturday: nobody is on shift. The case waits and says why, once: sweeps that still
    # find nobody publish nothing.
    stack.clock.now = SATURDAY
    second = await stack.open_case()

    async def waits() -> bool:
        return any(kind == "assignment" for kind, _, _ in await stack.entries(second))

    await eventually(waits, timeout=15)
    assert [await stack.sweep() for _ in range(3)] == [0, 0, 0]
    await asyncio.sleep(0.5)
    assert await stack.assignee(second) is None
    notes = [e for e in await stack.entries(second) if e[0] == "assignment"]
    assert notes == [("assignment", "router",
                      "Waits in support's queue: no agent of the team is on shift")]
    stack.events.drain()
    assert len(stack.seen("case.assignment_decided", second)) == 1

    # Two deciders racing on old figures cannot push an agent past a cap: ben has one open
    # web form case, and this decision says one is his cap.
    racing = AssignmentDecided(ref=second, team="support", assignee="ben",
                               strategy="least_open", reason="racing", cap=1)
    seen = consumed("case-store.assignments")
    await stack.publisher.publish(envelope(racing, source="router", subject=second))
    await handled("case-store.assignments", seen, 1)
    assert await stack.assignee(second) is None
    [*_, last] = await stack.entries(second)
    assert last[2] == ("Not assigned to ben: at the cap of 1 open webform cases; the case "
                       "waits in support's queue")

    # Monday morning again: the sweep hands it out (ana and ben have three each; ana is
    # listed first).
    stack.clock.now = MONDAY_11_BERLIN
    assert await stack.sweep() == 1
    await stack.assigned_to(second, "ana")
    [*_, last] = await stack.entries(second)
    assert last[2].endswith("(least_open: ana has the fewest open cases (3) of 2 agents free)")

    # A transfer to billing, leaving the case unassigned: billing's agent gets it, and the
    # history stays with the case.
    before = await stack.entries(first)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stack.api}/v1/cases/{first}/assignment",
                             json={"team": "billing"},
                             headers={"Authorization": f"Bearer {stack.token}"}) as resp:
            assert resp.status == 200, await resp.text()
    await stack.assigned_to(first, "dora")
    after = await stack.entries(first)
    assert after[: len(before)] == before
    assert after[-1][2] == ("Assigned: billing/(unassigned) -> billing/dora (round_robin: "
                            "dora is next in turn (round robin, 1 agent free))")

    # A late decision (the same team, another agent) does not take the case from dora.
    late = AssignmentDecided(ref=first, team="billing", assignee="ben",
                             strategy="least_open", reason="late")
    seen = consumed("case-store.assignments")
    await stack.publisher.publish(envelope(late, source="router", subject=first))
    await handled("case-store.assignments", seen, 1)
    assert await stack.assignee(first) == "dora"
    assert await stack.entries(first) == after

    # Four cases decided at the same moment (as when a burst is routed) are spread: each
    # decision counts those before it, also while case-store has applied none of them (the
    # test holds the cases' rows meanwhile). ana has four open, ben two.
    refs = [f"CS-BBBBB{i}" for i in range(2, 6)]
    for ref in refs:
        await stack.db.execute(
            "INSERT INTO cases (ref, customer_id, channel, subject, status, team) "
            "VALUES ($1, 900, 'email', 'burst', 'open', 'support')", ref)
    causes = [envelope(late, source="test", subject=ref) for ref in refs]
    assigner = stack.router[ASSIGNER]
    async with stack.db.transaction():
        await stack.db.execute("SELECT 1 FROM cases WHERE ref = ANY($1) FOR UPDATE", refs)
        await asyncio.gather(*(assigner.answer(c, ref, "support")
                               for c, ref in zip(causes, refs)))

        def chosen() -> list[str]:
            stack.events.drain()
            return [e["data"]["assignee"] for ref in refs
                    for e in stack.seen("case.assignment_decided", ref)]

        async def all_decided() -> bool:
            return len(chosen()) == len(refs)

        await eventually(all_decided)
        assert Counter(chosen()) == {"ben": 3, "ana": 1}

    async def all_assigned() -> bool:
        return None not in [await stack.assignee(ref) for ref in refs]

    await eventually(all_assigned, timeout=15)
    assert Counter([await stack.assignee(ref) for ref in refs]) == {"ben": 3, "ana": 1}

    # Every assignment was announced once, as case.assigned by the router.
    await asyncio.sleep(0.5)
    stack.events.drain()
    by_router = [e for e in stack.events.seen
                 if e["type"] == "case.assigned" and e["data"]["actor"] == "router"]
    assert len(by_router) == len({e["id"] for e in by_router}) == 8
    assert {(WAITING_BEFORE, "ben"), (first, "ben"), (second, "ana"), (first, "dora")} <= {
        (e["subject"], e["data"]["case"]["assignee"]) for e in by_router}


async def test_a_sweep_offers_a_case_again_after_case_store_refused_it_at_the_cap(
    stack: Stack,
) -> None:
    """case-store refuses a swept decision when the agent filled up meanwhile; once the agent
    has room, a later sweep must offer the case again, not repeat a decision already taken."""
    await stack.assigned_to(WAITING_BEFORE, "ben")  # ben: no open web form, a cap of five
    await stack.db.execute("UPDATE users SET active = false WHERE handle = 'ana'")
    ref = "CS-CCCCC2"
    await stack.db.execute(
        "INSERT INTO cases (ref, customer_id, channel, subject, status, team) "
        "VALUES ($1, 900, 'webform', 'waits', 'open', 'support')", ref)
    fillers = [f"CS-CCCCD{i}" for i in range(2, 7)]
    seen = consumed("case-store.assignments")
    async with stack.db.transaction():
        # case-store waits on the case's row while ben fills up to his cap.
        await stack.db.execute("SELECT 1 FROM cases WHERE ref = $1 FOR UPDATE", ref)
        assert await stack.sweep() == 1
        other = await asyncpg.connect(stack.db_url)
        try:
            for filler in fillers:
                await other.execute(
                    "INSERT INTO cases (ref, customer_id, channel, subject, status, team, "
                    "assignee_id) VALUES ($1, 900, 'webform', 'fill', 'open', 'support', "
                    "(SELECT id FROM users WHERE handle = 'ben'))", filler)
        finally:
            await other.close()
    await handled("case-store.assignments", seen, 1)
    assert await stack.assignee(ref) is None
    [*_, last] = await stack.entries(ref)
    assert last[2].startswith("Not assigned to ben: at the cap of 5 open webform cases")

    await stack.db.execute("UPDATE cases SET status = 'resolved' WHERE ref = $1", fillers[0])
    stack.clock.now += timedelta(minutes=1)
    stack.router[ASSIGNER].in_flight = InFlight()  # as the refused decision's 30 s run out
    assert await stack.sweep() == 1
    await stack.assigned_to(ref, "ben")


async def test_a_case_to_assign_waits_for_an_unreachable_database_without_spending_retries(
    publisher: Bus, bus_settings: BusSettings,
) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    workload = await Workload.open(closed)
    try:
        policies = load_policies(PolicyFiles(ROOT / "config" / "rules.yaml",
                                             ROOT / "config" / "sla.yaml",
                                             ROOT / "config" / "teams.yaml"))
        assigner = Assigner(publisher, lambda: policies, workload, Clock(MONDAY_11_BERLIN))
        cause = envelope(AssignmentDecided(ref="CS-DDDDD2", team="support", strategy="x",
                                           reason="x"), source="test")
        with pytest.raises(Defer, match="case-store's database: ") as waiting:
            await assigner.answer(cause, "CS-DDDDD2", "support")
        assert waiting.value.seconds > 0
        # Only a database that cannot be reached waits; a query that is wrong is a bug, to be
        # parked with its reason after the bus's attempts.
        assert isinstance(ConnectionRefusedError(), UNREACHABLE)
        assert not isinstance(asyncpg.InterfaceError("wrong arguments"), UNREACHABLE)
        assert not isinstance(asyncpg.exceptions.QueryCanceledError("timeout"), UNREACHABLE)
        # On a Saturday nobody could take it anyway: that is said without the database.
        night = Assigner(publisher, lambda: policies, workload, Clock(SATURDAY))
        async with published(bus_settings, "case.assignment_decided") as seen:
            await night.answer(cause, "CS-DDDDD2", "support")

            async def said() -> bool:
                return len(seen) == 1

            await eventually(said)
        assert (seen[0]["data"]["assignee"], seen[0]["data"]["reason"]) == (
            None, "no agent of the team is on shift")
    finally:
        await workload.close()


async def email_behind_stuck_web_forms(stack: Stack, stuck: int) -> str:
    """ben is the only agent on shift and at his web form cap; `stuck` urgent web forms wait
    at the head of support's queue, one email behind them. Returns the email's ref."""
    await stack.assigned_to(WAITING_BEFORE, "ben")
    await stack.db.execute("UPDATE users SET active = false WHERE handle = 'ana'")
    await stack.db.execute(
        "INSERT INTO cases (ref, customer_id, channel, subject, status, team, assignee_id) "
        "SELECT 'CS-EEEE' || n, 900, 'webform', 'ben''s', 'open', 'support', "
        "(SELECT id FROM users WHERE handle = 'ben') FROM generate_series(10, 14) n")
    await stack.db.execute(
        "INSERT INTO cases (ref, customer_id, channel, subject, status, team, priority) "
        "SELECT 'CS-FF' || n, 900, 'webform', 'urgent', 'open', 'support', 'P1' "
        "FROM generate_series(10000, 10000 + $1 - 1) n", stuck)
    email = "CS-GGGGG2"
    await stack.db.execute(
        "INSERT INTO cases (ref, customer_id, channel, subject, status, team, priority) "
        "VALUES ($1, 900, 'email', 'behind', 'open', 'support', 'P4')", email)
    return email


async def test_cases_that_must_wait_do_not_hide_the_ones_behind_them_from_the_sweep(
    stack: Stack,
) -> None:
    """More urgent web forms than a sweep's page fill the queue's head, and ben, the only
    agent on shift, is at his web form cap: the email behind them still goes to him."""
    email = await email_behind_stuck_web_forms(stack, SWEEP_BATCH + 1)
    assert await stack.sweep() == 1
    await stack.assigned_to(email, "ben")
    assert await stack.db.fetchval(
        "SELECT count(*) FROM cases WHERE ref LIKE 'CS-FF%' AND assignee_id IS NULL"
    ) == SWEEP_BATCH + 1


async def test_a_queue_longer_than_a_sweep_is_read_through_over_the_next_sweeps(
    stack: Stack,
) -> None:
    """More stuck web forms than one sweep reads: the next sweep goes on where it stopped
    (after the head of the queue), so the email behind them is reached."""
    email = await email_behind_stuck_web_forms(stack, SWEEP_BATCH * SWEEP_PAGES + 1)
    assert await stack.sweep() == 0  # all it read must wait
    assert await stack.sweep() == 1
    await stack.assigned_to(email, "ben")
