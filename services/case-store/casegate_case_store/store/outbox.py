"""The transactional outbox: events are written with the change that caused them and
published afterwards by the relay, the only code here that talks to the broker.

The relay locks a batch with SKIP LOCKED (so replicas share the work), publishes it
concurrently so the confirms overlap, deletes what the broker confirmed and commits. A
broker that does not confirm leaves the rows for a later pass (consumers dedupe on the event
id, so a republish is harmless); an event nobody is bound to is held back on its own row
with a growing delay, so it cannot block the events behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
from prometheus_client import Counter, Gauge

from casegate_shared.bus import Bus
from casegate_shared.events import Envelope

log = logging.getLogger(__name__)

CHANNEL = "casegate_outbox"
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 10.0
HOLD_BACK_MAX_S = 60

OUTBOX_LAG = Gauge("casegate_outbox_lag_seconds", "Age of the oldest unpublished outbox event")
OUTBOX_PUBLISHED = Counter(
    "casegate_outbox_published_total", "Outbox events published and confirmed", ["type"]
)
OUTBOX_FAILED = Counter(
    "casegate_outbox_publish_failures_total",
    "Outbox publishes that were not confirmed (left for a later pass)",
    ["reason"],
)

def queue_sql(first: int, source: str = "") -> str:
    """The CTE `queued`: one event into the outbox, its four parameters numbered from `first`
    (bind them with `queue_args`), so a statement that changes a case queues the event it
    causes in the same round trip. `source` (e.g. "FROM opened") makes the event depend on
    the rows an earlier CTE produced. Select NOTIFY_QUEUED from it."""
    p = [f"${first + i}" for i in range(4)]
    return (
        "queued AS (INSERT INTO outbox (event_id, routing_key, correlation_id, body) "
        f"SELECT {p[0]}::uuid, {p[1]}::text, {p[2]}::text, {p[3]}::bytea {source} "
        "ON CONFLICT (event_id) DO NOTHING RETURNING id)"
    )


# Wakes the relays once the transaction commits (NOTIFY is delivered only then).
NOTIFY_QUEUED = f"(SELECT count(pg_notify('{CHANNEL}', '')) FROM queued)"


def queue_args(event: Envelope[Any]) -> tuple[uuid.UUID, str, str, bytes]:
    return uuid.UUID(event.id), event.type, event.correlationid, event.model_dump_json().encode()


_WRITE = f"WITH {queue_sql(1)} SELECT {NOTIFY_QUEUED}"
_LAG = "SELECT extract(epoch FROM now() - created_at)::float8 FROM outbox ORDER BY id LIMIT 1"
# The lag rides along with the batch: one round trip fewer per pass.
_BATCH = f"""
SELECT id, event_id, routing_key, correlation_id, body, ({_LAG}) AS lag FROM outbox
WHERE next_attempt_at <= now() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
_HOLD_BACK = f"""
UPDATE outbox SET attempts = attempts + 1,
    next_attempt_at = now() + make_interval(secs => least({HOLD_BACK_MAX_S}, 2 ^ attempts)),
    last_error = 'unroutable: no queue is bound to ' || routing_key
WHERE id = ANY($1::bigint[])
"""


