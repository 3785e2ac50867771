"""The IMAP mailbox watcher: every configured mailbox is read by exactly one replica (a Redis
lease), and each message in it is published with the broker's confirm before it is marked
processed.

Why nothing is lost: a message is marked only after its confirm, and the watcher always
looks for every message without the mark (never "the last N" or "since T"), so a crash or an
outage at any point means the message is simply taken in again later; the dedupe key, stable
across replicas and restarts, lets case-store apply it once. imapclient blocks, so each
mailbox runs its IMAP calls in a thread of its own and the event loop never waits on IMAP.
Mail is awaited with IDLE (re-issued before the server's 30-minute limit) or polled where the
server lacks IDLE; a failed session reconnects with a backoff that only a finished look resets.
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from aio_pika.exceptions import PublishError
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis

from casegate_shared.blobs import BlobStore, blob_store
from casegate_shared.bus import Bus, BusUnavailable

from ..settings import Settings
from . import imap_ops as ops
from .imap_config import Mailbox, Marking, own_addresses, parse_mailboxes
from .imap_large import stream_part
from .imap_message import Limits, Outcome, deliver
from .lease import Lease

log = logging.getLogger(__name__)
T = TypeVar("T")

IDLE_CHECK_S = 10.0  # how often an idle watcher looks at its lease
SESSION_ERRORS = (IMAPClientError, imaplib.IMAP4.abort, OSError, ops.InsecureMailbox)

LAG = Gauge(
    "casegate_intake_mailbox_lag_seconds", "Age of the oldest unprocessed message", ["mailbox"]
)
PENDING = Gauge(
    "casegate_intake_mailbox_pending", "Unprocessed messages at the last look", ["mailbox"]
)
LEADER = Gauge(
    "casegate_intake_mailbox_leader", "1 while this replica holds the lease", ["mailbox"]
)
SESSION_FAILURES = Counter(
    "casegate_intake_imap_session_failures_total", "IMAP sessions ended by an error", ["mailbox"]
)
UIDVALIDITY_CHANGES = Counter(
    "casegate_intake_imap_uidvalidity_changes_total",
    "Times a mailbox's UIDVALIDITY changed (folder recreated): all of it was looked at again",
    ["mailbox"],
)


class MailboxWatcher:
    """Watches every mailbox in `settings.imap_mailboxes`; `start()` and `stop()` it once.
    Raises ValueError at construction for a bad mailbox URL, flag or folder."""

    def __init__(self, settings: Settings, bus: Bus, blobs: BlobStore | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self.blobs = blobs or blob_store(settings)
        self.mailboxes = parse_mailboxes(settings.imap_mailboxes.get_secret_value())
        self.marking = Marking.from_settings(settings)
        self.limits = Limits(
            settings.imap_message_max_bytes,
            settings.attachment_max_bytes,
            settings.imap_message_attachments_max_bytes,
        )
        self.own = own_addresses(settings, self.mailboxes)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._redis: Redis | None = None
        self._runners: list[_MailboxRunner] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if not self.mailboxes:
            return
        self._redis = Redis.from_url(self.settings.redis_url)
        for mailbox in self.mailboxes:
            key = f"{self.settings.redis_prefix}:imap:lease:{mailbox.name}"
            lease = Lease(self._redis, key, self.owner, self.settings.imap_lease_s)
            runner = _MailboxRunner(self, mailbox, lease)
            self._runners.append(runner)
            self._tasks.append(asyncio.create_task(runner.run(), name=f"imap {mailbox.name}"))

    async def stop(self) -> None:
        for runner in self._runners:
            runner.interrupt()  # wakes a thread blocked in IDLE or a read
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in self._runners:
            await runner.close()
        if self._redis is not None:
            await self._redis.aclose()
        self._redis, self._runners, self._tasks = None, [], []

    def holds(self, mailbox_name: str) -> bool:
        """Whether this replica holds the lease on the mailbox now."""
        return any(r.mailbox.name == mailbox_name and r.lease.held for r in self._runners)


class _MailboxRunner:
    def __init__(self, watcher: MailboxWatcher, mailbox: Mailbox, lease: Lease) -> None:
        self.w = watcher
        self.mailbox = mailbox
        self.lease = lease
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="imap")
        self._client: IMAPClient | None = None
        self._uidvalidity: int | None = None
        self._oldest: datetime | None = None  # of what is still to do, at the last look
        self._pending = 0
        self._delay = 0.5
        self._stopping = False
        # Read at scrape time, so lag keeps growing while nothing can be taken in.
        LAG.labels(mailbox.name).set_function(self._lag)
        PENDING.labels(mailbox.name).set_function(lambda: self._pending)
        LEADER.labels(mailbox.name).set_function(lambda: float(self.lease.held))

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        call = partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def run(self) -> None:
        keeper = asyncio.create_task(self.lease.keep())
        try:
            while not self._stopping:
                await self.lease.wait_held()
                try:
                    await self._session()
                    self._track({})  # the lease moved on: its new holder reports the lag
                except Exception as exc:
                    if self._stopping:  # the socket was shut under it on purpose
                        return
                    SESSION_FAILURES.labels(self.mailbox.name).inc()
                    expected = isinstance(exc, SESSION_ERRORS)  # else a bug: keep its traceback
                    log.warning("imap session failed", exc_info=not expected,
                                extra=self._log(error=repr(exc)[:300]))
                    await self._back_off()
        finally:
            keeper.cancel()

    async def _session(self) -> None:
        settings = self.w.settings
        client = await self._call(ops.connect, self.mailbox, settings.imap_timeout_s)
        self._client = client
        try:
            idle = await self._call(ops.open_folder, client, self.mailbox, self.w.marking)
            while self.lease.held:
                try:
                    await self._take_in(client)
                except (BusUnavailable, PublishError) as exc:
                    log.warning("broker did not confirm, mail stays unprocessed",
                                extra=self._log(error=repr(exc)[:300]))
                    await self._back_off()
                    continue
                # Not earlier: a session that fails after opening the folder (a mark the
                # server refuses) would otherwise reconnect and republish at the shortest delay.
                self._delay = 0.5
                await self._wait(client, idle)
        finally:
            self._client = None
            if not self._stopping:  # stopping shut the socket already; nothing to say
                await self._call(ops.logout, client)

    async def _take_in(self, client: IMAPClient) -> None:
        """Look until a look finds nothing new. Mail that arrives during a batch is announced
        (`* N EXISTS`) in the server's answer to our FETCH or STORE, which imapclient does not
        pass on, and is not announced again in IDLE: only another look finds it. Messages
        still pending from the look before (a mark the server did not keep) are not new, so
        they cannot keep this looking."""
        seen: set[int] = set()
        while self.lease.held:
            found = await self._scan(client)
            if found <= seen:
                return
            seen |= found

    async def _scan(self, client: IMAPClient) -> set[int]:
        """Take in everything not yet processed, oldest first, one batch at a time; the UIDs
        that were pending when it looked."""
        uidvalidity, pending = await self._call(ops.pending, client, self.mailbox, self.w.marking)
        found = set(pending)
        if self._uidvalidity not in (None, uidvalidity):
            # The folder was recreated: its UIDs name other messages. Every message without
            # our mark is taken in again; the Message-ID dedupe key makes a repeat a no-op.
            UIDVALIDITY_CHANGES.labels(self.mailbox.name).inc()
            log.warning("UIDVALIDITY changed, re-scanning",
                        extra=self._log(was=self._uidvalidity, now=uidvalidity))
        self._uidvalidity = uidvalidity
        self._track(pending)
        fetch = partial(self._call, ops.fetch, client, meta=pending,
                        max_bytes=self.w.limits.message_bytes)
        take = partial(deliver, bus=self.w.bus, mailbox=self.mailbox.name,
                       own_addresses=self.w.own, blobs=self.w.blobs, limits=self.w.limits,
                       open_part=partial(stream_part, self._call, client))
        for batch in ops.batches(pending, self.w.settings.imap_batch):
            if not self.lease.held:
                return found
            fetched = await fetch(batch)
            # Publish the batch concurrently so confirms overlap, then mark what was confirmed.
            results = await asyncio.gather(*(take(f) for f in fetched), return_exceptions=True)
            done = {Outcome.PUBLISH, Outcome.IGNORED}
            processed = [f.uid for f, r in zip(fetched, results) if r in done]
            failed = [f.uid for f, r in zip(fetched, results) if r is Outcome.FAILED]
            if processed or failed:
                await self._call(ops.mark, client, self.w.marking, processed, failed)
            unmarked = {f.uid for f in fetched} - set(processed) - set(failed)
            for uid in batch:
                if uid not in unmarked:
                    pending.pop(uid, None)  # marked, or expunged meanwhile
            self._track(pending)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return found

    async def _wait(self, client: IMAPClient, idle: bool) -> None:
        """Until new mail may have arrived: IDLE where offered, else one poll interval."""
        if not idle:
            await asyncio.sleep(self.w.settings.imap_poll_s)
            return
        await self._call(client.idle)
        renew_at = time.monotonic() + self.w.settings.imap_idle_renew_s
        try:
            while self.lease.held and (left := renew_at - time.monotonic()) > 0:
                if await self._call(ops.idle_wait, client, min(IDLE_CHECK_S, left)):
                    return
        finally:
            if not self._stopping:
                await self._call(client.idle_done)

    async def _back_off(self) -> None:
        await asyncio.sleep(self._delay * random.uniform(0.5, 1.0))  # jitter: replicas drift
        self._delay = min(self.w.settings.imap_backoff_max_s, self._delay * 2)

    def _track(self, pending: ops.Meta) -> None:
        self._pending = len(pending)
        self._oldest = min((ops.arrived(m) for m in pending.values()), default=None)

    def _lag(self) -> float:
        oldest = self._oldest
        return max(0.0, (datetime.now(UTC) - oldest).total_seconds()) if oldest else 0.0

    def _log(self, **fields: Any) -> dict[str, Any]:
        return {"mailbox": self.mailbox.name, **fields}

    def interrupt(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None:
            with suppress(Exception):  # already closed is fine
                client.socket().shutdown(socket.SHUT_RDWR)

    async def close(self) -> None:
        await self.lease.release()
        self._track({})
        self._executor.shutdown(wait=False, cancel_futures=True)
