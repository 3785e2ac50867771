"""One fetched email -> what intake does with it: a `MessageReceived` published with the
broker's confirm (its attachments already in the blob store), our own mail to skip, or an
unusable message to set aside with the reason. Nothing here touches IMAP: the watcher marks
the message by the outcome returned, and only once this returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from functools import partial

from prometheus_client import Counter
from pydantic import ValidationError

from casegate_shared.blobs import BlobStore, BlobTooLarge, one_chunk
from casegate_shared.bus import Bus
from casegate_shared.events import AttachmentRef, MessageReceived, derived_event_id, envelope

from ..domain.mail import dedupe_key, parse_mail, plan_attachments, to_message
from .imap_large import RemotePart

log = logging.getLogger(__name__)

ROUTING_KEY = "message.received.email"
EMAILS = Counter("casegate_intake_email_total", "Emails taken in, by outcome", ["outcome"])

NO_TEXT_NOTE = "(This email of {size} bytes has no text part small enough to show here.)"


class Outcome(StrEnum):
    PUBLISH = "publish"
    IGNORED = "ignored"  # our own mail: mark processed, publish nothing
    FAILED = "failed"  # unusable: mark failed, publish nothing


@dataclass(frozen=True, slots=True)
class Intake:
    outcome: Outcome
    reason: str
    message: MessageReceived | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    message_bytes: int
    attachment_bytes: int
    attachments_per_message: int


@dataclass(frozen=True, slots=True)
class Fetched:
    """A message as the watcher fetched it: whole, or (too large) its headers and text,
    with the parts left on the server in `remote` (streamed with `open_part`)."""

    uid: int
    raw: bytes
    size: int
    received_at: datetime
    partial: bool = False
    remote: tuple[RemotePart, ...] = ()


OpenPart = Callable[[int, RemotePart], AsyncIterator[bytes]]


@dataclass(frozen=True, slots=True)
class _Source:
    """An attachment to store: its description and where its bytes come from."""

    filename: str
    content_type: str
    size: int
    chunks: Callable[[], AsyncIterator[bytes]]
    inline: bool = False
    content_id: str | None = None


async def take_in(
    fetched: Fetched,
    *,
    mailbox: str,
    own_addresses: frozenset[str],
    blobs: BlobStore,
    limits: Limits,
    open_part: OpenPart | None = None,
) -> Intake:
    """Parse, decide, store attachments and build the event; never raises for a bad mail
    (a failure to read or store an attachment raises: the message is taken in again)."""
    try:
        mail = await asyncio.to_thread(parse_mail, fetched.raw, own_addresses)
    except Exception as exc:  # noqa: BLE001 - the parser's fallbacks failed: set it aside
        # The type only: an exception's text may quote the message.
        return Intake(Outcome.FAILED, f"unparseable ({type(exc).__name__})")
    if mail.verdict.ignored:
        return Intake(Outcome.IGNORED, mail.verdict.reason)
    sources = [
        _Source(p.filename, p.content_type, len(p.data), partial(one_chunk, p.data), p.inline,
                p.content_id)
        for p in mail.attachments
    ]
    if fetched.partial and open_part is not None:
        sources += [
            _Source(p.filename, p.content_type, p.decoded_size, partial(open_part, fetched.uid, p))
            for p in fetched.remote
        ]
        if not mail.full_body:
            note = NO_TEXT_NOTE.format(size=fetched.size)
            mail = replace(mail, body=note, full_body=note)
    attachments = await store_attachments(sources, blobs, limits)
    try:
        message = to_message(
            mail,
            dedupe_key=dedupe_key(mail.message_id, fetched.raw),
            mailbox=mailbox,
            received_at=fetched.received_at,
            attachments=attachments,
        )
    except ValidationError as exc:
        return Intake(Outcome.FAILED, f"no valid message: {exc.error_count()} errors"[:300])
    if mail.defects:
        log.info("email had MIME defects", extra={"mailbox": mailbox, "defects": mail.defects})
    return Intake(Outcome.PUBLISH, mail.verdict.reason, message)


async def deliver(
    fetched: Fetched,
    *,
    bus: Bus,
    mailbox: str,
    own_addresses: frozenset[str],
    blobs: BlobStore,
    limits: Limits,
    open_part: OpenPart | None = None,
) -> Outcome:
    """Take one email in and publish it; returns only after the broker confirmed (or when
    there was nothing to publish). Raises BusUnavailable/PublishError: leave it unmarked."""
    intake = await take_in(
        fetched,
        mailbox=mailbox,
        own_addresses=own_addresses,
        blobs=blobs,
        limits=limits,
        open_part=open_part,
    )
    fields = {"mailbox": mailbox, "uid": fetched.uid, "reason": intake.reason}
    if intake.message is not None:
        msg = intake.message
        # Ids derived from the dedupe key: a repeat is the same event, field for field.
        await bus.publish(
            envelope(
                msg,
                source="intake",
                correlation_id=derived_event_id("correlation", msg.dedupe_key),
                subject=msg.case_ref,
                event_id=derived_event_id(msg.dedupe_key),
                routing_key=ROUTING_KEY,
            )
        )
        EMAILS.labels(msg.kind.value).inc()
        log.info("email taken in", extra={**fields, "kind": msg.kind.value, "key": msg.dedupe_key})
    elif intake.outcome is Outcome.IGNORED:
        EMAILS.labels("ignored").inc()
        log.info("own email ignored", extra=fields)
    else:
        EMAILS.labels("failed").inc()
        log.warning("email set aside as unusable", extra=fields)
    return intake.outcome


async def store_attachments(
    sources: list[_Source], blobs: BlobStore, limits: Limits
) -> list[AttachmentRef]:
    """Store what fits the limits, streamed; note the rest with `omitted_reason` and no blob
    key. Content-addressed keys make a second take-in of the same mail store nothing new."""
    sizes = [s.size for s in sources]
    plan = plan_attachments(sizes, limits.attachment_bytes, limits.attachments_per_message)
    refs: list[AttachmentRef] = []
    for source, omitted in zip(sources, plan, strict=True):
        common = {"filename": source.filename, "inline": source.inline,
                  "content_id": source.content_id}
        if omitted is None:
            try:
                blob = await blobs.put(
                    source.chunks(), limits.attachment_bytes, source.content_type
                )
            except BlobTooLarge as exc:
                omitted = str(exc)
            else:
                refs.append(AttachmentRef(blob_key=blob.key, content_type=blob.content_type,
                                          size=blob.size, sha256=blob.sha256, **common))
                continue
        refs.append(AttachmentRef(content_type=source.content_type, size=source.size,
                                  omitted_reason=omitted, **common))
    return refs
