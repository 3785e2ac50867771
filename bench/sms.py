"""SMS in and out: signed Twilio webhooks accepted per second (each answered only after the
broker confirmed it), and SMS sent per second by three adapter replicas sharing one rate limit
in Redis, against the Twilio stand-in.

Inbound: intake runs in this process on its own exchange with one durable quorum queue bound
(as case-store's would be); N webhooks signed with the twilio package's own code are posted at
concurrency C; every 200 must be in the queue. Outbound: M texts through three `TwilioSms`
instances (own Redis connections, one shared limit of R per second); reports the rate reached
and the most sends the stand-in saw in any one-second window (R, or R + 1 from arrival
jitter). Needs RabbitMQ and Redis on this machine. Last line: one JSON object.

Usage: python bench/sms.py [-n 2000] [-c 64] [-m 200] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
from aiohttp import web
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from casegate_intake.app import init_app  # noqa: E402
from casegate_intake.settings import Settings  # noqa: E402
from casegate_notifier.adapters.ratelimit import Rate, RateLimiter  # noqa: E402
from casegate_notifier.adapters.twilio_sms import TwilioSms, api_client  # noqa: E402
from casegate_notifier.domain.sms import OutboundSms  # noqa: E402
from tests.standins.twilio import TwilioStandIn, sid  # noqa: E402

AMQP_URL = os.environ.get("CASEGATE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("CASEGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
PUBLIC = "https://casegate.example.com"


async def inbound(twilio: TwilioStandIn, n: int, concurrency: int, tag: str) -> dict[str, Any]:
    conn = await aio_pika.connect(AMQP_URL)
    channel = await conn.channel()
    exchange = await channel.declare_exchange(tag, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(
        f"{tag}.inbox", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(exchange, "message.received.sms")
    settings = Settings(
        amqp_url=AMQP_URL, bus_exchange=tag, bus_prefix=tag, public_url=PUBLIC,
        twilio_account_sid=twilio.account_sid, twilio_auth_token=twilio.auth_token,
        twilio_api_base=twilio.api_base, log_level="WARNING",
    )
    runner = web.AppRunner(await init_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/twilio/sms"
    statuses: dict[int, int] = {}
    sem = asyncio.Semaphore(concurrency)
    try:
        async with aiohttp.ClientSession() as http:

            async def one(i: int) -> None:
                params = {"MessageSid": sid("SM"), "From": "+14155550100", "To": "+14155550199",
                          "Body": f"message {i}", "NumMedia": "0"}
                headers = {"X-Twilio-Signature": twilio.sign(PUBLIC + "/v1/twilio/sms", params)}
                async with sem, http.post(url, data=params, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            elapsed = time.perf_counter() - started
        declared = await channel.declare_queue(f"{tag}.inbox", passive=True)
        queued = declared.declaration_result.message_count
    finally:
        await runner.cleanup()
        await channel.queue_delete(f"{tag}.inbox")
        await channel.exchange_delete(tag)
        await conn.close()
    accepted = statuses.get(200, 0)
    return {
        "inbound_accepted_per_s": round(accepted / elapsed, 1),
        "inbound_accepted": accepted,
        "inbound_queued": queued,
        "inbound_statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


async def outbound(twilio: TwilioStandIn, m: int, rate: float, tag: str) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        replicas = []
        for _ in range(3):
            redis = Redis.from_url(REDIS_URL, decode_responses=True)
            stack.push_async_callback(redis.aclose)
            client = await stack.enter_async_context(
                api_client(twilio.account_sid, twilio.auth_token, twilio.api_base)
            )
            replicas.append(TwilioSms(
                client, redis, RateLimiter(redis, tag, max_wait_s=3600), from_number="+14155550199",
                rate=Rate(rate), prefix=tag, status_callback_base=PUBLIC,
            ))
        texts = [OutboundSms(f"+1415555{i:04d}", f"Case update {i}", "CS-7K3M9Q", f"{tag}/{i}")
                 for i in range(m)]
        started = time.perf_counter()
        results = await asyncio.gather(*(replicas[i % 3].send(t) for i, t in enumerate(texts)))
        elapsed = time.perf_counter() - started
        await redis.delete(f"{tag}:ratelimit:twilio:+14155550199")
    arrivals = sorted(r.at for r in twilio.created())
    busiest = max(sum(1 for a in arrivals[i:] if a - s < 1.0) for i, s in enumerate(arrivals))
    return {
        "outbound_sent_per_s": round(sum(r.ok for r in results) / elapsed, 1),
        "outbound_limit_per_s": rate,
        "outbound_busiest_second": busiest,
        "outbound_failed": sum(not r.ok for r in results),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tag = f"bench-sms-{uuid.uuid4().hex[:6]}"
    async with TwilioStandIn() as twilio:
        figures = await inbound(twilio, args.n, args.c, tag)
        print(f"inbound: {figures['inbound_accepted_per_s']} webhooks/s accepted with confirm "
              f"({figures['inbound_accepted']} accepted, {figures['inbound_queued']} queued)")
        out = await outbound(twilio, args.m, args.rate, tag)
        print(f"outbound: {out['outbound_sent_per_s']} SMS/s under a limit of {args.rate}/s "
              f"(busiest second: {out['outbound_busiest_second']})")
    figures.update(out)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="inbound webhooks")
    parser.add_argument("-c", type=int, default=64, help="inbound concurrency")
    parser.add_argument("-m", type=int, default=200, help="outbound texts")
    parser.add_argument("--rate", type=float, default=50.0, help="outbound limit per second")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
