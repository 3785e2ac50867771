"""The SLA sweeper against PostgreSQL: a store of N open cases (default 100,000).

Seeds a database of its own (`casegate_bench_sla`, dropped and rebuilt) in SQL: N open cases
with running clocks due in the coming weeks; after the first idle measurement, D of them
(default 5,000) are made overdue on both clocks (a sweeper that was down for a while). Then, in this process, with the
sweeper case-store runs:

1. the idle pass: one sweep over the store when nothing is due (what every interval costs),
   and the "when is the next clock due" query it sleeps on;
2. the catch-up: passes until every overdue clock has its warning and its breach (4 events
   per overdue case, each with its timeline entry, audit row and outbox event), events/s;
3. the idle pass again, after the catch-up (raised clocks must not slow it down).

No broker is needed: raised events wait in the outbox. Last line: one JSON object.

Usage: python bench/sla_sweeper.py [--cases 100000] [--due 5000] [--batch 200] [--passes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from casegate_case_store.store.db import create_pool  # noqa: E402
from casegate_case_store.store.sla import _NEXT, SlaSweeper  # noqa: E402
from api import ADMIN_URL, fresh_database  # noqa: E402

DB = "casegate_bench_sla"

SEED = """
INSERT INTO customers (name) SELECT 'Customer ' || g FROM generate_series(1, 1000) g;
INSERT INTO cases (ref, customer_id, channel, subject, status, priority, team, region,
                   first_response_warn_at, first_response_due, resolution_warn_at, resolution_due)
SELECT 'CS-' || lpad(g::text, 7, '0'), 1 + g % 1000,
       (ARRAY['email','sms','webform','slack'])[1 + g % 4], 'case ' || g,
       (ARRAY['new','open','on_hold'])[1 + g % 3], (ARRAY['P1','P2','P3','P4'])[1 + g % 4],
       (ARRAY['billing','shipping','accounts','tech'])[1 + g % 4], 'emea',
       t.base, t.base + interval '1 hour', t.base + interval '2 hours', t.base + interval '3 hours'
FROM generate_series(1, $1) g,
     LATERAL (SELECT now() + make_interval(mins => 60 + g % 40000) AS base) t;
ANALYZE;
"""
OVERDUE = """
UPDATE cases SET first_response_warn_at = now() - interval '1 day',
    first_response_due = now() - interval '23 hours', resolution_warn_at = now() - interval '22 hours',
    resolution_due = now() - interval '21 hours'
WHERE id IN (SELECT id FROM cases ORDER BY random() LIMIT $1)
"""


async def seed(url: str, cases: int) -> None:
    await fresh_database(DB, url)
    conn = await asyncpg.connect(url)
    started = time.perf_counter()
    for statement in SEED.split(";\n"):
        if statement.strip():
            await conn.execute(statement.replace("$1", str(cases)))
    print(f"seeded {cases} open cases in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    await conn.close()


async def idle_pass(pool: asyncpg.Pool, sweeper: SlaSweeper, passes: int) -> dict[str, float]:
    sweeps, nexts = [], []
    for _ in range(passes):
        started = time.perf_counter()
        raised = await sweeper.sweep_once()
        sweeps.append((time.perf_counter() - started) * 1000)
        assert raised == 0, f"an idle pass raised {raised} events"
        started = time.perf_counter()
        await pool.fetchval(_NEXT)
        nexts.append((time.perf_counter() - started) * 1000)
    return {"sweep_ms_median": round(statistics.median(sweeps), 2),
            "sweep_ms_max": round(max(sweeps), 2),
            "next_due_ms_median": round(statistics.median(nexts), 2)}


async def catch_up(pool: asyncpg.Pool, sweeper: SlaSweeper) -> dict[str, float]:
    started = time.perf_counter()
    events = passes = 0
    while raised := await sweeper.sweep_once():
        events += raised
        passes += 1
    elapsed = time.perf_counter() - started
    outbox = await pool.fetchval("SELECT count(*) FROM outbox")
    assert outbox == events, f"{events} raised but {outbox} in the outbox"
    return {"events": events, "passes": passes, "seconds": round(elapsed, 2),
            "events_per_s": round(events / elapsed, 1) if elapsed else 0.0}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{DB}"
    await seed(url, args.cases)
    pool = await create_pool(url, max_size=2)
    try:
        sweeper = SlaSweeper(pool, batch=args.batch)
        idle = await idle_pass(pool, sweeper, args.passes)
        await pool.execute(OVERDUE, args.due)
        caught = await catch_up(pool, sweeper)
        assert caught["events"] == 4 * args.due, f"{caught['events']} events for {args.due} cases"
        after = await idle_pass(pool, sweeper, args.passes)
    finally:
        await pool.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"store: {args.cases} open cases, {args.due} overdue on both clocks")
    print(f"idle pass over {args.cases} open cases: median {idle['sweep_ms_median']} ms "
          f"(max {idle['sweep_ms_max']} ms); next-due query {idle['next_due_ms_median']} ms")
    print(f"catch-up: {caught['events']} events in {caught['seconds']} s "
          f"({caught['events_per_s']} events/s, batch {args.batch})")
    print(f"idle pass after it: median {after['sweep_ms_median']} ms")
    print(json.dumps({"sla_sweeper": {"open_cases": args.cases, "overdue_cases": args.due,
                                      "idle": idle, "catch_up": caught, "idle_after": after},
                      "peak_rss_mb": round(peak, 1)}))


if __name__ == "__main__":
    asyncio.run(main())
