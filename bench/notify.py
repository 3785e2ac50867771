"""Notifications per second: case.opened events in, acknowledgements delivered to the sandbox
and to a local SMTP server (aiosmtpd), with one and with three notifier processes, and the
cost of the delivery ledger (the same run without it).

Each configuration gets its own exchange, queues and Redis prefix (deleted afterwards). The
notifiers are real processes (this script with --serve), started and ready before the events
are published at full speed (publisher confirms, concurrency 64); the clock runs from the
first publish to the last `notification.sent`. Peak resident memory per notifier is reported.
Last line: one JSON object.

Usage: python bench/notify.py [-n 2000] [--only sandbox|smtp]
Needs RabbitMQ and Redis (127.0.0.1, or CASEGATE_AMQP_URL / CASEGATE_REDIS_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from measure import free_port, peak_rss_mb  # noqa: E402

AMQP_URL = os.environ.get("CASEGATE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("CASEGATE_REDIS_URL", "redis://127.0.0.1:6379/15")


class NullLedger:
    """No dedupe at all: every claim wins. Only for measuring what the ledger costs."""

    lease_s = 60

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def claim(self, key: str) -> Any:
        from casegate_notifier.domain.delivery import Claim

        return Claim.CLAIMED

    async def mark_done(self, key: str, provider_message_id: str | None = None) -> None:
        return None

    async def sent_id(self, key: str) -> str | None:
        return None

    async def mark_failed(self, key: str, failure: Any = None) -> None:
        return None

    async def failure(self, key: str) -> Any:
        raise AssertionError("never failed")

    async def release(self, key: str) -> None:
        return None


def serve(no_ledger: bool) -> None:
    """Child mode: one notifier process, configured by the environment."""
    import casegate_notifier.app as notifier_app
    from casegate_notifier.__main__ import main

    if no_ledger:
        notifier_app.DeliveryLedger = NullLedger  # type: ignore[assignment,misc]
    main()


class SmtpSink:
    """aiosmtpd in a thread, counting what it accepts."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.count = 0
        self._lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.count += 1
        return "250 OK"


