"""Email intake: messages per second from an IMAP mailbox into their cases.

N messages are appended to a staging folder of a private Dovecot (started for the run, as
the tests do) or of `--imap-url`. Case-store, on a database of its own created and migrated
for the run, and intake, watching the (empty) folder beside it, start as their own processes
on a private exchange. Once both are ready, one IMAP MOVE lands all N in the watched folder,
and the clock runs from there until every message is a case message in case-store's
database: parsed, published with the broker's confirm, marked processed in the mailbox,
consumed and committed with its case (the database's clock, commit times). A length-1 queue on `case.#` stands in for
router and notifier, so case-store's outbox events are routed as they would be. Reports
messages per second and each service's peak resident memory.

`--to-bus`: the narrower figure of intake alone: the watcher in this process, until every
message is published, confirmed and marked (one durable quorum queue in case-store's place).

Needs RabbitMQ, PostgreSQL and Redis on this machine; Dovecot is installed if missing.
Last line: one JSON object.

Usage: python bench/email_intake.py [-n 2000] [--batch 50] [--to-bus] [--imap-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import asyncpg
from imapclient import IMAPClient
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from casegate_intake.adapters.imap import MailboxWatcher  # noqa: E402
from casegate_intake.settings import Settings  # noqa: E402
from casegate_shared.bus import Bus  # noqa: E402
from tests.support.dovecot import start_dovecot, stop_dovecot  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from api import ADMIN_URL, drop_database, fresh_database  # noqa: E402
from measure import free_port, peak_rss_mb  # noqa: E402

AMQP_URL = os.environ.get("CASEGATE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("CASEGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
PROCESSED = "$CasegateProcessed"


def message(i: int, tag: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {i} <customer{i % 97}@example.com>"
    msg["To"] = "support@example.test"
    msg["Subject"] = f"Order {1000 + i} has not arrived"
    msg["Message-ID"] = f"<bench{i}.{tag}@example.com>"
    msg.set_content(
        f"Hello,\n\nmy order {1000 + i} was due last week and has not arrived.\nCould you check?"
        "\n\nThanks\n\nOn Mon, 1 Jan 2024 at 09:00, Support <support@example.test> wrote:\n"
        "> We received your order.\n"
    )
    msg.add_alternative(f"<p>Hello,</p><p>my order <b>{1000 + i}</b> has not arrived.</p>",
                        subtype="html")
    return msg.as_bytes()


def client_for(url: str) -> tuple[IMAPClient, str]:
    parts = urlsplit(url)
    client = IMAPClient(parts.hostname, port=parts.port or 143, ssl=parts.scheme == "imaps")
    client.login(unquote(parts.username or ""), unquote(parts.password or ""))
    return client, unquote(parts.path.lstrip("/")) or "INBOX"


def fill(url: str, n: int, tag: str) -> None:
    client, folder = client_for(url)
    with client:
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for start in range(0, n, 200):
            client.multiappend(folder, [message(i, tag) for i in range(start, min(n, start + 200))])


def staging(folder: str) -> str:
    return f"{folder}-staging"


def fill_staging(url: str, n: int, tag: str) -> None:
    """N messages into the staging folder beside the watched one, which is left empty."""
    client, folder = client_for(url)
    with client:
        if not client.folder_exists(folder):
            client.create_folder(folder)
    parts = urlsplit(url)
    fill(parts._replace(path=f"/{staging(folder)}").geturl(), n, tag)


def arrive(url: str) -> None:
    """All of the staging folder lands in the watched folder at once (one UID MOVE)."""
    client, folder = client_for(url)
    with client:
        client.select_folder(staging(folder))
        client.move(client.search("ALL"), folder)
        client.delete_folder(staging(folder))


def unprocessed(url: str) -> int:
    client, folder = client_for(url)
    with client:
        client.select_folder(folder, readonly=True)
        return len(client.search(["NOT", "DELETED", "NOT", "KEYWORD", PROCESSED]))


# --- into cases: intake and case-store as processes ----------------------------------------


class Service:
    """One service process; its stderr goes to a file shown if it dies."""

    def __init__(self, module: str, port: int, env: dict[str, str], logs: Path) -> None:
        self.name, self.port = module, port
        self.log = logs / f"{module}.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", module], env=env, cwd=ROOT,
                                         stdout=subprocess.DEVNULL, stderr=err)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def answers(self, path: str) -> bool:
        self.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    async def wait(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self.answers, path):
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not answer {path} within {timeout} s")
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def in_cases(db: asyncpg.Connection) -> tuple[int, int]:
    """(customer messages on a case, cases)."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM timeline_entries WHERE kind = 'message_in') AS messages, "
        "(SELECT count(*) FROM cases) AS cases")
    return int(row["messages"]), int(row["cases"])


