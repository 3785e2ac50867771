"""An email too large to hold in memory, taken in piecemeal over IMAP: its headers and its
text (the first plain or HTML text part small enough) are fetched and parsed; every other
part is described from BODYSTRUCTURE and later streamed straight into the blob store, a
chunk at a time (partial FETCH, transfer encoding undone on the fly).

Parsing a message costs several times its size in memory, so a large one is never fetched
whole: a 50 MB attachment passes through in 1 MB pieces.
"""

from __future__ import annotations

import binascii
import imaplib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient

from ..domain.mime import decode_raw, one_line, safe_filename

TEXT_MAX_BYTES = 1024 * 1024
CHUNK_BYTES = 1024 * 1024
_TEXT_TYPES = ((b"TEXT", b"PLAIN"), (b"TEXT", b"HTML"))
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


@dataclass(frozen=True, slots=True)
class RemotePart:
    """A part left on the server: where it is, what it is, how it is encoded."""

    section: str
    filename: str
    content_type: str
    encoding: str
    size: int  # as stored on the server, transfer-encoded

    @property
    def decoded_size(self) -> int:
        return self.size * 3 // 4 if self.encoding == "base64" else self.size


@dataclass(frozen=True, slots=True)
class LargeMail:
    raw: bytes  # the headers, and the text part when one was small enough
    parts: tuple[RemotePart, ...]


Call = Callable[..., Awaitable[Any]]  # runs a blocking IMAP call in the mailbox's thread


def fetch_large(client: IMAPClient, uid: int) -> LargeMail | None:
    """Headers, structure and text of one large message; None if it is gone."""
    found = client.fetch([uid], ["BODY.PEEK[HEADER]", "BODYSTRUCTURE"]).get(uid)
    if not found or b"BODY[HEADER]" not in found:
        return None
    header: bytes = found[b"BODY[HEADER]"]
    leaves = list(_leaves(found.get(b"BODYSTRUCTURE")))
    bodies = [(s, p) for s, p in leaves if _is_text_body(p)]
    text = next(((s, p) for s, p in bodies if _size(p) <= TEXT_MAX_BYTES), None)
    # With a text taken in, the other text bodies are its alternatives, not attachments.
    skip = {s for s, _ in bodies} if text else set()
    remote = tuple(
        _remote(section, part, number) for number, (section, part) in enumerate(leaves, 1)
        if section not in skip
    )
    if text is None:
        return LargeMail(header, remote)
    section = text[0]
    parts = client.fetch([uid], [f"BODY.PEEK[{section}.MIME]", f"BODY.PEEK[{section}]"]).get(uid)
    mime = (parts or {}).get(f"BODY[{section}.MIME]".encode())
    body = (parts or {}).get(f"BODY[{section}]".encode())
    if mime is None or body is None:
        return LargeMail(header, remote)
    return LargeMail(_without_content_headers(header) + mime + body, remote)


def _leaves(body: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(IMAP section number, leaf structure) of every non-multipart part, in order."""
    if body is None:
        return
    if getattr(body, "is_multipart", False):
        for number, sub in enumerate(body[0], 1):
            yield from _leaves(sub, f"{prefix}.{number}" if prefix else str(number))
        return
    yield prefix or "1", body


def _is_text_body(part: Any) -> bool:
    kind = (_text(part[0]).upper().encode(), _text(part[1]).upper().encode())
    return kind in _TEXT_TYPES and _disposition(part) != b"attachment"


def _size(part: Any) -> int:
    return int(part[6]) if len(part) > 6 and isinstance(part[6], int) else 0


def _params(value: Any) -> dict[str, str]:
    if not isinstance(value, tuple):
        return {}
    pairs = zip(value[0::2], value[1::2], strict=False)
    return {_text(k).lower(): _text(v) for k, v in pairs}


def _disposition(part: Any) -> bytes | None:
    """The disposition's position varies with the part's type; it is the first (type,
    params) pair after the size whose type is a known disposition."""
    for item in part[7:]:
        if isinstance(item, tuple) and item and isinstance(item[0], bytes):
            if item[0].lower() in (b"attachment", b"inline"):
                return bytes(item[0].lower())
    return None


def _disposition_params(part: Any) -> dict[str, str]:
    for item in part[7:]:
        if isinstance(item, tuple) and len(item) > 1 and isinstance(item[0], bytes):
            if item[0].lower() in (b"attachment", b"inline"):
                return _params(item[1])
    return {}


def _remote(section: str, part: Any, number: int) -> RemotePart:
    ctype = f"{_text(part[0])}/{_text(part[1])}".lower()
    name = _disposition_params(part).get("filename") or _params(part[2]).get("name")
    filename = safe_filename(decode_raw(name) if name else None, ctype, number)
    encoding = _text(part[5]).lower() if len(part) > 5 else ""
    return RemotePart(section, filename, one_line(ctype, 200), encoding, _size(part))


async def stream_part(call: Call, client: IMAPClient, uid: int, part: RemotePart
                      ) -> AsyncIterator[bytes]:
    """The part's decoded bytes, fetched CHUNK_BYTES at a time."""
    decode = _decoder(part.encoding)
    offset = 0
    while True:
        chunk: bytes = await call(_fetch_range, client, uid, part.section, offset)
        offset += len(chunk)
        last = len(chunk) < CHUNK_BYTES
        if data := decode(chunk, last):
            yield data
        if last:
            return


def _fetch_range(client: IMAPClient, uid: int, section: str, offset: int) -> bytes:
    found = client.fetch([uid], [f"BODY.PEEK[{section}]<{offset}.{CHUNK_BYTES}>"]).get(uid, {})
    data = found.get(f"BODY[{section}]<{offset}>".encode())
    if not isinstance(data, bytes):  # expunged meanwhile: the next scan will not see it
        raise imaplib.IMAP4.abort(f"part {section} of UID {uid} is gone")
    return data


def _decoder(encoding: str) -> Callable[[bytes, bool], bytes]:
    """Undo a transfer encoding across chunk boundaries (what does not end a unit waits)."""
    carry = b""

    def base64(chunk: bytes, last: bool) -> bytes:
        nonlocal carry
        data = carry + _NOT_BASE64.sub(b"", chunk)  # padding too: it is put back at the end
        if last:
            data = data[: len(data) - 1] if len(data) % 4 == 1 else data  # a lone char: damage
            data += b"=" * (-len(data) % 4)
        cut = len(data) - len(data) % 4
        carry = data[cut:]
        try:
            return binascii.a2b_base64(data[:cut])
        except binascii.Error:  # damaged: keep what decodes, as the parser would
            return b""

    def quoted_printable(chunk: bytes, last: bool) -> bytes:
        nonlocal carry
        data = carry + chunk
        cut = len(data) if last else data.rfind(b"\n") + 1
        carry = data[cut:]
        return binascii.a2b_qp(data[:cut])

    if encoding == "base64":
        return base64
    if encoding == "quoted-printable":
        return quoted_printable
    return lambda chunk, last: chunk


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _without_content_headers(header: bytes) -> bytes:
    """The top header block minus its Content-* fields (the text part brings its own)."""
    kept: list[bytes] = []
    dropping = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.lower().startswith(b"content-")
        if not dropping and line.strip():
            kept.append(line)
    return b"".join(kept)