async def write_event(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
    """Queue `event` in the caller's transaction; the relay is woken when that commits."""
    if not conn.is_in_transaction():
        raise RuntimeError("write_event outside a transaction: the event could outlive its cause")
    await conn.execute(_WRITE, *queue_args(event))


@dataclass(frozen=True, slots=True)
class RelayPass:
    selected: int = 0
    published: int = 0
    unroutable: int = 0
    failed: int = 0


class OutboxRelay:
    """Publishes committed outbox rows; woken by NOTIFY, and every `poll_s` regardless."""

    def __init__(self, pool: asyncpg.Pool, bus: Bus, batch: int = 200, poll_s: float = 2.0) -> None:
        self.pool = pool
        self.bus = bus
        self.batch = batch
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._listener: Any = None  # a pooled connection held for LISTEN
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name="outbox-relay")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check_ready(self) -> None:
        if self._task is None or self._task.done():
            raise RuntimeError("outbox relay is not running")
        if self._listener is None or self._listener.is_closed():
            raise RuntimeError("outbox relay is not listening")

    async def run(self) -> None:
        """Relay until cancelled; any failure backs off and starts over, never ends the loop."""
        delay = BACKOFF_MIN_S
        try:
            while True:
                try:
                    await self._listen()
                    while True:
                        self._wake.clear()  # before the pass: a commit during it wakes the next
                        done = await self.relay_once()
                        if done.failed:
                            await asyncio.sleep(delay)
                            delay = min(delay * 2, BACKOFF_MAX_S)
                            continue
                        delay = BACKOFF_MIN_S
                        if done.selected < self.batch:
                            await self._wait()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database went away: reconnect after a pause
                    log.warning("outbox relay interrupted, retrying", extra={"error": repr(exc)})
                    await self._unlisten()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_S)
        finally:
            await self._unlisten()

    # --- one pass -------------------------------------------------------------------

    async def relay_once(self) -> RelayPass:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                rows = await conn.fetch(_BATCH, self.batch)
                if not rows:  # none due; some may be held back, and they are late too
                    OUTBOX_LAG.set(await conn.fetchval(_LAG) or 0.0)
                    return RelayPass()
                OUTBOX_LAG.set(rows[0]["lag"] or 0.0)
                results = await asyncio.gather(
                    *(self._publish(row) for row in rows), return_exceptions=True
                )
                published = [r for r, res in zip(rows, results, strict=True) if res is None]
                unroutable = [
                    r
                    for r, res in zip(rows, results, strict=True)
                    if isinstance(res, aio_pika.exceptions.PublishError)
                ]
                if published:
                    await conn.execute(
                        "DELETE FROM outbox WHERE id = ANY($1::bigint[])",
                        [r["id"] for r in published],
                    )
                if unroutable:
                    await conn.execute(_HOLD_BACK, [r["id"] for r in unroutable])
        for row in published:
            OUTBOX_PUBLISHED.labels(row["routing_key"]).inc()
        failed = len(rows) - len(published) - len(unroutable)
        if unroutable:
            OUTBOX_FAILED.labels("unroutable").inc(len(unroutable))
            log.error(
                "outbox events unroutable, held back",
                extra={"types": sorted({r["routing_key"] for r in unroutable})},
            )
        if failed:
            OUTBOX_FAILED.labels("unconfirmed").inc(failed)
            first = next(res for res in results if isinstance(res, BaseException))
            log.warning(
                "outbox publish not confirmed, will retry",
                extra={"failed": failed, "error": repr(first)[:300]},
            )
        return RelayPass(len(rows), len(published), len(unroutable), failed)

    async def _publish(self, row: asyncpg.Record) -> None:
        await self.bus.publish_raw(
            row["routing_key"],
            row["body"],
            event_id=str(row["event_id"]),
            correlation_id=row["correlation_id"],
        )

    # --- waking up ------------------------------------------------------------------

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        await self._unlisten()
        conn = await self.pool.acquire()
        try:
            await conn.add_listener(CHANNEL, self._notified)
            conn.add_termination_listener(self._terminated)
        except BaseException:
            await self.pool.release(conn)
            raise
        self._listener = conn
        self._wake.set()  # rows committed while nobody listened

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            conn.remove_termination_listener(self._terminated)
            await conn.remove_listener(CHANNEL, self._notified)
        with contextlib.suppress(Exception):
            await self.pool.release(conn, timeout=5)

    async def _wait(self) -> None:
        if self._listener is None or self._listener.is_closed():
            raise ConnectionError("lost the LISTEN connection")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    def _terminated(self, *_: object) -> None:
        self._wake.set()