async def to_cases(url: str, n: int, batch: int) -> dict[str, Any]:
    tag = f"bench-mail-{uuid.uuid4().hex[:6]}"
    database = tag.replace("-", "_")
    work = Path(tempfile.mkdtemp(prefix="bench-email-"))
    await asyncio.to_thread(fill_staging, url, n, tag)
    db_url = ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    await fresh_database(database, db_url)
    ports = {"intake": free_port(), "case-store": free_port()}
    env = {
        **os.environ, "CASEGATE_AMQP_URL": AMQP_URL, "CASEGATE_BUS_EXCHANGE": tag,
        "CASEGATE_BUS_PREFIX": tag, "CASEGATE_DATABASE_URL": db_url,
        "CASEGATE_REDIS_URL": REDIS_URL, "CASEGATE_REDIS_PREFIX": tag,
        "CASEGATE_IMAP_MAILBOXES": url, "CASEGATE_IMAP_BATCH": str(batch),
        "CASEGATE_BLOB_DIR": str(work / "blobs"), "CASEGATE_LOG_LEVEL": "WARNING",
        "CASEGATE_INTAKE_PORT": str(ports["intake"]),
        "CASEGATE_CASE_STORE_PORT": str(ports["case-store"]),
    }
    conn = await aio_pika.connect(AMQP_URL)
    channel = await conn.channel()
    exchange = await channel.declare_exchange(tag, aio_pika.ExchangeType.TOPIC, durable=True)
    downstream = await channel.declare_queue(
        f"{tag}.downstream", arguments={"x-max-length": 1, "x-overflow": "drop-head"}
    )
    await downstream.bind(exchange, "case.#")
    db = await asyncpg.connect(db_url)
    services: list[Service] = []
    try:
        store = Service("casegate_case_store", ports["case-store"], env, work)
        services.append(store)
        await store.wait("/readyz")  # its queue is bound: nothing intake publishes is returned
        intake = Service("casegate_intake", ports["intake"], env, work)
        services.append(intake)
        await intake.wait("/readyz")  # started (imports take seconds on a busy machine)
        # One clock for all: the database's. Commit times say when each message was in its case.
        arrived = await db.fetchval("SELECT clock_timestamp()")
        await asyncio.to_thread(arrive, url)
        deadline = time.monotonic() + max(300.0, n / 5)
        while (await in_cases(db))[0] < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {(await in_cases(db))[0]} of {n} in cases in time")
            intake.check_alive()
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # anything taken in twice would show by now
        messages, cases = await in_cases(db)
        first, last = await db.fetchrow("SELECT min(created_at), max(created_at) "
                                        "FROM timeline_entries WHERE kind = 'message_in'")
        left = await asyncio.to_thread(unprocessed, url)
        rss = {s.name.removeprefix("casegate_").replace("_", "-"): peak_rss_mb(s.proc.pid)
               for s in services}
    finally:
        for service in reversed(services):
            service.stop()
        await db.close()
        await delete_queues(channel, tag)
        await channel.exchange_delete(tag)
        await conn.close()
        await drop_database(database)
        await delete_redis_keys(tag)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "mode": "cases", "n": n, "batch": batch,
        "per_s": round(n / (last - arrived).total_seconds(), 1),
        "seconds": round((last - arrived).total_seconds(), 2),
        "first_in_s": round((first - arrived).total_seconds(), 2),
        "first_to_last_per_s": round((n - 1) / max((last - first).total_seconds(), 1e-6), 1),
        "in_cases": messages, "cases": cases, "left_in_mailbox": left,
        "peak_rss_mb": rss,
    }


