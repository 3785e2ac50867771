"""The mailbox watcher against a real Dovecot, the real RabbitMQ and the real Redis: messages
appended over IMAP come out on the bus once each, are marked processed only after the
broker confirmed them, survive a broker outage, a restart and a SIGKILL mid-intake without
loss, and one of two watchers on a mailbox holds it at a time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import REGISTRY

from casegate_case_store.settings import Settings as CaseStoreSettings
from casegate_intake.adapters.imap import MailboxWatcher
from casegate_intake.settings import Settings
from casegate_shared.bus import Bus
from casegate_shared.events import Envelope, MessageKind, MessageReceived
from casegate_shared.settings import BusSettings
from tests.conftest import ROOT, eventually, free_port
from tests.integration.test_case_store_service import running
from tests.support.dovecot import (  # noqa: F401 - fixtures
    Dovecot,
    dovecot,
    imap_folder,
    kick,
    running_dovecot,
)
from tests.support.tcp_proxy import HeldProxy

PROCESSED = b"$CasegateProcessed"
QUIET_S = 1.0


def mail(n: int, *, sender: str = "customer@example.com", attach: bytes | None = None,
         message_id: str | None = "auto") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {n} <{sender}>"
    msg["To"] = "support@example.test"
    msg["Subject"] = f"Request number {n}"
    if message_id:
        auto = f"<req{n}.{uuid.uuid4().hex[:8]}@example.com>"
        msg["Message-ID"] = auto if message_id == "auto" else message_id
    msg.set_content(f"Hello, this is request {n}.\n\nOn Mon, 1 Jan 2024, Support wrote:\n> old\n")
    if attach is not None:
        msg.add_attachment(attach, maintype="application", subtype="pdf", filename=f"r{n}.pdf")
    return msg.as_bytes()


def append(server: Dovecot, folder: str, messages: list[bytes]) -> None:
    with server.client() as client:
        for raw in messages:
            client.append(folder, raw)


def unprocessed(server: Dovecot, folder: str) -> list[int]:
    with server.client() as client:
        client.select_folder(folder, readonly=True)
        return list(client.search(["NOT", "KEYWORD", PROCESSED.decode()]))


def count(server: Dovecot, folder: str) -> int:
    with server.client() as client:
        if not client.folder_exists(folder):
            return 0
        return int(client.folder_status(folder, ["MESSAGES"])[b"MESSAGES"])


@dataclass
class Observed:
    """Every `message.received.email` the broker routed, in arrival order."""

    events: list[Envelope[MessageReceived]] = field(default_factory=list)

    def keys(self) -> list[str]:
        return [e.data.dedupe_key for e in self.events]


@asynccontextmanager
async def observe(bus_settings: BusSettings) -> AsyncIterator[Observed]:
    connection = await aio_pika.connect(bus_settings.amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            bus_settings.bus_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "message.received.email")
        observed = Observed()

        async def collect(message: AbstractIncomingMessage) -> None:
            assert message.routing_key == "message.received.email"
            observed.events.append(Envelope[MessageReceived].model_validate_json(message.body))

        await queue.consume(collect, no_ack=True)
        yield observed
    finally:
        await connection.close()


@pytest.fixture
def settings(
    bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str, redis_url: str,  # noqa: F811
    key_prefix: str, tmp_path: Path,
) -> Settings:
    return Settings(
        **bus_settings.model_dump(),
        imap_mailboxes=dovecot.url(imap_folder),
        redis_url=redis_url,
        redis_prefix=key_prefix,
        imap_lease_s=2,
        imap_poll_s=300,  # IDLE must do the waking: a poll would hide a broken IDLE
        imap_backoff_max_s=0.5,
        blob_dir=str(tmp_path / "blobs"),
    )


@asynccontextmanager
async def watching(settings: Settings, **overrides: Any) -> AsyncIterator[MailboxWatcher]:
    settings = settings.model_copy(update=overrides)
    bus = Bus(settings, source="intake")
    await bus.connect()
    watcher = MailboxWatcher(settings, bus)
    await watcher.start()
    try:
        yield watcher
    finally:
        await watcher.stop()
        await bus.close()


def metric(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return value if value is not None else 0.0


# --- the normal path --------------------------------------------------------------------


async def test_each_message_is_published_once_then_marked_processed(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    raws = [mail(i) for i in range(5)] + [mail(5, attach=b"%PDF-1.4 receipt")]
    append(dovecot, imap_folder, raws)
    async with observe(bus_settings) as seen, watching(settings):
        await eventually(until(lambda: len(seen.events) >= 6), timeout=20)
        await eventually(until(lambda: not unprocessed(dovecot, imap_folder)), timeout=10)
        await asyncio.sleep(QUIET_S)
    assert len(seen.events) == 6 and len(set(seen.keys())) == 6
    for event in seen.events:
        msg = event.data
        assert event.type == "message.received.email" and msg.channel == "email"
        assert msg.dedupe_key.startswith("email:mid:<req")
        assert msg.email is not None and msg.email.mailbox == dovecot.mailbox_name(imap_folder)
        assert msg.kind is MessageKind.MESSAGE and msg.sender.email == "customer@example.com"
        assert msg.body.startswith("Hello, this is request") and "old" not in msg.body
        assert msg.full_body is not None and "> old" in msg.full_body
    [with_file] = [e.data for e in seen.events if e.data.attachments]
    [ref] = with_file.attachments
    assert ref.blob_key and ref.filename == "r5.pdf" and ref.omitted_reason is None
    blob = Path(settings.blob_dir) / ref.blob_key[:2] / ref.blob_key[2:4] / ref.blob_key
    assert blob.read_bytes() == b"%PDF-1.4 receipt"


async def test_new_mail_wakes_an_idle_watcher(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    async with observe(bus_settings) as seen, watching(settings):
        await asyncio.sleep(1.0)  # the watcher has scanned an empty folder and is idling
        append(dovecot, imap_folder, [mail(1)])
        await eventually(until(lambda: len(seen.events) == 1), timeout=5)  # poll is 300 s


async def test_own_mail_is_marked_processed_and_not_published(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    append(dovecot, imap_folder, [mail(1, sender="Support@Example.Test"), mail(2)])
    async with observe(bus_settings) as seen, watching(settings):
        await eventually(until(lambda: not unprocessed(dovecot, imap_folder)), timeout=20)
        await asyncio.sleep(QUIET_S)
    assert [e.data.subject for e in seen.events] == ["Request number 2"]


async def test_move_mode_moves_processed_mail_to_its_folder(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    done = f"{imap_folder}-done"
    append(dovecot, imap_folder, [mail(i) for i in range(3)])
    async with observe(bus_settings) as seen, watching(settings, imap_processed_folder=done):
        await eventually(until(lambda: count(dovecot, done) == 3), timeout=20)
    assert count(dovecot, imap_folder) == 0 and len(seen.events) == 3
    with dovecot.client() as client:
        client.delete_folder(done)


async def test_oversized_attachments_are_noted_not_stored(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    append(dovecot, imap_folder, [mail(1, attach=b"x" * 5000)])
    async with observe(bus_settings) as seen, watching(settings, attachment_max_bytes=4096):
        await eventually(until(lambda: len(seen.events) == 1), timeout=20)
    [ref] = seen.events[0].data.attachments
    assert ref.blob_key is None and ref.size == 5000 and "limit" in (ref.omitted_reason or "")


async def test_a_large_message_is_taken_in_piecemeal_and_its_attachments_streamed(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    photos = [os.urandom(2_500_000 + n) for n in range(2)]  # several 1 MB fetches each
    big = EmailMessage()
    big["From"], big["Subject"], big["Message-ID"] = "c@example.com", "Big one", "<big@example.com>"
    big.set_content("The photos are attached.\n\nOn Mon, Support wrote:\n> send photos")
    big.add_alternative("<p>The photos are attached.</p>", subtype="html")
    for n, data in enumerate(photos):
        big.add_attachment(data, maintype="image", subtype="jpeg", filename=f"p{n}.jpg")
    big.add_attachment(b"x" * 3_000_000, maintype="application", subtype="zip", filename="big.zip")
    append(dovecot, imap_folder, [big.as_bytes(), mail(2, attach=b"y" * 8000)])
    limits = {"imap_message_max_bytes": 1_000_000, "attachment_max_bytes": 2_900_000}
    async with observe(bus_settings) as seen, watching(settings, **limits):
        await eventually(until(lambda: not unprocessed(dovecot, imap_folder)), timeout=30)
    by_subject = {e.data.subject: e.data for e in seen.events}
    first = by_subject["Big one"]
    assert first.body == "The photos are attached." and first.html is None
    names = [(a.filename, a.blob_key is not None) for a in first.attachments]
    assert names == [("p0.jpg", True), ("p1.jpg", True), ("big.zip", False)]
    for ref, data in zip(first.attachments, photos):
        assert ref.blob_key is not None and ref.size == len(data)
        blob = Path(settings.blob_dir) / ref.blob_key[:2] / ref.blob_key[2:4] / ref.blob_key
        assert blob.read_bytes() == data
    assert "2900000-byte limit" in (first.attachments[2].omitted_reason or "")
    second = by_subject["Request number 2"]  # small: taken in whole as usual
    assert second.body.startswith("Hello, this is request 2")
    assert [a.filename for a in second.attachments] == ["r2.pdf"]


# --- waiting for mail and losing the connection ---------------------------------------------


async def test_idle_is_reissued_and_mail_still_arrives(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    async with observe(bus_settings) as seen, watching(settings, imap_idle_renew_s=0.3):
        await asyncio.sleep(1.5)  # several IDLE rounds
        append(dovecot, imap_folder, [mail(1)])
        await eventually(until(lambda: len(seen.events) == 1), timeout=5)


async def test_mail_arriving_during_a_batch_is_taken_in_before_idling(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    """Mail that arrives while a batch is being handled is announced (`* N EXISTS`) in the
    server's answer to the batch's FETCH or STORE, and not again once the watcher idles: it
    must not wait for the IDLE renewal (24 min by default)."""
    async with HeldProxy(settings.amqp_url).running() as proxy, observe(bus_settings) as seen:
        slow = settings.model_copy(update={"amqp_url": proxy.url})
        bus = Bus(slow, source="intake")
        await bus.connect()
        watcher = MailboxWatcher(slow, bus)
        try:
            await watcher.start()
            await asyncio.sleep(1.0)  # idling on the empty folder
            proxy.hold()  # a slow broker: mail 1's confirm does not come back yet
            append(dovecot, imap_folder, [mail(1)])
            await asyncio.sleep(1.5)
            append(dovecot, imap_folder, [mail(2)])  # while mail 1's batch is still busy
            await asyncio.sleep(0.5)
            proxy.release()
            await eventually(until(lambda: len(seen.events) == 2), timeout=8)
            await eventually(until(lambda: not unprocessed(dovecot, imap_folder)), timeout=5)
        finally:
            await watcher.stop()
            await bus.close()


async def test_a_dropped_connection_reconnects_and_reads_on(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    name = dovecot.mailbox_name(imap_folder)
    failures = "casegate_intake_imap_session_failures_total"
    before = metric(failures, mailbox=name)
    async with observe(bus_settings) as seen, watching(settings):
        await asyncio.sleep(1.0)
        await asyncio.to_thread(kick, dovecot)
        await eventually(until(lambda: metric(failures, mailbox=name) > before), timeout=15)
        append(dovecot, imap_folder, [mail(1)])
        await eventually(until(lambda: len(seen.events) == 1), timeout=15)


async def test_reconnects_back_off_while_a_session_keeps_failing(
    settings: Settings, dovecot: Dovecot, imap_folder: str, tmp_path: Path  # noqa: F811
) -> None:
    """A failure after the folder opened (here the attachment cannot be stored, so the session
    ends with the mail unmarked) must not reconnect and re-fetch twice a second forever:
    waits that double from half a second allow at most five sessions in six seconds."""
    unwritable = tmp_path / "blobs-is-a-file"
    unwritable.write_bytes(b"")
    name = dovecot.mailbox_name(imap_folder)
    failures = "casegate_intake_imap_session_failures_total"
    before = metric(failures, mailbox=name)
    append(dovecot, imap_folder, [mail(1, attach=b"%PDF-1.4 receipt")])
    async with watching(settings, imap_backoff_max_s=30, blob_dir=str(unwritable)):
        await asyncio.sleep(6.0)
    failed = metric(failures, mailbox=name) - before
    assert 3 <= failed <= 5, f"{failed} failed sessions in 6 s"
    assert unprocessed(dovecot, imap_folder) != []


async def test_a_server_without_idle_is_polled(
    bus_settings: BusSettings, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    no_idle = "imap_capability = IMAP4rev1 LITERAL+ SASL-IR UIDPLUS MOVE NAMESPACE\n"
    with running_dovecot(no_idle) as server:
        with server.client() as client:
            assert b"IDLE" not in client.capabilities()
            client.create_folder("polled")
        settings = Settings(
            **bus_settings.model_dump(), imap_mailboxes=server.url("polled"), redis_url=redis_url,
            redis_prefix=key_prefix, imap_poll_s=0.5, blob_dir=str(tmp_path),
        )
        async with observe(bus_settings) as seen, watching(settings):
            await asyncio.sleep(1.0)
            append(server, "polled", [mail(1), mail(2)])
            await eventually(until(lambda: len(seen.events) == 2), timeout=10)
            await eventually(until(lambda: not unprocessed(server, "polled")), timeout=10)


@pytest.mark.parametrize("uidplus", [True, False], ids=["uidplus", "no-uidplus"])
async def test_a_server_without_move_gets_copy_and_delete(
    bus_settings: BusSettings, redis_url: str, key_prefix: str, tmp_path: Path, uidplus: bool
) -> None:
    """No MOVE: processed mail is copied, flagged deleted and (with UIDPLUS) expunged, once,
    never published again; without UIDPLUS it stays deleted in place for the next expunge."""
    caps = "IMAP4rev1 LITERAL+ SASL-IR IDLE NAMESPACE" + (" UIDPLUS" if uidplus else "")
    with running_dovecot(f"imap_capability = {caps}\n") as server:
        with server.client() as client:
            assert b"MOVE" not in client.capabilities()
            client.create_folder("nomove")
        settings = Settings(
            **bus_settings.model_dump(), imap_mailboxes=server.url("nomove"), redis_url=redis_url,
            redis_prefix=key_prefix, imap_processed_folder="nomove-done", blob_dir=str(tmp_path),
        )
        failures = "casegate_intake_imap_session_failures_total"
        before = metric(failures, mailbox=server.mailbox_name("nomove"))
        append(server, "nomove", [mail(1)])
        async with observe(bus_settings) as seen, watching(settings):
            await eventually(until(lambda: count(server, "nomove-done") == 1), timeout=10)
            await asyncio.sleep(QUIET_S * 2)
        assert len(seen.events) == 1 and count(server, "nomove-done") == 1
        assert metric(failures, mailbox=server.mailbox_name("nomove")) == before
        with server.client() as client:
            client.select_folder("nomove", readonly=True)
            left = client.search("ALL")
            if uidplus:
                assert left == []
            else:
                assert left and client.search("DELETED") == left


# --- the broker cannot confirm ---------------------------------------------------------


async def test_nothing_is_marked_while_the_broker_cannot_confirm(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    append(dovecot, imap_folder, [mail(i) for i in range(4)])
    name = dovecot.mailbox_name(imap_folder)
    # Nothing is bound yet: every publish is returned unroutable, so none is confirmed.
    async with watching(settings):
        pending = "casegate_intake_mailbox_pending"
        await eventually(until(lambda: metric(pending, mailbox=name) == 4))
        await asyncio.sleep(2.0)
        assert len(unprocessed(dovecot, imap_folder)) == 4
        assert metric("casegate_intake_mailbox_lag_seconds", mailbox=name) > 1.0
    # The broker connection is gone under the watcher: still nothing marked.
    async with observe(bus_settings) as seen:
        bus = Bus(settings, source="intake")
        await bus.connect()
        assert bus.connection is not None
        await bus.connection.close()
        watcher = MailboxWatcher(settings, bus)
        await watcher.start()
        await asyncio.sleep(2.0)
        await watcher.stop()
        assert len(unprocessed(dovecot, imap_folder)) == 4 and not seen.events
    # The broker is reachable again: everything that waited is taken in, once.
    async with observe(bus_settings) as seen, watching(settings):
        await eventually(until(lambda: not unprocessed(dovecot, imap_folder)), timeout=20)
        await asyncio.sleep(QUIET_S)
    assert len(seen.events) == 4 and len(set(seen.keys())) == 4
    assert metric("casegate_intake_mailbox_lag_seconds", mailbox=name) == 0.0


# --- restarts and replicas ---------------------------------------------------------------


async def test_a_restart_takes_nothing_twice_and_keys_are_stable(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    append(dovecot, imap_folder, [mail(1), mail(2, message_id=None)])
    async with observe(bus_settings) as first, watching(settings):
        await eventually(until(lambda: not unprocessed(dovecot, imap_folder)), timeout=20)
    async with observe(bus_settings) as second, watching(settings):
        await asyncio.sleep(QUIET_S * 2)
    assert len(first.events) == 2 and not second.events
    # As if the process had died between confirm and mark: the flags are lost.
    with dovecot.client() as client:
        client.select_folder(imap_folder)
        client.remove_flags(client.search("ALL"), [PROCESSED])
    async with observe(bus_settings) as third, watching(settings):
        await eventually(until(lambda: not unprocessed(dovecot, imap_folder)), timeout=20)
    assert sorted(third.keys()) == sorted(first.keys())
    assert {e.id for e in third.events} == {e.id for e in first.events}
    assert any(k.startswith("email:sha256:") for k in first.keys())  # no Message-ID: its bytes


async def test_two_watchers_one_lease_and_takeover(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    name = dovecot.mailbox_name(imap_folder)
    append(dovecot, imap_folder, [mail(i) for i in range(10)])
    async with observe(bus_settings) as seen:
        async with watching(settings) as a, watching(settings) as b:
            await eventually(until(lambda: a.holds(name) or b.holds(name)))
            await asyncio.sleep(3.0)  # more than a lease period: the holder renews, the other waits
            assert a.holds(name) != b.holds(name)
            holder, other = (a, b) if a.holds(name) else (b, a)
            await eventually(until(lambda: not unprocessed(dovecot, imap_folder)), timeout=20)
            assert len(seen.events) == 10 and len(set(seen.keys())) == 10
            await holder.stop()
            await eventually(until(lambda: other.holds(name)), timeout=10)
            append(dovecot, imap_folder, [mail(99)])
            await eventually(until(lambda: len(seen.events) == 11), timeout=20)


async def test_a_recreated_folder_is_taken_in_again_without_duplicate_cases(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str,  # noqa: F811
    clean_db: str,
) -> None:
    """The folder is deleted and created again under a watcher idling on it (a restore from
    backup): its UIDVALIDITY changes, the same mail comes back unmarked with new UIDs. The
    watcher must notice, take everything in again, and case-store must make no second case,
    also for a mail without a Message-ID."""
    name = dovecot.mailbox_name(imap_folder)
    changes = "casegate_intake_imap_uidvalidity_changes_total"
    before = metric(changes, mailbox=name)
    raws = [mail(0), mail(1), mail(2, message_id=None)]
    append(dovecot, imap_folder, raws)
    store = CaseStoreSettings(**bus_settings.model_dump(), database_url=clean_db,
                              case_store_port=free_port())
    db = await asyncpg.connect(clean_db)

    async def cases_and_messages() -> tuple[int, int]:
        return (await db.fetchval("SELECT count(*) FROM cases"), await db.fetchval(
            "SELECT count(*) FROM timeline_entries WHERE kind = 'message_in'"))

    try:
        async with observe(bus_settings) as seen, running(store), watching(settings):
            await eventually(until(lambda: not unprocessed(dovecot, imap_folder)), timeout=20)
            await eventually(lambda: _is(cases_and_messages(), (3, 3)), timeout=20)
            first = {e.data.dedupe_key: e.id for e in seen.events}
            await asyncio.sleep(QUIET_S)  # the watcher is idling on the folder now
            with dovecot.client() as client:
                old = client.folder_status(imap_folder, ["UIDVALIDITY"])[b"UIDVALIDITY"]
                client.delete_folder(imap_folder)
                client.create_folder(imap_folder)
                new = client.folder_status(imap_folder, ["UIDVALIDITY"])[b"UIDVALIDITY"]
            assert new != old
            append(dovecot, imap_folder, [*raws, mail(3)])
            await eventually(until(lambda: len(seen.events) == 7), timeout=20)
            await eventually(until(lambda: not unprocessed(dovecot, imap_folder)), timeout=20)
            await eventually(lambda: _is(cases_and_messages(), (4, 4)), timeout=20)
            await asyncio.sleep(QUIET_S)
        assert len(seen.events) == 7 and await cases_and_messages() == (4, 4)
        again = {e.data.dedupe_key: e.id for e in seen.events[3:]}
        assert {k: again[k] for k in first} == first  # the same events, so case-store dedupes
        assert metric(changes, mailbox=name) == before + 1
    finally:
        await db.close()


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_sigkill_mid_intake_loses_nothing(
    settings: Settings, bus_settings: BusSettings, dovecot: Dovecot, imap_folder: str  # noqa: F811
) -> None:
    total = 200
    append(dovecot, imap_folder, [mail(i) for i in range(total)])
    env = {**os.environ, **_env(settings), "CASEGATE_IMAP_BATCH": "4"}
    async with observe(bus_settings) as seen:
        with _watcher_process(env) as first:
            await eventually(until(lambda: len(seen.events) >= 30), timeout=60)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        left = len(unprocessed(dovecot, imap_folder))
        assert 0 < left < total, "the kill should land while mail is being taken in"
        with _watcher_process(env):
            await eventually(until(lambda: len(set(seen.keys())) == total), timeout=90)
            await eventually(until(lambda: not unprocessed(dovecot, imap_folder)), timeout=30)
    by_key: dict[str, set[str]] = {}
    for event in seen.events:
        by_key.setdefault(event.data.dedupe_key, set()).add(event.id)
    assert len(by_key) == total
    assert all(len(ids) == 1 for ids in by_key.values()), "a repeat must be the same event"


def _env(settings: Settings) -> dict[str, str]:
    values = {
        "AMQP_URL": settings.amqp_url,
        "BUS_EXCHANGE": settings.bus_exchange,
        "BUS_PREFIX": settings.bus_prefix,
        "IMAP_MAILBOXES": settings.imap_mailboxes.get_secret_value(),
        "REDIS_URL": settings.redis_url,
        "REDIS_PREFIX": settings.redis_prefix,
        "IMAP_LEASE_S": str(settings.imap_lease_s),
        "IMAP_BACKOFF_MAX_S": "0.5",
        "BLOB_DIR": settings.blob_dir,
    }
    return {f"CASEGATE_{k}": v for k, v in values.items()}


class _watcher_process:  # noqa: N801 - used like a function in `with`
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.imap_watcher"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> subprocess.Popen[bytes]:
        return self.proc

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def until(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """For `eventually`: the predicate may block on IMAP, so it runs off the event loop."""

    async def check() -> bool:
        return await asyncio.to_thread(predicate)

    return check


