"""Raw email bytes -> one normalized parsed mail, whatever state the bytes are in.

Every MIME defect, unknown charset or broken encoded header still yields a mail: `mime`
reads the stdlib's objects defensively, this module decides what the mail says (sender,
threading headers, new text, sanitized HTML, attachments, loop verdict). Attachments come
back as bytes; the adapter decides what is stored, using `plan_attachments` for the limits.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.parser import HeaderParser

from casegate_shared.events import (
    CASE_REF_PATTERN,
    AttachmentRef,
    Channel,
    EmailHeaders,
    MessageReceived,
    Sender,
)

from . import markup, mime, quotes
from .loops import SIGNAL_HEADERS, MailSignals, Verdict, classify

_CASE_TOKEN = re.compile(rf"\[({CASE_REF_PATTERN})\]", re.I)
_MAX_KEY_ID = 200
_BODY_TYPES = ("text/plain", "text/html")
NO_SUBJECT = "(no subject)"


@dataclass(frozen=True, slots=True)
class MailPart:
    """An attachment (or inline part) with its decoded bytes."""

    filename: str
    content_type: str
    data: bytes
    inline: bool = False
    content_id: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedMail:
    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    to: list[str]
    cc: list[str]
    sender_name: str | None
    sender_email: str | None
    subject: str
    date: datetime | None
    body: str  # new text only
    full_body: str
    html: str | None  # sanitized
    case_ref: str | None
    verdict: Verdict
    attachments: list[MailPart] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


def parse_mail(raw: bytes, own_addresses: frozenset[str] = frozenset()) -> ParsedMail:
    """Parse and normalize one message; `own_addresses` (lower-case) are ours to ignore."""
    msg, legacy = mime.parse(raw)
    name, address = _sender(msg)
    subject = mime.one_line(mime.header(msg, "subject") or "", 998) or NO_SUBJECT
    parts = list(mime.leaves(msg))
    plain, html, attachments, extra_text = _contents(parts)
    if plain is None:
        plain = markup.to_text(html) if html else ""
    full = mime.clean_text("\n\n".join([plain, *extra_text])).strip("\n").rstrip()
    token = _CASE_TOKEN.search(subject)
    defects = {type(d).__name__ for part in mime.walk_all(msg) for d in part.defects}
    if legacy:
        defects.add("HeaderParserFailure")
    return ParsedMail(
        message_id=_first_id(mime.header(msg, "message-id")),
        in_reply_to=mime.message_ids(mime.header(msg, "in-reply-to")),
        references=mime.message_ids(mime.header(msg, "references")),
        to=_addresses(msg, "to"),
        cc=_addresses(msg, "cc"),
        sender_name=name,
        sender_email=address,
        subject=subject,
        date=mime.date(msg),
        body=quotes.new_text(full).text,
        full_body=full,
        html=mime.clean_text(markup.sanitize(html)) if html else None,
        case_ref=token.group(1).upper() if token else None,
        verdict=classify(_signals(msg, parts, address, subject, full), own_addresses),
        attachments=attachments,
        defects=sorted(defects),
    )


def dedupe_key(message_id: str | None, raw: bytes) -> str:
    """The same message seen twice (a restart, two replicas, a folder restored under a new
    UIDVALIDITY) gets one key: its Message-ID when it has one, else a digest of the bytes
    fetched. Not its UID: a restored folder numbers the same mail anew, and two deliveries
    of one text differ in their Received headers, so bytes name the message. (A copy in each
    of two of our mailboxes is two messages then. A message over the size limit is fetched
    as headers and text, so changing CASEGATE_IMAP_MESSAGE_MAX_BYTES between two fetches of
    one such message gives it another key.)"""
    if message_id:
        if len(message_id) <= _MAX_KEY_ID:
            return f"email:mid:{message_id}"
        return "email:mid-sha256:" + hashlib.sha256(message_id.encode()).hexdigest()
    return "email:sha256:" + hashlib.sha256(raw).hexdigest()


def plan_attachments(sizes: list[int], per_attachment: int, per_message: int) -> list[str | None]:
    """For each attachment size in order: None (store it) or why it is omitted. The message
    still lands; only what would overrun a limit is left out."""
    used = 0
    plan: list[str | None] = []
    for size in sizes:
        if size > per_attachment:
            plan.append(f"attachment of {size} bytes is over the {per_attachment}-byte limit")
        elif used + size > per_message:
            plan.append(f"attachments of this message are over the {per_message}-byte limit")
        else:
            used += size
            plan.append(None)
    return plan


def to_message(
    mail: ParsedMail,
    *,
    dedupe_key: str,
    mailbox: str,
    received_at: datetime,
    attachments: list[AttachmentRef],
) -> MessageReceived:
    """The bus event for a parsed mail whose attachments are already stored."""
    return MessageReceived(
        channel=Channel.EMAIL,
        dedupe_key=dedupe_key,
        sender=Sender(name=mail.sender_name, email=mail.sender_email),
        subject=mail.subject,
        body=mail.body,
        full_body=mail.full_body,
        html=mail.html,
        received_at=received_at,
        case_ref=mail.case_ref,
        kind=mail.verdict.kind,
        bounce=mail.verdict.bounce,
        email=EmailHeaders(
            message_id=mail.message_id,
            in_reply_to=mail.in_reply_to,
            references=mail.references,
            to=mail.to,
            cc=mail.cc,
            mailbox=mailbox,
        ),
        attachments=attachments,
    )


# --- headers ----------------------------------------------------------------------------


def _first_id(value: str | None) -> str | None:
    ids = mime.message_ids(value)
    return ids[0] if ids else None


def _addresses(msg: Message, name: str) -> list[str]:
    found = [mime.one_line(addr, 320) for _, addr in mime.address_list(msg, name)]
    return [addr for addr in found if "@" in addr]


def _sender(msg: Message) -> tuple[str | None, str | None]:
    for name in ("from", "sender", "reply-to"):
        for display, addr in mime.address_list(msg, name):
            addr = mime.one_line(addr, 320)
            if "@" in addr or addr.lower() == "mailer-daemon":
                return mime.one_line(display, 200) or None, addr
    return None, None


# --- body and attachments -----------------------------------------------------------------


def _is_body(part: Message, ctype: str) -> bool:
    # A multipart leaf has a broken boundary: its raw text is the best body there is.
    if ctype not in _BODY_TYPES and not ctype.startswith("multipart/"):
        return False
    return mime.disposition(part) != "attachment" and not mime.filename(part)


def _contents(
    leaves: list[mime.Leaf],
) -> tuple[str | None, str | None, list[MailPart], list[str]]:
    """(plain text, raw HTML, attachments, further inline text parts)."""
    plain: str | None = None
    html: str | None = None
    extra: list[str] = []
    attachments: list[MailPart] = []
    for leaf in leaves:
        part, ctype, parent = leaf.part, leaf.ctype, leaf.parent
        if _is_body(part, ctype):
            if ctype == "text/html":
                if html is None:
                    html = mime.text_of(part)
                    continue
            elif plain is None:
                plain = mime.text_of(part)
                continue
            elif parent != "multipart/alternative":  # Apple Mail: text, image, more text
                extra.append(mime.text_of(part))
                continue
        attachments.append(_attachment(part, ctype, len(attachments) + 1))
    return plain, html, attachments, [t for t in extra if t.strip()]


def _attachment(part: Message, ctype: str, number: int) -> MailPart:
    content_id = _first_id(mime.header(part, "content-id"))
    disposition = mime.disposition(part)
    name = mime.filename(part)
    inner = mime.payload(part)
    if not name and ctype == "message/rfc822" and isinstance(inner, list) and inner:
        name = f"{mime.one_line(mime.header(inner[0], 'subject') or 'message', 150)}.eml"
    return MailPart(
        filename=mime.safe_filename(name, ctype, number),
        content_type=ctype,
        data=mime.part_bytes(part),
        inline=disposition == "inline" or (disposition is None and content_id is not None),
        content_id=content_id,
    )


# --- what the loop rules look at -----------------------------------------------------------


def _signals(
    msg: Message, leaves: list[mime.Leaf], sender: str | None, subject: str, text: str
) -> MailSignals:
    # Raw values are enough for these tokens, and far cheaper than the header registry.
    headers: dict[str, tuple[str, ...]] = {}
    for name, value in msg.raw_items():
        key = name.lower()
        if key in SIGNAL_HEADERS:
            headers[key] = (*headers.get(key, ()), mime.one_line(str(value), 2000))
    status: list[dict[str, str]] = []
    returned: dict[str, str] = {}
    for leaf in leaves:
        if leaf.ctype == "message/delivery-status" and not status:
            status = _dsn_blocks(leaf.part)
        elif leaf.ctype in ("message/rfc822", "text/rfc822-headers") and not returned:
            returned = _returned_headers(leaf.part)
    return MailSignals(
        headers=headers,
        sender=sender,
        subject=subject,
        content_type=mime.content_type(msg),
        report_type=mime.param(msg, "report-type"),
        delivery_status=tuple(status),
        returned_headers=returned,
        text=text[:20_000],
    )


def _fields(msg: Message, limit: int) -> dict[str, str]:
    return {k.lower(): mime.one_line(mime.decode_raw(str(v)), limit) for k, v in msg.raw_items()}


def _dsn_blocks(part: Message) -> list[dict[str, str]]:
    """The field blocks of a message/delivery-status part (RFC 3464)."""
    inner = mime.payload(part)
    if isinstance(inner, str):  # not parsed into blocks: do it from the text
        inner = [HeaderParser().parsestr(b) for b in re.split(r"\n\s*\n", inner)]
    if not isinstance(inner, list):
        return []
    return [_fields(block, 1000) for block in inner if isinstance(block, Message)]


def _returned_headers(part: Message) -> dict[str, str]:
    """The headers of the message a report returns (whole, or headers only)."""
    inner = mime.payload(part)
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        return _fields(inner[0], 998)
    return _fields(HeaderParser().parsestr(mime.text_of(part)), 998)
