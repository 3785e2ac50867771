"""The agent API under load: `GET /v1/cases` with filters and `GET /v1/cases/{ref}` against a
store of N cases (default 100,000) with timelines.

Seeds a database of its own (`casegate_bench_api`, dropped and rebuilt unless --reuse) in
SQL, starts case-store on it as a subprocess, and drives it with C concurrent clients as a
supervisor (who sees every case, the widest queries). Prints requests per second and
latency percentiles per query shape, then EXPLAIN ANALYZE of the slowest shape. Last line:
one JSON object.

Usage: python bench/api.py [--cases 100000] [-n 2000] [-c 16] [--reuse]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import peak_rss_mb, percentile  # noqa: E402

from casegate_case_store.store.migrations import upgrade  # noqa: E402
from casegate_shared.events import CASE_REF_ALPHABET  # noqa: E402
from casegate_case_store.store.users import Role, create_token, create_user  # noqa: E402

ADMIN_URL = os.environ.get("CASEGATE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
DB = "casegate_bench_api"
PORT = 18181
WORDS = ["invoice", "refund", "parcel", "login", "password", "broken", "delivery", "charge",
         "account", "upgrade", "cancel", "printer", "warranty", "address", "discount"]

SEED = """
INSERT INTO customers (name) SELECT 'Customer ' || g FROM generate_series(1, $1 / 3) g;
INSERT INTO cases (ref, customer_id, channel, subject, description, status, priority, team,
                   created_at, updated_at, tags)
SELECT 'CS-' || (SELECT string_agg(substr('{alphabet}', (1 + (g / (29 ^ k)::bigint) % 29)::int, 1), ''
                         ORDER BY k DESC) FROM generate_series(0, 5) k),
       1 + g % ($1 / 3),
       (ARRAY['email','sms','webform','slack'])[1 + g % 4],
       (ARRAY{words})[1 + g % 15] || ' ' || (ARRAY{words})[1 + (g / 15) % 15] || ' #' || g,
       'Customer wrote about ' || (ARRAY{words})[1 + (g / 7) % 15],
       (ARRAY['new','open','pending_customer','on_hold','resolved','closed'])[1 + g % 6],
       (ARRAY['P1','P2','P3','P4'])[1 + g % 4],
       (ARRAY['billing','shipping','accounts','tech'])[1 + (g / 3) % 4],
       now() - make_interval(mins => g), now() - make_interval(mins => g / 2),
       CASE WHEN g % 10 = 0 THEN ARRAY['vip'] ELSE '{{}}'::text[] END
FROM generate_series(1, $1) g;
INSERT INTO timeline_entries (case_id, kind, actor, visibility, body)
SELECT c.id, k.kind, 'customer', 'public',
       'Message ' || k.n || ' about ' || (ARRAY{words})[1 + (c.id + k.n) % 15]
FROM cases c, (VALUES (1, 'message_in'), (2, 'reply'), (3, 'note'), (4, 'message_in')) k(n, kind);
ANALYZE;
"""


async def fresh_database(name: str, url: str) -> None:
    """Database `name` (at `url`) dropped, created and migrated to case-store's head."""
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    await asyncio.to_thread(upgrade, url)


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def seed(url: str, cases: int) -> str:
    await fresh_database(DB, url)
    conn = await asyncpg.connect(url)
    words = "[" + ",".join(f"'{w}'" for w in WORDS) + "]"
    started = time.perf_counter()
    for statement in SEED.format(words=words, alphabet=CASE_REF_ALPHABET).split(";\n"):
        if statement.strip():
            await conn.execute(statement.replace("$1", str(cases)))
    print(f"seeded {cases} cases in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    await conn.close()
    return url


async def supervisor_token(url: str) -> str:
    conn = await asyncpg.connect(url)
    user = await create_user(conn, "bench", "Bench", [Role.SUPERVISOR])
    _, token = await create_token(conn, user, "bench")
    await conn.close()
    return token


def shapes(refs: list[str]) -> dict[str, list[str]]:
    return {
        "list_recent": ["/v1/cases?limit=50"],
        "list_team_status": [f"/v1/cases?team={t}&status={s}&limit=50"
                             for t in ("billing", "tech") for s in ("open", "new")],
        "list_search": [f"/v1/cases?q={w}&limit=50" for w in WORDS],
        "list_tag_priority": ["/v1/cases?tag=vip&priority=P1&limit=50"],
        "get_case": [f"/v1/cases/{r}" for r in refs],
    }


async def drive(base: str, token: str, paths: list[str], n: int, c: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    counter = iter(range(n))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in counter:
            started = time.perf_counter()
            async with session.get(base + random.choice(paths), headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{resp.status} from {resp.url}")
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(c)))
    return n / (time.perf_counter() - started), latencies


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("-n", type=int, default=2000, help="requests per query shape")
    parser.add_argument("-c", type=int, default=16)
    parser.add_argument("--reuse", action="store_true", help="keep an already seeded database")
    args = parser.parse_args()
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{DB}"
    if not args.reuse:
        await seed(url, args.cases)
    token = await supervisor_token(url)
    conn = await asyncpg.connect(url)
    refs = [r["ref"] for r in await conn.fetch("SELECT ref FROM cases ORDER BY random() LIMIT 500")]
    env = {**os.environ, "CASEGATE_DATABASE_URL": url, "CASEGATE_CASE_STORE_PORT": str(PORT),
           "CASEGATE_BUS_PREFIX": "benchapi", "CASEGATE_BUS_EXCHANGE": "benchapi",
           "CASEGATE_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "casegate_case_store"], env=env)
    base = f"http://127.0.0.1:{PORT}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(base + "/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        results: dict[str, dict[str, float]] = {}
        for name, paths in shapes(refs).items():
            rps, lat = await drive(base, token, paths, args.n, args.c)
            results[name] = {"rps": round(rps, 1), "p50_ms": round(percentile(lat, 0.5), 1),
                             "p99_ms": round(percentile(lat, 0.99), 1)}
            print(f"{name:18} {rps:8.1f} req/s  p50 {results[name]['p50_ms']:7.1f} ms  "
                  f"p99 {results[name]['p99_ms']:7.1f} ms", file=sys.stderr)
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    slowest = max(results, key=lambda k: results[k]["p99_ms"])
    print(f"\nslowest shape: {slowest}; its plan:", file=sys.stderr)
    print(await explain(conn, slowest), file=sys.stderr)
    await conn.close()
    print(json.dumps({"cases": args.cases, "concurrency": args.c, "shapes": results,
                      "slowest": slowest, "case_store_peak_rss_mb": rss}))


async def explain(conn: asyncpg.Connection, shape: str) -> str:
    """The plan of the SQL that shape runs (the same text the API builds)."""
    from casegate_case_store.api.models import CaseQuery
    from casegate_case_store.store import queries
    from casegate_case_store.store.users import Principal

    who = Principal(0, "bench", frozenset({Role.SUPERVISOR}), ())
    filters = {"list_search": {"q": "refund"}, "list_team_status": {"team": "billing",
               "status": "open"}, "list_tag_priority": {"tag": "vip", "priority": "P1"}}
    captured: list[tuple[str, tuple[object, ...]]] = []

    class Spy:
        async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
            captured.append((sql, args))
            return []

    if shape == "get_case":
        return "(get_case runs five index lookups by case id; see the API code)"
    await queries.list_cases(Spy(), who, CaseQuery(**filters.get(shape, {})))  # type: ignore[arg-type]
    sql, params = captured[0]
    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *params)
    return "\n".join(r[0] for r in rows)


if __name__ == "__main__":
    asyncio.run(main())
