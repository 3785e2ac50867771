"""Automatic assignment: the router's choice of agent for a case that needs one
(`case.assignment_decided`), and the sweep that hands out waiting cases as agents come on shift.

A case is decided when it is routed, and when a transfer or an escalation leaves it with a
team and nobody on it; the decision's id derives from that event, so a redelivery publishes
the same decision and case-store's inbox absorbs it. A case that must wait says so once, on
that decision. The sweep then publishes only assignments, never "still waiting", so a
waiting case's timeline does not fill up minute by minute.

Decisions for one team are taken one at a time in a replica, and each counts the ones
published before it that case-store has not applied yet (`InFlight`), so a burst of cases is
spread over the team instead of all going to whoever was least busy a moment ago. Across
replicas case-store is the guard: it applies a decision only while the case still waits on
that team (a late or repeated decision never takes a case from anyone) and only while the
agent is under the cap the decision names, so racing deciders cost a dropped decision, never
a wrong assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import asyncpg
from prometheus_client import Counter

from casegate_shared.bus import Bus, Defer
from casegate_shared.events import (
    AssignmentDecided,
    CaseRouted,
    CaseUpdated,
    Envelope,
    derived_event_id,
    envelope,
)

from .adapters.workload import QueueKey, Reader, Workload
from .domain.assignment import NOBODY_ON_SHIFT
from .domain.policies import Policies, PoliciesProvider
from .domain.teams import Team
from .domain.team_queue import (
    Decided,
    Pending,
    TeamLoad,
    anyone_on_shift,
    hand_out,
    needs_agent,
    needs_assignment,
    with_pending,
)

log = logging.getLogger(__name__)

SOURCE = "router"
SWEEP_BATCH = 200  # cases per page of a team's queue
SWEEP_PAGES = 5  # pages per team and sweep; the rest wait for the next one
IN_FLIGHT_S = 30.0  # case-store applies a decision in milliseconds; this covers a backlog
DATABASE_RETRY_S = 5.0
# The database is down, restarting or failing over, as opposed to a query that is wrong or
# too slow (those spend attempts and are parked with their reason).
UNREACHABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
               asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CrashShutdownError)

Clock = Callable[[], datetime]

ASSIGNMENTS = Counter(
    "casegate_router_assignments_total",
    "Assignment decisions published, by trigger (event, sweep) and outcome (assigned, queued)",
    ["trigger", "outcome"],
)


def decision_of(team: str, decided: Decided) -> AssignmentDecided:
    return AssignmentDecided(
        ref=decided.case.ref,
        team=team,
        assignee=decided.agent,
        strategy=decided.strategy.value,
        reason=decided.reason,
        cap=decided.cap,
    )


class InFlight:
    """Assignments this replica published that case-store has not been seen to apply. They
    count as applied until it has, or until `ttl_s` passed (a dropped decision)."""

    def __init__(self, ttl_s: float = IN_FLIGHT_S) -> None:
        self.ttl_s = ttl_s
        self._by_ref: dict[str, tuple[Pending, float]] = {}  # oldest first

    def refs(self) -> list[str]:
        now = time.monotonic()
        for ref in [r for r, (_, until) in self._by_ref.items() if until < now]:
            del self._by_ref[ref]
        return list(self._by_ref)

    def settle(
        self, asked: Iterable[str], unassigned: set[str], deciding: Iterable[str] = ()
    ) -> list[Pending]:
        """Forget those of `asked` that case-store applied, and those being decided again;
        the rest, oldest first. Only those asked: a decision another handler published
        while case-store was being asked is not known to be applied."""
        for ref in [*(r for r in asked if r not in unassigned), *deciding]:
            self._by_ref.pop(ref, None)
        return [pending for pending, _ in self._by_ref.values()]

    def add(self, ref: str, pending: Pending) -> None:
        self._by_ref.pop(ref, None)
        self._by_ref[ref] = (pending, time.monotonic() + self.ttl_s)


class Assigner:
    """Decides one case, or a team's whole queue, from the policies in force and case-store's
    workload at `clock()`. Decisions for one team are taken one at a time in this replica,
    each counting the ones before it (`InFlight`)."""

    def __init__(
        self, bus: Bus, policies: PoliciesProvider, workload: Workload, clock: Clock
    ) -> None:
        self.bus = bus
        self.policies = policies
        self.workload = workload
        self.clock = clock
        self.in_flight = InFlight()
        self._turns: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Per team, where the last sweep stopped reading its queue.
        self._resume_at: dict[str, QueueKey | None] = {}

    async def answer(self, cause: Envelope[Any], ref: str, team: str) -> None:
        """Decide the case `cause` left waiting on `team`, unless it no longer waits."""
        current = self.policies()
        config = current.teams.teams.get(team)
        handles = [m.handle for m in config.members] if config else []
        event_id = derived_event_id(AssignmentDecided.event_type, cause.id)
        if config and config.members and not anyone_on_shift(config, current.calendars,
                                                             self.clock()):
            # Nights and weekends: no reading case-store's workload to learn that nobody can
            # take it. case-store applies the note only while the case still waits.
            waits = AssignmentDecided(ref=ref, team=team, strategy=config.assignment.value,
                                      reason=NOBODY_ON_SHIFT)
            await self._send(waits, cause.correlationid, event_id, "event")
            return
        async with self._turns[team]:
            try:
                async with self.workload.reading() as reader:
                    waiting = await reader.queued(team, 1, ref)
                    if not waiting:
                        return  # someone took it, or it moved on, since the event
                    load = await self._with_in_flight(reader, team, handles, {ref})
            except UNREACHABLE as exc:
                # A restart or failover outlasts the bus's few retries: wait for it rather
                # than park the case's only assignment event.
                why = f"case-store's database: {type(exc).__name__}"
                raise Defer(why, DATABASE_RETRY_S) from exc
            [decided] = hand_out(team, config, waiting, load, current.calendars, self.clock())
            await self.publish(team, decided, cause.correlationid, event_id, "event")

    async def sweep(self) -> int:
        """Hand out what waits in every team's queue, if this replica has the turn; returns
        how many cases were assigned."""
        current = self.policies()
        at = self.clock()
        assigned = 0
        async with self.workload.sweep_turn() as reader:
            if reader is None:
                return 0  # another replica is sweeping
            for name, team in current.teams.teams.items():
                async with self._turns[name]:
                    assigned += await self._sweep_team(reader, name, team, current, at)
        return assigned

    async def _sweep_team(
        self, reader: Reader, name: str, team: Team, current: Policies, at: datetime
    ) -> int:
        """Page through the team's queue: cases that must wait (every agent at the cap of
        their channel, a skill nobody on shift has) do not hide those behind them. Each sweep
        reads the head of the queue (the most urgent), then goes on where the last one
        stopped, so a queue longer than a sweep's pages is read through over a few sweeps."""
        if not anyone_on_shift(team, current.calendars, at):
            return 0  # nobody could take a case: nothing to read
        handles = [m.handle for m in team.members]
        after: QueueKey | None = None
        assigned = 0
        for page in range(SWEEP_PAGES):
            if page == 1 and after is not None:  # past the head: on where the last one stopped
                after = max(after, self._resume_at.get(name) or after)
            load = await self._with_in_flight(reader, name, handles, set())
            # A case whose decision is on its way is not decided again.
            waiting, after = await reader.queue_page(
                name, SWEEP_BATCH, after=after, skip=self.in_flight.refs())
            decided = [d for d in hand_out(name, team, waiting, load, current.calendars, at)
                       if not d.queued]
            # Published while the turn is held: the next page and sweep count them.
            await asyncio.gather(*(self._publish_swept(name, d, at) for d in decided))
            assigned += len(decided)
            if after is None:
                break
        self._resume_at[name] = after  # None: read to the end, start at the head again
        return assigned

    async def _with_in_flight(
        self, reader: Reader, team: str, handles: list[str], deciding: set[str]
    ) -> TeamLoad:
        load = await reader.team_load(team, handles)
        refs = [r for r in self.in_flight.refs() if r not in deciding]
        pending = self.in_flight.settle(refs, await reader.unassigned(refs), deciding)
        return with_pending(team, load, pending)

    async def _publish_swept(self, team: str, decided: Decided, at: datetime) -> None:
        case = decided.case
        # One event per sweep: a decision case-store refused (the agent reached the cap
        # meanwhile) must not make the next sweep's offer of the same case a duplicate.
        # Sweeps take turns (an advisory lock), and case-store applies only a decision that
        # finds the case still waiting, so no case is assigned twice.
        event_id = derived_event_id(
            AssignmentDecided.event_type, "sweep", case.ref, str(decided.agent), at.isoformat()
        )
        await self.publish(team, decided, case.correlation_id, event_id, "sweep")

    async def publish(
        self, team: str, decided: Decided, correlation_id: str | None, event_id: str,
        trigger: str,
    ) -> None:
        pending = None if decided.agent is None else Pending(
            team, decided.agent, decided.case.channel)
        await self._send(decision_of(team, decided), correlation_id, event_id, trigger, pending)

    async def _send(self, decision: AssignmentDecided, correlation_id: str | None,
                    event_id: str, trigger: str, pending: Pending | None = None) -> None:
        await self.bus.publish(
            envelope(decision, source=SOURCE, correlation_id=correlation_id,
                     subject=decision.ref, event_id=event_id)
        )
        if pending is not None:
            self.in_flight.add(decision.ref, pending)
        ASSIGNMENTS.labels(trigger, "queued" if decision.assignee is None else "assigned").inc()
        log.info(
            "assignment decided",
            extra={"ref": decision.ref, "team": decision.team, "assignee": decision.assignee,
                   "strategy": decision.strategy, "trigger": trigger},
        )


def register(bus: Bus, assigner: Assigner) -> None:
    @bus.subscriber("router.assignment", ["case.routed"], CaseRouted)
    async def assign_routed_case(event: Envelope[CaseRouted]) -> None:
        routed = event.data
        if routed.case is not None and not needs_agent(routed.case):
            return
        await assigner.answer(event, routed.ref, routed.team)

    @bus.subscriber("router.transfers", ["case.assigned", "case.escalated"], CaseUpdated)
    async def assign_moved_case(event: Envelope[CaseUpdated]) -> None:
        change = event.data
        if not needs_assignment(change.change, change.case) or change.case.team is None:
            return
        await assigner.answer(event, change.ref, change.case.team)


class QueueSweep:
    """Runs `Assigner.sweep` every `interval_s` until stopped; a failed sweep is logged and
    the next one tries again."""

    def __init__(self, assigner: Assigner, interval_s: float) -> None:
        self.assigner = assigner
        self.interval_s = interval_s
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="assignment-sweep")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=10)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.assigner.sweep()
            except Exception:  # a database or broker hiccup must not end the sweeping
                log.exception("assignment sweep failed, trying again next time")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval_s)
