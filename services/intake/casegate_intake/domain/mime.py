"""Defensive access to the stdlib's parsed email objects: every read that can raise on hostile
or broken input (header parsing, charset lookup, transfer decoding, re-serializing) goes
through here and falls back to something cruder instead of raising.

The stdlib's own parser with policy.default can still raise on some malformed headers while
parsing (3.11's header value parser has index bugs); `parse` then re-parses with compat32,
whose legacy header handling does not parse values at all.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import headerregistry, policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

_SURROGATE = re.compile("[\ud800-\udfff]")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_BOUNDARY_LINE = re.compile(r"^--([^\s]{1,70})[ \t]*$", re.M)
MAX_DEPTH = 25  # MIME nesting beyond this is an attack, not a customer
# What a label claims vs what mail clients mean by it (the WHATWG encoding aliases).
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252", "latin1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252",
    "ks_c_5601-1987": "cp949", "gb2312": "gb18030", "x-sjis": "shift_jis",
}


class _Registry(headerregistry.HeaderRegistry):
    """The stock header classes and parser, with two caches: the stock registry builds a new
    class on every header read, and the parser reads each part's Content-Type half a dozen
    times; together that was most of the time spent on a message. Parsed headers are
    immutable, so sharing one between reads (and messages) is safe; the cache is bounded."""

    _MAX_PARSED = 512
    _MAX_VALUE = 300  # the repeated ones are short (Content-Type); long ones are not kept

    def __init__(self) -> None:
        super().__init__()
        self._built: dict[str, type[headerregistry.BaseHeader]] = {}
        self._parsed: dict[tuple[str, str], headerregistry.BaseHeader] = {}

    def __call__(self, name: str, value: str) -> headerregistry.BaseHeader:
        if len(value) > self._MAX_VALUE:
            return super().__call__(name, value)
        key = (name, value)
        parsed = self._parsed.get(key)
        if parsed is None:
            if len(self._parsed) >= self._MAX_PARSED:
                self._parsed.clear()
            parsed = self._parsed[key] = super().__call__(name, value)
        return parsed

    def __getitem__(self, name: str) -> type[headerregistry.BaseHeader]:
        key = name.lower()
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = super().__getitem__(name)
        return built


POLICY = policy.default.clone(header_factory=_Registry())


def parse(raw: bytes) -> tuple[Message, bool]:
    """(message, whether the lenient legacy parser had to be used)."""
    try:
        return BytesParser(policy=POLICY).parsebytes(raw), False
    except Exception:  # noqa: BLE001 - stdlib header parser bugs; the legacy policy has none
        return BytesParser(policy=policy.compat32).parsebytes(raw), True


# --- text hygiene -------------------------------------------------------------------------


def valid_unicode(text: str) -> str:
    """Raw 8-bit bytes in headers come back as lone surrogates, which no JSON or database
    takes: read them as the UTF-8 they nearly always are, anything else as U+FFFD."""
    if not _SURROGATE.search(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def one_line(value: str, limit: int) -> str:
    """Control characters and line breaks become spaces: the value may end up in a header."""
    return " ".join(_UNPRINTABLE.sub(" ", valid_unicode(value)).split())[:limit]


def clean_text(text: str) -> str:
    """Text fit for the bus and PostgreSQL: valid Unicode, no NUL."""
    return valid_unicode(text).replace("\x00", "")


# --- headers ------------------------------------------------------------------------------


def header(msg: Message, name: str) -> str | None:
    """A header's decoded value; a header the parser cannot handle is decoded by hand."""
    if isinstance(msg, EmailMessage):
        try:
            value = msg.get(name)
            return None if value is None else valid_unicode(str(value))
        except Exception:  # noqa: BLE001 - header parser bugs on hostile input; fall back below
            pass
    raw = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
    return None if raw is None else valid_unicode(decode_raw(str(raw)))


def decode_raw(raw: str) -> str:
    """RFC 2047 encoded words decoded; broken ones are kept as they are."""
    try:
        return str(make_header(decode_header(raw)))
    except Exception:  # noqa: BLE001 - broken encoded words: keep the text
        return raw


def address_list(msg: Message, name: str) -> list[tuple[str, str]]:
    """(display name, address) pairs of an address header."""
    if isinstance(msg, EmailMessage):
        try:
            value = msg.get(name)
            if value is not None and hasattr(value, "addresses"):
                return [(a.display_name, a.addr_spec) for a in value.addresses]
        except Exception:  # noqa: BLE001 - fall back to the lenient parser below
            pass
    raw = header(msg, name)
    try:
        return getaddresses([raw]) if raw else []
    except Exception:  # noqa: BLE001 - nothing usable in it
        return []


def message_ids(value: str | None) -> list[str]:
    """The <…> ids in a Message-ID, In-Reply-To or References value, in order, once each."""
    if not value:
        return []
    found = _MESSAGE_ID.findall(value)
    if found:
        return list(dict.fromkeys(found))
    bare = one_line(value, 998)
    return [bare] if bare else []


def date(msg: Message) -> datetime | None:
    raw = header(msg, "date")
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # noqa: BLE001 - a mangled Content-Type reads as the RFC default
        return "text/plain"


