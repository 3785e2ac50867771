"""The Twilio SMS/MMS channel: signed webhooks -> `MessageReceived` or `DeliveryUpdated`.

Twilio signs the exact URL it called (our public URL, query included) plus the sorted form
fields, with no timestamp: the signature proves origin, not freshness, so the MessageSid is
the dedupe key (the only replay defence). MMS media are fetched from Twilio with the account
credentials, only from the configured API origin (the credentials never go elsewhere; aiohttp
drops them on a redirect to the media CDN), streamed into the blob store under a size limit.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from multidict import MultiDictProxy
from twilio.request_validator import SIGNATURE_SETTINGS_HEADER, RequestValidator
from twilio.request_validator import get_signature_algorithm
from yarl import URL

from casegate_shared.blobs import BlobStore, BlobTooLarge
from casegate_shared.events import (
    CASE_REF_PATTERN,
    AttachmentRef,
    Channel,
    DeliveryUpdated,
    MessageKind,
    MessageReceived,
    Sender,
    utcnow,
)

from ..domain.sms import e164, sms_keyword
from ..domain.text import body_problem, normalize_newlines
from . import Forbidden, Invalid

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
PROVIDER = "twilio"
MAX_MEDIA = 10  # Twilio delivers at most ten media per message
_SID = re.compile(r"[A-Z]{2}[0-9a-f]{32}")
_REF = re.compile(CASE_REF_PATTERN, re.IGNORECASE)
_STATUSES = frozenset(
    "accepted scheduled queued sending sent delivered undelivered failed read canceled "
    "receiving received partially_delivered".split()
)

Params = MultiDictProxy[str]


def dedupe_key(message_sid: str) -> str:
    return f"twilio:{message_sid}"


def verify(
    validator: RequestValidator,
    url: str,
    params: Params,
    signature: str | None,
    signature_settings: str | None = None,
) -> None:
    """Raise Forbidden unless `signature` is Twilio's over `url` (as Twilio called it) and
    the form fields. `signature_settings` names HMAC-SHA256 for webhooks signed with a key."""
    if not signature:
        raise Forbidden(f"{SIGNATURE_HEADER} is missing")
    algorithm = get_signature_algorithm(signature_settings)
    if not validator.validate(url, params, signature, algorithm):
        raise Forbidden(f"{SIGNATURE_HEADER} does not match the request")


def signature_settings(headers: dict[str, str] | MultiDictProxy[str]) -> str | None:
    return headers.get(SIGNATURE_SETTINGS_HEADER)


@dataclass(frozen=True, slots=True)
class Media:
    index: int
    url: str
    content_type: str


def media_of(params: Params) -> list[Media]:
    """The MMS media a webhook announces (NumMedia, MediaUrlN, MediaContentTypeN)."""
    try:
        count = int(params.get("NumMedia", "0") or 0)
    except ValueError:
        raise Invalid({"NumMedia": "must be a number"}) from None
    found = []
    for i in range(min(max(count, 0), MAX_MEDIA)):
        url = params.get(f"MediaUrl{i}")
        if url:
            ctype = params.get(f"MediaContentType{i}") or "application/octet-stream"
            found.append(Media(i, url, ctype))
    return found


def parse(
    params: Params, attachments: list[AttachmentRef], default_region: str | None = None
) -> MessageReceived:
    """An inbound SMS/MMS webhook -> the message; raises Invalid naming each bad field."""
    problems: dict[str, str] = {}
    sid = params.get("MessageSid", "")
    if not _SID.fullmatch(sid):
        problems["MessageSid"] = "is not a Twilio message SID"
    phone = e164(params.get("From"), default_region)
    if phone is None:
        problems["From"] = "is not a phone number"
    body = params.get("Body", "")
    if problem := body_problem(body):
        problems["Body"] = problem
    if problems:
        raise Invalid(problems)
    text = normalize_newlines(body).strip()
    named = _REF.search(text)
    keyword = sms_keyword(text)
    return MessageReceived(
        channel=Channel.SMS,
        dedupe_key=dedupe_key(sid),
        sender=Sender(phone=phone),
        subject="",  # SMS has none; case-store takes the body's first line
        body=text,
        received_at=utcnow(),
        case_ref=named.group(0).upper() if named else None,
        attachments=attachments,
        # STOP/START/HELP: case-store updates the number's opt-out and opens nothing.
        kind=MessageKind(keyword.value) if keyword else MessageKind.MESSAGE,
    )


def parse_status(params: Params, ref: str | None, notification_key: str | None) -> DeliveryUpdated:
    """A status callback -> the delivery update of the notification it reports on."""
    problems: dict[str, str] = {}
    sid = params.get("MessageSid", "")
    status = params.get("MessageStatus", "")
    if not _SID.fullmatch(sid):
        problems["MessageSid"] = "is not a Twilio message SID"
    if status not in _STATUSES:
        problems["MessageStatus"] = "is not a Twilio message status"
    if not ref or not re.fullmatch(CASE_REF_PATTERN, ref):
        problems["ref"] = "query parameter must name the case (CS-…)"
    if problems:
        raise Invalid(problems)
    return DeliveryUpdated(
        ref=str(ref),
        notification_key=notification_key or None,
        provider=PROVIDER,
        provider_message_id=sid,
        status=status,
        error_code=params.get("ErrorCode") or None,
    )


class MediaFetcher:
    """Fetches MMS media from Twilio into the blob store; one that cannot be kept is noted
    (`omitted_reason`) rather than failing the message: the text must still reach its case."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        blobs: BlobStore,
        *,
        api_base: str,
        authorization: str | None,
        max_bytes: int,
        timeout_s: float,
    ) -> None:
        self._session = session
        self._blobs = blobs
        self._origin = URL(api_base).origin()
        self._headers = {"Authorization": authorization} if authorization else {}
        self._max_bytes = max_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def fetch_all(self, media: list[Media]) -> list[AttachmentRef]:
        return list(await asyncio.gather(*(self.fetch(m) for m in media)))

    async def fetch(self, media: Media) -> AttachmentRef:
        name = f"media-{media.index}{mimetypes.guess_extension(media.content_type) or ''}"
        url = URL(media.url)
        if url.origin() != self._origin:
            return _omitted(name, media, "not served by the Twilio API")
        try:
            async with self._session.get(url, headers=self._headers, timeout=self._timeout) as resp:
                if resp.status != 200:
                    return _omitted(name, media, f"Twilio answered {resp.status}")
                declared = resp.content_length
                if declared is not None and declared > self._max_bytes:
                    return _omitted(name, media, f"over {self._max_bytes} bytes", declared)
                stored = await self._blobs.put(_chunks(resp), self._max_bytes, media.content_type)
        except BlobTooLarge:
            return _omitted(name, media, f"over {self._max_bytes} bytes")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("MMS media not fetched", extra={"error": repr(exc)[:200]})
            return _omitted(name, media, f"could not be fetched: {type(exc).__name__}")
        return AttachmentRef(
            blob_key=stored.key,
            filename=name,
            content_type=stored.content_type,
            size=stored.size,
            sha256=stored.sha256,
        )


async def _chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in resp.content.iter_chunked(64 * 1024):
        yield chunk


def _omitted(name: str, media: Media, reason: str, size: int = 0) -> AttachmentRef:
    return AttachmentRef(
        filename=name, content_type=media.content_type, size=size, omitted_reason=reason
    )