async def delete_queues(channel: aio_pika.abc.AbstractChannel, prefix: str) -> None:
    """Every queue of the run (case-store's, their retry and dead-letter queues)."""
    listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True,
                            text=True, timeout=60, check=False).stdout
    for name in listed.split():
        if name.startswith(f"{prefix}."):
            await channel.queue_delete(name)


async def delete_redis_keys(prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(key)
    finally:
        await redis.aclose()


# --- to the bus only: the watcher in this process --------------------------------------------


async def depth_of(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    declared = await channel.declare_queue(name, passive=True)
    return int(declared.declaration_result.message_count or 0)


async def to_bus(url: str, n: int, batch: int) -> dict[str, Any]:
    tag = f"bench-mail-{uuid.uuid4().hex[:6]}"
    blobs = tempfile.mkdtemp(prefix="bench-blobs-")
    await asyncio.to_thread(fill, url, n, tag)
    conn = await aio_pika.connect(AMQP_URL)
    channel = await conn.channel()
    exchange = await channel.declare_exchange(tag, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(
        f"{tag}.inbox", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(exchange, "message.received.email")
    settings = Settings(
        amqp_url=AMQP_URL, bus_exchange=tag, bus_prefix=tag, imap_mailboxes=url,
        redis_url=REDIS_URL, redis_prefix=tag, imap_batch=batch, log_level="WARNING",
        blob_dir=blobs,
    )
    bus = Bus(settings, source="intake")
    await bus.connect()
    watcher = MailboxWatcher(settings, bus)
    try:
        started = time.perf_counter()
        await watcher.start()
        while await depth_of(channel, queue.name) < n:
            await asyncio.sleep(0.05)
        published = time.perf_counter() - started
        while await asyncio.to_thread(unprocessed, url):
            await asyncio.sleep(0.05)
        marked = time.perf_counter() - started
        await asyncio.sleep(1.0)  # anything published twice would show up by now
        depth = await depth_of(channel, queue.name)
    finally:
        await watcher.stop()
        await bus.close()
        await channel.queue_delete(queue.name)
        await channel.exchange_delete(tag)
        await conn.close()
        shutil.rmtree(blobs, ignore_errors=True)
    return {
        "mode": "bus", "n": n, "batch": batch,
        "published_per_s": round(n / published, 1),
        "per_s": round(n / marked, 1),
        "seconds": round(marked, 2),
        "in_queue": depth,
        "peak_rss_mb": {"intake": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50, help="CASEGATE_IMAP_BATCH")
    parser.add_argument("--to-bus", action="store_true",
                        help="intake alone: until published, confirmed and marked")
    parser.add_argument("--imap-url", help="a mailbox to fill; default: a private Dovecot")
    args = parser.parse_args()
    root = None
    url = args.imap_url
    if url is None:
        root = Path(tempfile.mkdtemp(prefix="bench-dovecot-"))
        server, config = start_dovecot(root)
        url = server.url(f"bench{uuid.uuid4().hex[:6]}")
    try:
        run = to_bus if args.to_bus else to_cases
        result = asyncio.run(run(url, args.n, args.batch))
    finally:
        if root is not None:
            stop_dovecot(root, config)
            shutil.rmtree(root, ignore_errors=True)
    rss = ", ".join(f"{k} {v} MB" for k, v in result["peak_rss_mb"].items())
    if args.to_bus:
        print(f"email intake to the bus: {result['per_s']:.0f} messages/s published, confirmed "
              f"and marked ({result['published_per_s']:.0f}/s published) over {args.n} "
              f"messages; {result['in_queue']} in the queue; peak RSS {rss}")
    else:
        print(f"email intake into cases: {result['per_s']:.0f} messages/s from their arrival "
              f"until all {args.n} were in their cases ({result['seconds']} s; the first was in "
              f"after {result['first_in_s']} s, then {result['first_to_last_per_s']:.0f}/s); "
              f"{result['in_cases']} case messages in {result['cases']} cases, "
              f"{result['left_in_mailbox']} left unprocessed; peak RSS {rss}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
