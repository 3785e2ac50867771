"""The SMTP email provider (aiosmtplib): one connection per message, STARTTLS when offered.

Headers are built only through `EmailMessage` with `policy.SMTP` and `headerregistry.Address`,
and every value is refused first if it holds CR, LF or NUL: Python 3.11.7 predates the fixes
that stop such values from folding into extra header lines.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from urllib.parse import unquote, urlsplit

import aiosmtplib

from ..domain.delivery import Outbound, SendResult

_UNSAFE = ("\r", "\n", "\0")


class UnsafeHeader(ValueError):
    """A header value that could end its line: never sent, never retried."""


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = None


def parse_smtp_url(url: str) -> SmtpTarget:
    """`smtp://[user:pass@]host[:port]` (STARTTLS when offered) or `smtps://...` (TLS at once)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("smtp_url must look like smtp://host:port or smtps://host:port")
    implicit_tls = parts.scheme == "smtps"
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or (465 if implicit_tls else 25),
        implicit_tls=implicit_tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _safe(field: str, value: str) -> str:
    if any(c in value for c in _UNSAFE):
        raise UnsafeHeader(f"{field} holds a line break or NUL")
    return value


def _address(field: str, name: str | None, addr: str) -> Address:
    try:
        return Address(display_name=_safe(field, name or ""), addr_spec=_safe(field, addr))
    except UnsafeHeader:
        raise
    except (ValueError, IndexError, TypeError) as exc:  # the stdlib parser's ways of refusing
        raise UnsafeHeader(f"{field} is not a valid address: {exc}") from exc


def build_message(
    message: Outbound, sender: str, *, reply_to: str | None = None, now: datetime | None = None
) -> EmailMessage:
    """The MIME message (text and HTML alternatives); raises UnsafeHeader, builds nothing risky.
    `reply_to`: the mailbox intake reads (default: `sender`), so answers come back in."""
    from_name, from_addr = parseaddr(_safe("from", sender))
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = _address("from", from_name, from_addr)
    # A customer's "reply" goes where Reply-To says, even when From is a no-reply address.
    msg["Reply-To"] = _address("reply_to", *parseaddr(_safe("reply_to", reply_to or sender)))
    msg["To"] = _address("to", message.to_name, message.to)
    msg["Subject"] = _safe("subject", message.subject)
    msg["Message-ID"] = _safe("message_id", message.message_id)
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    # RFC 3834 and Exchange's own header: keep out-of-office robots from answering us.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Casegate-Ref"] = _safe("case_ref", message.case_ref)
    # Threading: the customer's mail client files our answer under their own message.
    if message.in_reply_to:
        msg["In-Reply-To"] = _safe("in_reply_to", message.in_reply_to)
    if message.references:
        msg["References"] = " ".join(_safe("references", r) for r in message.references)
    msg.set_content(message.text)
    if message.html:
        msg.add_alternative(message.html, subtype="html")
    return msg


def classify(exc: Exception) -> SendResult:
    """4xx, timeouts and connection trouble may pass; 5xx will not."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        temporary = bool(codes) and all(400 <= c < 500 for c in codes)
        return SendResult.failed(f"recipient refused: {codes}", temporary=temporary)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        temporary = not 500 <= exc.code < 600
        return SendResult.failed(f"smtp {exc.code}: {exc.message}", temporary=temporary)
    # Connection refused or dropped, timeouts, a missing extension: the mail may still go
    # later (or after the operator fixes the setup), so it waits rather than being failed.
    return SendResult.failed(f"{type(exc).__name__}: {exc}", temporary=True)


class SmtpSender:
    name = "smtp"

    def __init__(
        self, url: str, sender: str, timeout_s: float, reply_to: str | None = None
    ) -> None:
        self._target = parse_smtp_url(url)
        self._sender = sender
        self._reply_to = reply_to
        self._timeout_s = timeout_s

    async def send(self, message: Outbound) -> SendResult:
        try:
            mime = build_message(message, self._sender, reply_to=self._reply_to)
        except UnsafeHeader as exc:
            return SendResult.failed(f"unsafe header: {exc}", temporary=False)
        t = self._target
        try:
            await aiosmtplib.send(
                mime,
                hostname=t.host,
                port=t.port,
                username=t.username,
                password=t.password,
                use_tls=t.implicit_tls,
                start_tls=False if t.implicit_tls else None,  # None: upgrade when offered
                timeout=self._timeout_s,
            )
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            return classify(exc)
        except (ValueError, UnicodeError) as exc:  # an address or header SMTP cannot carry
            return SendResult.failed(f"cannot encode message: {exc}", temporary=False)
        return SendResult.sent(message.message_id)