def start_notifiers(
    env: dict[str, str], replicas: int, no_ledger: bool
) -> list[subprocess.Popen[bytes]]:
    procs, ports = [], []
    for _ in range(replicas):
        port = free_port()
        ports.append(port)
        args = [sys.executable, __file__, "--serve"] + (["--no-ledger"] if no_ledger else [])
        procs.append(subprocess.Popen(
            args, env={**env, "CASEGATE_NOTIFIER_PORT": str(port)}, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    deadline = time.monotonic() + 60
    for port, proc in zip(ports, procs, strict=True):
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(procs)
                raise SystemExit("a notifier did not become ready")
            time.sleep(0.2)
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


async def run_one(
    n: int, provider: str, replicas: int, no_ledger: bool, sink: SmtpSink | None
) -> dict[str, Any]:
    import aio_pika
    from redis.asyncio import Redis

    from casegate_notifier.handlers import QUEUES
    from casegate_shared.bus import Bus, retry_delays_ms
    from casegate_shared.events import (
        CaseCustomer,
        CaseOpened,
        Channel,
        Priority,
        envelope,
        new_case_ref,
    )
    from casegate_shared.settings import BusSettings

    tag = f"bench-notify-{uuid.uuid4().hex[:6]}"
    settings = BusSettings(amqp_url=AMQP_URL, bus_exchange=tag, bus_prefix=tag)
    env = {
        **os.environ,
        "CASEGATE_AMQP_URL": AMQP_URL, "CASEGATE_BUS_EXCHANGE": tag, "CASEGATE_BUS_PREFIX": tag,
        "CASEGATE_REDIS_URL": REDIS_URL, "CASEGATE_REDIS_PREFIX": tag,
        "CASEGATE_LOG_LEVEL": "WARNING",
        "CASEGATE_NOTIFY_POLICY_FILE": str(ROOT / "config/notify.yaml"),
        "CASEGATE_SANDBOX_MAX": str(n + 10),
    }
    env.pop("CASEGATE_SMTP_URL", None)
    if provider == "smtp":
        assert sink is not None
        env["CASEGATE_SMTP_URL"] = f"smtp://127.0.0.1:{sink.port}"
    sent_before = sink.count if sink else 0
    bus = Bus(settings, source="bench")
    await bus.connect()
    conn = await aio_pika.connect(AMQP_URL)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        channel = await conn.channel()
        exchange = await channel.declare_exchange(tag, aio_pika.ExchangeType.TOPIC, durable=True)
        outcomes = await channel.declare_queue(exclusive=True)
        await outcomes.bind(exchange, "notification.*")
        seen = 0
        done = asyncio.Event()

        async def count(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            await message.ack()
            seen += 1
            if seen >= n:
                done.set()

        await outcomes.consume(count)
        procs = await asyncio.to_thread(start_notifiers, env, replicas, no_ledger)
        events = [
            envelope(
                CaseOpened(
                    ref=new_case_ref(),
                    customer=CaseCustomer(id=i, name="Bench", email=f"c{i}@example.com"),
                    channel=Channel.WEBFORM, subject="Benchmark", body="b", priority=Priority.P3,
                    status="new", opened_at=datetime.now(UTC),
                ),
                source="bench",
            )
            for i in range(n)
        ]
        limit = asyncio.Semaphore(64)

        async def publish(e: Any) -> None:
            async with limit:
                await bus.publish(e)

        started = time.perf_counter()
        await asyncio.gather(*(publish(e) for e in events))
        published_s = time.perf_counter() - started
        await asyncio.wait_for(done.wait(), timeout=max(120, n / 10))
        elapsed = time.perf_counter() - started
        rss = [peak_rss_mb(p.pid) for p in procs]
        for name in QUEUES:
            q = f"{tag}.{name}"
            for victim in [q, f"{q}.dlq", *(f"{q}.retry.{d}ms" for d in retry_delays_ms(settings))]:
                await channel.queue_delete(victim)
        await channel.exchange_delete(tag)
    finally:
        stop(procs)
        await conn.close()
        await bus.close()
        redis = Redis.from_url(REDIS_URL)
        async for key in redis.scan_iter(match=f"{tag}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()
    delivered = (sink.count - sent_before) if sink else n
    return {
        "provider": provider, "replicas": replicas, "ledger": not no_ledger, "n": n,
        "per_s": round(n / elapsed, 1), "publish_per_s": round(n / published_s, 1),
        "delivered": delivered, "peak_rss_mb": rss,
    }


async def bench(n: int, only: str | None) -> dict[str, Any]:
    sink = SmtpSink()
    sink.controller.start()
    results: list[dict[str, Any]] = []
    try:
        plans = [("sandbox", 1, False), ("sandbox", 3, False), ("sandbox", 1, True),
                 ("smtp", 1, False), ("smtp", 3, False), ("smtp", 1, True)]
        for provider, replicas, no_ledger in plans:
            if only and provider != only:
                continue
            smtp = sink if provider == "smtp" else None
            r = await run_one(n, provider, replicas, no_ledger, smtp)
            results.append(r)
            print(f"{provider:8} x{replicas} ledger={'on ' if r['ledger'] else 'off'} "
                  f"{r['per_s']:8.1f}/s  (published {r['publish_per_s']}/s, "
                  f"delivered {r['delivered']}, "
                  f"peak RSS {r['peak_rss_mb']} MB)", flush=True)
    finally:
        sink.controller.stop()
    out: dict[str, Any] = {"n": n, "runs": results}
    for provider in ("sandbox", "smtp"):
        mine = [r for r in results if r["provider"] == provider and r["replicas"] == 1]
        on = next((r["per_s"] for r in mine if r["ledger"]), None)
        off = next((r["per_s"] for r in mine if not r["ledger"]), None)
        if on and off:
            out[f"{provider}_ledger_overhead_pct"] = round(100 * (off - on) / off, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--only", choices=["sandbox", "smtp"])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-ledger", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.no_ledger)
        return
    print(json.dumps(asyncio.run(bench(args.n, args.only))))


if __name__ == "__main__":
    main()
