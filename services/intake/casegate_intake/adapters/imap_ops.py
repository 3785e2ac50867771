"""The blocking IMAP operations of one watcher session; each runs whole in the mailbox's
own thread, so the event loop waits for one hop per step, not per IMAP command.
"""

from __future__ import annotations

import imaplib
import ipaddress
import ssl
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from imapclient import DELETED, IMAPClient

from .imap_config import Mailbox, Marking
from .imap_large import fetch_large
from .imap_message import Fetched

SIZE = b"RFC822.SIZE"
DATE = b"INTERNALDATE"
META_CHUNK = 1000  # UIDs per metadata FETCH
FETCH_BYTES = 8 * 1024 * 1024  # bodies of one batch in memory at most (parsing costs ~5x)

Meta = dict[int, dict[bytes, Any]]


class InsecureMailbox(Exception):
    """The password would cross the network in clear text."""


def connect(mailbox: Mailbox, timeout: float) -> IMAPClient:
    """Connected and logged in. imap:// upgrades with STARTTLS; a remote server that does not
    offer it is refused (the password would travel in clear) unless ?starttls=off says so."""
    client = IMAPClient(mailbox.host, port=mailbox.port, ssl=mailbox.tls, timeout=timeout)
    try:
        client.normalise_times = False  # keep INTERNALDATE's zone: lag is computed from it
        if not mailbox.tls and mailbox.starttls:
            if client.has_capability("STARTTLS"):
                client.starttls(ssl.create_default_context())
            elif not _is_loopback(mailbox.host):
                raise InsecureMailbox(
                    f"{mailbox.host} offers no STARTTLS: use imaps:// or add ?starttls=off"
                )
        client.login(mailbox.user, mailbox.password)
    except BaseException:
        client.shutdown()
        raise
    return client


def open_folder(client: IMAPClient, mailbox: Mailbox, marking: Marking) -> bool:
    """Select the watched folder (a missing one fails the session), create the target
    folders; whether IDLE is offered."""
    client.select_folder(mailbox.folder)
    for folder in marking.folders():
        if not client.folder_exists(folder):
            client.create_folder(folder)
    return bool(client.has_capability("IDLE"))


def pending(client: IMAPClient, mailbox: Mailbox, marking: Marking) -> tuple[int, Meta]:
    """The folder's UIDVALIDITY now, and every message not yet processed (size and arrival
    time), oldest UID first. The folder is selected afresh each time: one deleted and created
    again (restored from a backup) goes on looking empty through the old selection, and its
    new UIDVALIDITY only shows in a new SELECT."""
    uidvalidity = int(client.select_folder(mailbox.folder)[b"UIDVALIDITY"])
    uids = sorted(client.search(marking.pending_criteria()))
    meta: Meta = {}
    for start in range(0, len(uids), META_CHUNK):
        meta.update(client.fetch(uids[start : start + META_CHUNK], [SIZE, DATE]))
    return uidvalidity, {uid: meta[uid] for uid in uids if uid in meta and SIZE in meta[uid]}


def fetch(client: IMAPClient, uids: list[int], *, meta: Meta, max_bytes: int) -> list[Fetched]:
    """The messages of one batch; one over `max_bytes` comes in parts (imap_large). A UID
    missing from the answer was expunged meanwhile."""
    whole = [u for u in uids if meta[u][SIZE] <= max_bytes]
    found = client.fetch(whole, ["BODY.PEEK[]"]) if whole else {}
    taken: dict[int, Fetched] = {
        u: Fetched(u, found[u][b"BODY[]"], int(meta[u][SIZE]), arrived(meta[u]))
        for u in whole
        if b"BODY[]" in found.get(u, {})
    }
    for u in uids:
        if meta[u][SIZE] > max_bytes and (large := fetch_large(client, u)) is not None:
            taken[u] = Fetched(u, large.raw, int(meta[u][SIZE]), arrived(meta[u]),
                               partial=True, remote=large.parts)
    return [taken[u] for u in uids if u in taken]


def mark(client: IMAPClient, marking: Marking, processed: list[int], failed: list[int]) -> None:
    if processed:
        if marking.processed_folder:
            move(client, processed, marking.processed_folder)
        else:
            client.add_flags(processed, [marking.processed_flag], silent=True)
    if failed:
        if marking.failed_folder:
            move(client, failed, marking.failed_folder)
        else:
            client.add_flags(failed, [marking.failed_flag], silent=True)


def move(client: IMAPClient, uids: list[int], folder: str) -> None:
    """MOVE where the server offers it, else what RFC 6851 gives as its equivalent: COPY,
    \\Deleted (which already keeps the messages out of the pending search), UID EXPUNGE of
    just these messages. Without UIDPLUS they stay \\Deleted until the folder's next expunge:
    a plain EXPUNGE would also erase what other clients marked deleted."""
    if client.has_capability("MOVE"):
        client.move(uids, folder)
        return
    client.copy(uids, folder)
    client.add_flags(uids, [DELETED], silent=True)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)


def idle_wait(client: IMAPClient, timeout: float) -> bool:
    """Wait in IDLE for up to `timeout`; True when this IDLE round should end: new mail, or
    a line that may be dead. imapclient reads end-of-file as "nothing yet", so an empty
    answer long before the timeout is taken as a possible hang-up: ending the round sends
    DONE, which fails on a dead line and so starts a reconnect instead of a busy loop."""
    started = time.monotonic()
    responses = client.idle_check(timeout)
    if any(r[:1] == (b"BYE",) for r in responses):
        raise imaplib.IMAP4.abort("the server ended the session")
    if any(len(r) > 1 and r[1] == b"EXISTS" for r in responses):
        return True
    if any(r[:1] == (b"NO",) for r in responses):
        return True  # e.g. Dovecot's answer when the folder was deleted under us: look again
    return not responses and time.monotonic() - started < timeout * 0.9


def logout(client: IMAPClient) -> None:
    with suppress(Exception):  # the connection may already be gone
        client.logout()
    with suppress(Exception):
        client.shutdown()


def batches(meta: Meta, count: int) -> Iterator[list[int]]:
    """UIDs in groups of at most `count` messages and about FETCH_BYTES."""
    batch: list[int] = []
    size = 0
    for uid, item in list(meta.items()):
        nbytes = int(item.get(SIZE, 0))
        if batch and (len(batch) >= count or size + nbytes > FETCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(uid)
        size += nbytes
    if batch:
        yield batch


def arrived(item: dict[bytes, Any]) -> datetime:
    value = item.get(DATE)
    if not isinstance(value, datetime):
        return datetime.now(UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
