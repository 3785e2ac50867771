"""The bus against the real RabbitMQ: redelivery after a consumer dies, retry then park,
unroutable publishes, broker-side delivery limits, and replay from the parking queue."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest

from casegate_shared.bus import Bus, Defer, Reject
from casegate_shared.dlq import list_parked, replay
from casegate_shared.events import CaseRouted, Envelope, Priority, envelope
from casegate_shared.settings import BusSettings

from tests.conftest import eventually

QUEUE = "test.routed"


def routed(ref: str = "CS-222222") -> Envelope[CaseRouted]:
    return envelope(
        CaseRouted(ref=ref, team="billing", priority=Priority.P2, rule="billing"),
        source="test",
        subject=ref,
    )


@pytest.fixture
async def bus(bus_settings: BusSettings) -> AsyncIterator[Bus]:
    b = Bus(bus_settings, source="test")
    await b.connect()
    yield b
    await b.close()


async def test_unroutable_publish_raises(bus: Bus) -> None:
    with pytest.raises(aio_pika.exceptions.PublishError):
        await bus.publish(routed())  # nothing is bound to case.routed in this fresh exchange


async def test_failing_handler_is_retried_then_parked_with_its_error(
    bus: Bus, bus_settings: BusSettings
) -> None:
    attempts: list[datetime] = []

    @bus.subscriber(QUEUE, ["case.routed"], CaseRouted)
    async def always_fails(event: Envelope[CaseRouted]) -> None:
        attempts.append(datetime.now(UTC))
        raise RuntimeError("crm is down")

    await bus.start_consumers()
    event = routed()
    await bus.publish(event)

    async def parked() -> bool:
        return bool(await list_parked(bus, [QUEUE]))

    await eventually(parked)
    [p] = await list_parked(bus, [QUEUE])
    assert len(attempts) == bus_settings.bus_max_attempts
    assert p.message_id == event.id
    assert p.routing_key == "case.routed"
    assert p.error is not None and "crm is down" in p.error
    # backoff grows: the second gap is at least the doubled base delay
    gaps = [(b - a).total_seconds() for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[1] >= 2 * bus_settings.bus_retry_base_ms / 1000 * 0.9


async def test_reject_and_unparseable_events_are_parked_at_once(bus: Bus) -> None:
    calls = 0

    @bus.subscriber(QUEUE, ["case.routed"], CaseRouted)
    async def rejects(event: Envelope[CaseRouted]) -> None:
        nonlocal calls
        calls += 1
        raise Reject("unknown case")

    await bus.start_consumers()
    await bus.publish(routed())
    await bus.publish_raw("case.routed", b'{"not": "an event"}', event_id="bad-1", correlation_id="c")

    async def two_parked() -> bool:
        return len(await list_parked(bus, [QUEUE])) == 2

    await eventually(two_parked)
    reasons = sorted(p.error or "" for p in await list_parked(bus, [QUEUE]))
    assert reasons[0].startswith("rejected: unknown case")
    assert reasons[1].startswith("unparseable event")
    assert calls == 1  # rejected once, never retried


async def test_replay_from_parking_delivers_again(bus: Bus) -> None:
    healthy = asyncio.Event()
    delivered: list[str] = []

    @bus.subscriber(QUEUE, ["case.routed"], CaseRouted)
    async def fails_until_fixed(event: Envelope[CaseRouted]) -> None:
        if not healthy.is_set():
            raise Reject("downstream refused")
        delivered.append(event.id)

    await bus.start_consumers()
    event = routed()
    await bus.publish(event)

    async def parked() -> bool:
        return len(await list_parked(bus, [QUEUE])) == 1

    await eventually(parked)
    healthy.set()
    assert await replay(bus, QUEUE) == 1

    async def handled() -> bool:
        return delivered == [event.id]

    await eventually(handled)
    assert await list_parked(bus, [QUEUE]) == []


async def test_broker_delivery_limit_dead_letters_a_message_that_kills_consumers(
    bus: Bus, bus_settings: BusSettings
) -> None:
    """A consumer that crashes never nacks; the quorum queue's delivery limit must catch it."""

    @bus.subscriber(QUEUE, ["case.routed"], CaseRouted)
    async def never_called(event: Envelope[CaseRouted]) -> None:  # pragma: no cover
        raise AssertionError

    await bus.declare_all()
    await bus.publish(routed())
    conn = await aio_pika.connect(bus_settings.amqp_url)
    channel = await conn.channel()
    work = await channel.declare_queue(bus.queue_name(QUEUE), passive=True)
    # Each requeue stands for a consumer dying with the message unacked.
    for _ in range(bus_settings.bus_delivery_limit + 1):
        msg = await work.get(fail=False, timeout=5)
        if msg is None:
            break
        await msg.nack(requeue=True)
    await conn.close()

    async def parked() -> bool:
        return len(await list_parked(bus, [QUEUE])) == 1

    await eventually(parked)


CONSUMER_THAT_HANGS = textwrap.dedent(
    """
    import asyncio, sys
    from casegate_shared.bus import Bus
    from casegate_shared.events import CaseRouted
    from casegate_shared.settings import BusSettings

    async def main() -> None:
        bus = Bus(BusSettings(), source="doomed")
        await bus.connect()

        @bus.subscriber("test.routed", ["case.routed"], CaseRouted)
        async def hang(event) -> None:
            print("got", event.id, flush=True)
            await asyncio.sleep(3600)

        await bus.start_consumers()
        print("ready", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_message_survives_a_consumer_killed_before_ack(
    bus: Bus, bus_settings: BusSettings
) -> None:
    env = {**os.environ, **{f"CASEGATE_{k.upper()}": str(v) for k, v in bus_settings.model_dump().items()}}
    proc = subprocess.Popen(
        [sys.executable, "-c", CONSUMER_THAT_HANGS], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        event = routed()
        await bus.publish(event)
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 10)
        assert line.split() == ["got", event.id]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()

    redelivered: list[str] = []

    @bus.subscriber(QUEUE, ["case.routed"], CaseRouted)
    async def survivor(ev: Envelope[CaseRouted]) -> None:
        redelivered.append(ev.id)

    await bus.start_consumers()

    async def got_it() -> bool:
        return redelivered == [event.id]

    await eventually(got_it)


async def test_defer_waits_without_spending_attempts(bus: Bus, bus_settings: BusSettings) -> None:
    calls = 0

    @bus.subscriber(QUEUE, ["case.routed"], CaseRouted)
    async def lease_held(event: Envelope[CaseRouted]) -> None:
        nonlocal calls
        calls += 1
        if calls <= bus_settings.bus_max_attempts + 1:
            raise Defer("a peer holds the lease", 0.01)

    await bus.start_consumers()
    await bus.publish(routed())

    async def handled() -> bool:
        return calls == bus_settings.bus_max_attempts + 2

    await eventually(handled)
    assert await list_parked(bus, [QUEUE]) == []
