"""Web form -> case -> routed -> acknowledgement, measured against a running stack.

Posts N web forms at concurrency C to intake and waits until every acknowledgement is in
the notifier's sandbox. Also measures, in the same run, the four-durable-hop aio-pika
baseline the pipeline is held to (target: at least 0.6x of it). Reports peak resident
memory per service. Last line: one JSON object.

Usage: python bench/e2e.py [-n 2000] [-c 64] [--no-baseline]
Needs the stack up (`make up` in another terminal); with --start it starts one itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fourhop import four_hops  # noqa: E402
from measure import peak_rss_mb, percentile  # noqa: E402

PORTS = {
    "intake": int(os.environ.get("CASEGATE_INTAKE_PORT", 8080)),
    "case-store": int(os.environ.get("CASEGATE_CASE_STORE_PORT", 8081)),
    "router": int(os.environ.get("CASEGATE_ROUTER_PORT", 8082)),
    "notifier": int(os.environ.get("CASEGATE_NOTIFIER_PORT", 8083)),
}


def pid_on_port(port: int) -> int | None:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    m = re.search(r"pid=(\d+)", out.stdout)
    return int(m.group(1)) if m else None


async def post_all(n: int, concurrency: int) -> tuple[dict[str, float], int, float]:
    """Returns customer address -> post start time (epoch), the number refused, and the
    elapsed seconds. Keyed by address, not by the reference intake promised: a promised
    reference that happens to be taken already opens the case under a fresh one."""
    url = f"http://127.0.0.1:{PORTS['intake']}/v1/webform"
    posted: dict[str, float] = {}
    refused = 0
    # Addresses new to this run: notifier caps acknowledgements per address and hour, so a
    # run reusing the last run's addresses would measure that cap instead of the pipeline.
    run = uuid.uuid4().hex[:8]
    sem = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as http:

        async def one(i: int) -> None:
            nonlocal refused
            email = f"bench{i}.{run}@example.com"
            form = {
                "name": f"Bench Customer {i}",
                "email": email,
                "subject": "Refund for my order" if i % 3 == 0 else f"Question {i}",
                "message": "Hello, I have a question about my account and my last invoice.",
            }
            async with sem:
                started = time.time()
                async with http.post(url, json=form) as resp:
                    body = await resp.json()
                    if resp.status == 202 and body.get("ref"):
                        posted[email] = started
                    else:
                        refused += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return posted, refused, time.perf_counter() - t0


async def wait_for_acks(
    posted: dict[str, float], timeout: float
) -> dict[str, list[float]]:
    """address -> delivery times (epoch) of its acknowledgements, polling the sandbox."""
    url = f"http://127.0.0.1:{PORTS['notifier']}/sandbox/messages"
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(url) as resp:
                messages = await resp.json()
            acks: dict[str, list[float]] = {}
            for m in messages:
                if m.get("to") in posted:
                    acks.setdefault(m["to"], []).append(
                        datetime.fromisoformat(m["time"]).timestamp()
                    )
            if len(acks) >= len(posted) or time.monotonic() > deadline:
                return acks
            # Each look lists every captured message: looking often would cost the notifier
            # (the service being measured) a noticeable share of its time. The rate comes from
            # the delivery times stamped on the messages, so it does not depend on this.
            await asyncio.sleep(2.0)


async def bench(n: int, concurrency: int, baseline: bool) -> dict[str, object]:
    pids = {name: pid_on_port(port) for name, port in PORTS.items()}
    missing = [name for name, pid in pids.items() if pid is None]
    if missing:
        sys.exit(f"bench: not running: {', '.join(missing)} (start the stack with `make up`)")
    hop_rate = await four_hops(n) if baseline else None

    async with aiohttp.ClientSession() as http:  # only this run's acknowledgements count
        await http.delete(f"http://127.0.0.1:{PORTS['notifier']}/sandbox/messages")
    first_post = time.time()
    posted, refused, post_s = await post_all(n, concurrency)
    acks = await wait_for_acks(posted, timeout=max(120.0, n / 10))
    last_delivery = max((max(t) for t in acks.values()), default=time.time())
    await asyncio.sleep(2)  # then look once more, so a late duplicate is counted too
    acks = await wait_for_acks(posted, timeout=0)
    latencies = [(min(acks[r]) - posted[r]) * 1000 for r in posted if r in acks]
    counts = Counter({r: len(t) for r, t in acks.items()})
    result: dict[str, object] = {
        "n": n,
        "concurrency": concurrency,
        "accepted": len(posted),
        "refused": refused,
        "accepted_per_s": round(len(posted) / post_s, 1),
        "completed_per_s": round(len(acks) / max(last_delivery - first_post, 1e-9), 1),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "lost": len(posted) - len(acks),
        "duplicated": sum(1 for c in counts.values() if c > 1),
        "peak_rss_mb": {name: peak_rss_mb(pid) for name, pid in pids.items() if pid},
    }
    if hop_rate is not None:
        result["four_hop_per_s"] = round(hop_rate, 1)
        result["ratio_to_four_hop"] = round(float(result["completed_per_s"]) / hop_rate, 2)  # type: ignore[arg-type]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=int(os.environ.get("BENCH_N", 2000)))
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--no-baseline", action="store_true", help="skip the four-hop baseline")
    args = parser.parse_args()
    result = asyncio.run(bench(args.n, args.concurrency, not args.no_baseline))
    print(
        f"posted {result['accepted']}/{args.n} at c={args.concurrency}: "
        f"{result['accepted_per_s']}/s accepted, {result['completed_per_s']}/s acknowledged; "
        f"latency p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms; "
        f"lost {result['lost']}, duplicated {result['duplicated']}"
    )
    if "four_hop_per_s" in result:
        print(f"four-hop baseline {result['four_hop_per_s']}/s, ratio {result['ratio_to_four_hop']}")
    print(f"peak RSS (MB): {result['peak_rss_mb']}")
    print(json.dumps(result))
    if result["lost"] or result["duplicated"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
