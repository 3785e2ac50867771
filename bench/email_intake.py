"""Email intake: messages per second from an IMAP mailbox to the bus, each published with the
broker's confirm and then marked processed in the mailbox.

N messages are appended to a fresh folder of a private Dovecot (started for the run, as the
tests do) or of `--imap-url`; then the mailbox watcher runs in this process on its own
exchange with one durable quorum queue bound (as case-store's would be). The clock runs from
the watcher's start until every message is in the queue (published, confirmed) and none is
left unprocessed in the mailbox. Needs RabbitMQ and Redis on this machine; Dovecot is
installed if missing. Last line: one JSON object.

Usage: python bench/email_intake.py [-n 2000] [--batch 50] [--imap-url imap://u:p@h:port]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
from imapclient import IMAPClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from casegate_intake.adapters.imap import MailboxWatcher  # noqa: E402
from casegate_intake.settings import Settings  # noqa: E402
from casegate_shared.bus import Bus  # noqa: E402
from tests.support.dovecot import start_dovecot, stop_dovecot  # noqa: E402

AMQP_URL = os.environ.get("CASEGATE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("CASEGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


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


def unprocessed(url: str, flag: str) -> int:
    client, folder = client_for(url)
    with client:
        client.select_folder(folder, readonly=True)
        return len(client.search(["NOT", "DELETED", "NOT", "KEYWORD", flag]))


async def depth_of(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    declared = await channel.declare_queue(name, passive=True)
    return int(declared.declaration_result.message_count or 0)


async def run(url: str, n: int, batch: int) -> dict[str, Any]:
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
        while await asyncio.to_thread(unprocessed, url, settings.imap_processed_flag):
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
        "n": n,
        "batch": batch,
        "published_per_s": round(n / published, 1),
        "per_s": round(n / marked, 1),
        "seconds": round(marked, 2),
        "in_queue": depth,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50, help="CASEGATE_IMAP_BATCH")
    parser.add_argument("--imap-url", help="a mailbox to fill; default: a private Dovecot")
    args = parser.parse_args()
    root = None
    url = args.imap_url
    if url is None:
        root = Path(tempfile.mkdtemp(prefix="bench-dovecot-"))
        server, config = start_dovecot(root)
        url = server.url(f"bench{uuid.uuid4().hex[:6]}")
    try:
        result = asyncio.run(run(url, args.n, args.batch))
    finally:
        if root is not None:
            stop_dovecot(root, config)
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"email intake: {result['per_s']:.0f} messages/s published, confirmed and marked "
        f"({result['published_per_s']:.0f}/s published) over {args.n} messages; "
        f"{result['in_queue']} in the queue; peak RSS {result['peak_rss_mb']} MB"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
