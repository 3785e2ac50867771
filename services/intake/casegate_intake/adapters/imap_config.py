"""What the mailbox watcher needs to know, read from settings: the mailboxes (parsed from
their URLs), how a processed or unusable message is marked (and so which are still to do),
and whose mail is our own.

Marking is the watcher's memory: a message without the processed mark (or still in the
watched folder, when processed mail is moved) is taken in again after any restart or
outage, however long, so nothing that arrived meanwhile is missed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from ..settings import Settings

DEFAULT_PORTS = {"imap": 143, "imaps": 993}
# RFC 3501 atom: no specials, spaces or controls ("\" only to start a system flag).
_FLAG = re.compile(r"^\\?[^\\(){ %*\"\]\x00-\x1f\x7f]+$")
_NEGATED_SYSTEM_FLAGS = {"\\seen": "UNSEEN", "\\flagged": "UNFLAGGED", "\\answered": "UNANSWERED"}


@dataclass(frozen=True)
class Mailbox:
    """One watched folder. `name` (no password) labels metrics, logs, leases and dedupe keys."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    folder: str = "INBOX"
    tls: bool = False
    starttls: bool = True

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.folder}"

    @property
    def address(self) -> str | None:
        return self.user.lower() if "@" in self.user else None


def parse_mailbox(url: str) -> Mailbox:
    """`imap[s]://user:password@host[:port][/FOLDER][?starttls=off]`; raises ValueError."""
    parts = urlsplit(url.strip())
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"mailbox URL must start with imap:// or imaps://, not {parts.scheme!r}")
    if not parts.hostname or parts.username is None or parts.password is None:
        raise ValueError(f"mailbox URL for {parts.hostname!r} needs user, password and host")
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    if any(c in folder for c in "\r\n\0"):
        raise ValueError("mailbox folder must be one line")
    starttls = parse_qs(parts.query).get("starttls", ["on"])[-1].lower() not in ("off", "no", "0")
    return Mailbox(
        host=parts.hostname,
        port=parts.port or DEFAULT_PORTS[parts.scheme],
        user=unquote(parts.username),
        password=unquote(parts.password),
        folder=folder,
        tls=parts.scheme == "imaps",
        starttls=starttls,
    )


def parse_mailboxes(value: str) -> list[Mailbox]:
    mailboxes = [parse_mailbox(url) for url in value.split(",") if url.strip()]
    names = [m.name for m in mailboxes]
    if len(set(names)) != len(names):
        raise ValueError("a mailbox is configured twice")
    return mailboxes


@dataclass(frozen=True)
class Marking:
    """How processed and unusable messages are marked, and so what is still to do."""

    processed_flag: str
    processed_folder: str | None
    failed_flag: str
    failed_folder: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Marking:
        for flag in (settings.imap_processed_flag, settings.imap_failed_flag):
            if not _FLAG.match(flag):
                raise ValueError(f"{flag!r} is not a valid IMAP flag or keyword")
        for folder in (settings.imap_processed_folder, settings.imap_failed_folder):
            if folder is not None and (not folder or any(c in folder for c in "\r\n\0")):
                raise ValueError("IMAP folder names must be one non-empty line")
        return cls(
            settings.imap_processed_flag,
            settings.imap_processed_folder,
            settings.imap_failed_flag,
            settings.imap_failed_folder,
        )

    def pending_criteria(self) -> list[str]:
        """IMAP SEARCH for every message not yet processed nor failed: never "since T"."""
        criteria = ["NOT", "DELETED"]
        if self.processed_folder is None:
            criteria += _without(self.processed_flag)
        if self.failed_folder is None:
            criteria += _without(self.failed_flag)
        return criteria

    def folders(self) -> list[str]:
        return [f for f in (self.processed_folder, self.failed_folder) if f]


def _without(flag: str) -> list[str]:
    negated = _NEGATED_SYSTEM_FLAGS.get(flag.lower())
    if negated:
        return [negated]
    if flag.startswith("\\"):
        return ["NOT", flag.upper().lstrip("\\")]
    return ["NOT", "KEYWORD", flag]


def own_addresses(settings: Settings, mailboxes: Sequence[Mailbox]) -> frozenset[str]:
    configured = [a.strip().lower() for a in settings.imap_own_addresses.split(",") if a.strip()]
    if configured:
        return frozenset(configured)
    return frozenset(m.address for m in mailboxes if m.address)