def param(part: Message, name: str) -> str | None:
    try:
        value = part.get_param(name)
    except Exception:  # noqa: BLE001 - mangled parameters
        return None
    return value.lower() if isinstance(value, str) else None


def filename(part: Message) -> str | None:
    try:
        return part.get_filename()
    except Exception:  # noqa: BLE001 - malformed RFC 2231 parameters
        return None


def disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:  # noqa: BLE001 - a broken Content-Disposition counts as an attachment
        return "attachment"


# --- the tree -----------------------------------------------------------------------------


def payload(part: Message) -> object:
    """The undecoded payload: a str, or a list of parts."""
    try:
        return part.get_payload()
    except (LookupError, ValueError):  # it re-decodes 8-bit text with the claimed charset
        return part._payload  # noqa: SLF001 - the raw payload is all there is


def decoded(part: Message) -> bytes | None:
    """The payload with its transfer encoding undone (bad base64 decodes as far as it goes)."""
    try:
        data = part.get_payload(decode=True)
    except (LookupError, ValueError):
        return None
    return data if isinstance(data, bytes) else None


def walk_all(msg: Message, depth: int = 0) -> Iterator[Message]:
    yield msg
    inner = payload(msg)
    if isinstance(inner, list) and depth < MAX_DEPTH:
        for sub in inner:
            if isinstance(sub, Message):
                yield from walk_all(sub, depth + 1)


@dataclass(frozen=True, slots=True)
class Leaf:
    """A part that is not a container: `ctype` is read once (each read re-parses the header)."""

    part: Message
    ctype: str
    parent: str


def leaves(part: Message, parent: str = "", depth: int = 0) -> Iterator[Leaf]:
    """Every leaf in order; message/* parts are leaves (attachments), not descended into."""
    inner = payload(part)
    ctype = content_type(part)
    if ctype.startswith("multipart/") and isinstance(inner, str):
        part = _recover_boundary(part, inner)
        inner = payload(part)
    if ctype.startswith("multipart/") and isinstance(inner, list):
        if depth >= MAX_DEPTH:
            return
        for sub in inner:
            if isinstance(sub, Message):
                yield from leaves(sub, ctype, depth + 1)
        return
    yield Leaf(part, ctype, parent)


def _recover_boundary(part: Message, text: str) -> Message:
    """A multipart whose declared boundary never occurs: if the text shows another boundary,
    parse it with that one (a rewriting relay's mistake); else keep the part as it is."""
    found = _BOUNDARY_LINE.search(text)
    if not found:
        return part
    head = f'Content-Type: {content_type(part)}; boundary="{found.group(1)}"\n\n'
    reparsed, _ = parse((head + text).encode("utf-8", "surrogateescape"))
    return reparsed if isinstance(payload(reparsed), list) else part


def text_of(part: Message) -> str:
    """A text part as str, whatever charset it claims (unknown ones decode as best we can)."""
    data = decoded(part)
    if data is None:
        inner = payload(part)
        data = inner.encode("utf-8", "surrogateescape") if isinstance(inner, str) else b""
    try:
        charset = part.get_content_charset()
    except Exception:  # noqa: BLE001 - mangled Content-Type parameters
        charset = None
    text = valid_unicode(decode_bytes(data, charset))
    return text.replace("\r\n", "\n").replace("\r", "\n")


def decode_bytes(data: bytes, declared: str | None) -> str:
    """Strict with the declared charset, then UTF-8; lenient only when both fail."""
    label = (declared or "").strip().lower()
    charset = _CHARSET_ALIASES.get(label, label)
    for attempt in (charset, "utf-8"):
        if attempt:
            try:
                return data.decode(attempt)
            except (LookupError, ValueError):  # unknown or absurd label, or wrong bytes
                pass
    if charset:
        try:
            return data.decode(charset, errors="replace")
        except (LookupError, ValueError):
            pass
    return data.decode("cp1252", errors="replace")


def flatten(msg: Message) -> bytes:
    """A (nested) message as bytes again; the legacy generator, then raw text, if it must."""
    for chosen in (None, policy.compat32):
        try:
            return bytes(msg.as_bytes(policy=chosen) if chosen else msg.as_bytes())
        except Exception:  # noqa: BLE001 - re-serializing a hostile message can fail
            continue
    head = "".join(f"{k}: {v}\n" for k, v in msg.raw_items())
    body = payload(msg)
    return (head + "\n" + (body if isinstance(body, str) else "")).encode(
        "utf-8", "surrogateescape"
    )


def part_bytes(part: Message) -> bytes:
    """An attachment's bytes: decoded content, or the nested message / report re-serialized."""
    data = decoded(part)
    if data is not None:
        return data
    inner = payload(part)
    if isinstance(inner, list):  # message/rfc822, or a report's field blocks
        return b"\n".join(flatten(m) for m in inner if isinstance(m, Message))
    return str(inner or "").encode("utf-8", "surrogateescape")


def safe_filename(name: str | None, ctype: str, number: int) -> str:
    """A name without directories or control characters; invented when there is none."""
    cleaned = one_line(name or "", 500).replace("\\", "/").rsplit("/", 1)[-1].strip(". ")
    if cleaned:
        return cleaned[-200:]
    ext = ".eml" if ctype == "message/rfc822" else mimetypes.guess_extension(ctype)
    return f"attachment-{number}{ext or '.bin'}"
