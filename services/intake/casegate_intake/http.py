"""Intake's HTTP views: the web form page and its endpoint.

A submission goes verify -> adapter -> publish -> answer, and the customer hears 202 only
after the broker confirmed the message; if it cannot, 503 with Retry-After, so nothing that
was acknowledged can be lost. Every refusal is logged at info with its reason, never the body.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field

from aio_pika.exceptions import PublishError
from aiohttp import web
from prometheus_client import Counter

from casegate_shared.bus import Bus, BusUnavailable
from casegate_shared.events import derived_event_id, envelope
from casegate_shared.observability import correlated

from . import pages
from .adapters import Forbidden, Invalid, webform
from .settings import Settings

log = logging.getLogger(__name__)

BUS = web.AppKey("bus", Bus)
SETTINGS = web.AppKey("settings", Settings)

WEBFORM_ROUTING_KEY = "message.received.webform"
JSON_TYPE = "application/json"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
RETRY_AFTER_S = 5

WEBFORM_SUBMISSIONS = Counter(
    "casegate_intake_webform_total", "Web form submissions by outcome", ["outcome"]
)


@dataclass(eq=False)
class Refused(Exception):
    """A submission we answer with a 4xx/5xx; `error` is the machine-readable kind."""

    status: int
    error: str
    reason: str
    fields: dict[str, str] = field(default_factory=dict)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The raw body (signatures cover raw bytes), refused past `max_bytes` without reading on."""
    if request.content_length is not None and request.content_length > max_bytes:
        size = request.content_length
        raise Refused(413, "too_large", f"body of {size} bytes exceeds {max_bytes}")
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > max_bytes:
            raise Refused(413, "too_large", f"body exceeds {max_bytes} bytes")
    return bytes(body)


async def read_fields(request: web.Request, max_bytes: int) -> dict[str, object]:
    """The submitted fields of a JSON object or an HTML form (first value of each name)."""
    ctype = request.content_type
    if ctype != JSON_TYPE and ctype not in FORM_TYPES:
        raise Refused(415, "unsupported_media_type", f"content type {ctype} is not accepted")
    # Refuse a declared oversize before reading a byte; client_max_size bounds the rest.
    if request.content_length is not None and request.content_length > max_bytes:
        size = request.content_length
        raise Refused(413, "too_large", f"body of {size} bytes exceeds {max_bytes}")
    try:
        if ctype == JSON_TYPE:
            return _json_object(await request.read(), request.charset)
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise Refused(413, "too_large", f"body exceeds {max_bytes} bytes") from None
    except web.HTTPBadRequest as exc:
        raise Refused(400, "malformed", exc.text or "bad form") from None
    except (ValueError, LookupError) as exc:  # bad boundary, charset or encoding
        raise Refused(400, "malformed", f"form could not be decoded: {exc}"[:200]) from None
    fields: dict[str, object] = {}
    not_text: dict[str, str] = {}
    for name, value in form.items():
        if isinstance(value, web.FileField):
            value.file.close()
            not_text[name] = "files are not accepted here"
        elif not isinstance(value, str):
            not_text[name] = "must be text"
        else:
            fields.setdefault(name, value)
    if not_text:
        raise Invalid(not_text)
    return fields


def _json_object(body: bytes, charset: str | None) -> dict[str, object]:
    try:
        doc = json.loads(body.decode(charset or "utf-8"))
    except (ValueError, LookupError, RecursionError) as exc:  # includes UnicodeDecodeError
        raise Refused(400, "malformed", f"body is not valid JSON: {exc}"[:200]) from None
    if not isinstance(doc, dict):
        kind = type(doc).__name__
        raise Refused(400, "not_an_object", f"JSON body must be an object, not {kind}")
    return doc


def _from_browser(request: web.Request) -> bool:
    return request.content_type in FORM_TYPES and "text/html" in request.headers.get("Accept", "")


def _html(text: str, status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={**headers, **pages.SECURITY_HEADERS},
    )


def _refuse(refused: Refused, browser: bool, cid: str) -> web.Response:
    """Count, log (4xx at info: reason and field names, never values) and answer a refusal."""
    WEBFORM_SUBMISSIONS.labels(refused.error).inc()
    if refused.status < 500:
        reason = {"status": refused.status, "reason": refused.reason}
        log.info("webform refused", extra={**reason, "fields": sorted(refused.fields)})
    headers = {"X-Correlation-Id": cid}
    if refused.status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if browser:
        return _html(pages.refusal_page(refused.reason, refused.fields), refused.status, headers)
    doc: dict[str, object] = {"error": refused.error}
    if refused.fields:
        doc["fields"] = refused.fields
    else:
        doc["reason"] = refused.reason
    response = web.json_response(doc, status=refused.status, headers=headers)
    if refused.status == 413:
        response.force_close()  # the rest of the body is not worth a kept-alive connection
    return response


async def submit_webform(request: web.Request) -> web.Response:
    """POST /v1/webform: JSON, urlencoded or multipart fields -> 202 once the bus confirmed."""
    cid = str(uuid.uuid4())
    browser = _from_browser(request)
    with correlated(cid):
        try:
            fields = await read_fields(request, request.app[SETTINGS].webform_max_bytes)
            webform.verify(fields)
            message = webform.parse(fields)
        except Refused as refused:
            return _refuse(refused, browser, cid)
        except Forbidden as exc:
            return _refuse(Refused(403, "forbidden", str(exc)), browser, cid)
        except Invalid as exc:
            return _refuse(Refused(422, "invalid", f"invalid: {exc}", exc.fields), browser, cid)

        ref = str(message.case_ref or message.new_case_ref)
        event = envelope(
            message,
            source="intake",
            correlation_id=cid,
            subject=ref,
            event_id=derived_event_id(message.dedupe_key),
            routing_key=WEBFORM_ROUTING_KEY,
        )
        try:
            await request.app[BUS].publish(event)
        except BusUnavailable as exc:
            log.warning("webform not confirmed by the broker", extra={"error": str(exc)})
            return _refuse(Refused(503, "unavailable", "message bus unavailable"), browser, cid)
        except PublishError as exc:  # confirmed but unroutable: nobody would ever read it
            log.error("webform unroutable: nothing is bound", extra={"error": repr(exc)})
            return _refuse(Refused(503, "unavailable", "message not routable"), browser, cid)
        WEBFORM_SUBMISSIONS.labels("accepted").inc()
        log.info("webform accepted", extra={"ref": ref, "dedupe_key": message.dedupe_key})
        headers = {"X-Correlation-Id": cid}
        if browser:
            return _html(pages.thank_you_page(ref), 202, headers)
        doc = {"ref": ref, "status": "received", "correlation_id": cid}
        return web.json_response(doc, status=202, headers=headers)


async def webform_page(_: web.Request) -> web.Response:
    """GET /webform: the plain HTML form, posting urlencoded to /v1/webform."""
    return _html(pages.WEBFORM_PAGE, 200, {})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/webform", webform_page)
    app.router.add_post("/v1/webform", submit_webform)
