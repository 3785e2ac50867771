"""Baseline: four durable hops with aio-pika alone (the ceiling our pipeline is held to).

Each hop is a quorum queue whose consumer republishes the message (persistent, confirmed)
to the next queue and then acks; the last hop just acks. Prints messages per second and,
as its last line, one JSON object. Usage: python bench/fourhop.py [-n 2000] [--hops 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid

import aio_pika

AMQP_URL = os.environ.get("CASEGATE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def four_hops(n: int, hops: int = 4, prefetch: int = 64, url: str = AMQP_URL) -> float:
    """Messages per second through `hops` durable hops; cleans up its queues."""
    tag = f"bench-hop-{uuid.uuid4().hex[:6]}"
    conn = await aio_pika.connect(url)
    try:
        pub = await conn.channel(publisher_confirms=True)
        names = [f"{tag}.{i}" for i in range(hops)]
        args = {"x-queue-type": "quorum"}
        for name in names:
            await pub.declare_queue(name, durable=True, arguments=args)
        done = asyncio.Event()
        finished = 0

        async def forward(i: int, msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal finished
            if i + 1 < hops:
                await pub.default_exchange.publish(
                    aio_pika.Message(msg.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    names[i + 1],
                )
            await msg.ack()
            if i + 1 == hops:
                finished += 1
                if finished == n:
                    done.set()

        for i, name in enumerate(names):
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=prefetch)
            q = await ch.declare_queue(name, durable=True, arguments=args)
            await q.consume(lambda m, i=i: forward(i, m))

        body = b"x" * 600  # about the size of one of our envelopes
        started = time.perf_counter()
        sem = asyncio.Semaphore(prefetch)

        async def publish_one() -> None:
            async with sem:
                await pub.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), names[0]
                )

        await asyncio.gather(*(publish_one() for _ in range(n)))
        await asyncio.wait_for(done.wait(), timeout=300)
        rate = n / (time.perf_counter() - started)
        for name in names:
            await pub.queue_delete(name)
        return rate
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--hops", type=int, default=4)
    args = parser.parse_args()
    rate = asyncio.run(four_hops(args.n, args.hops))
    print(f"{args.hops} durable hops: {rate:.0f} messages/s over {args.n} messages")
    print(json.dumps({"n": args.n, "hops": args.hops, "per_s": round(rate, 1)}))


if __name__ == "__main__":
    main()
