"""`POST /v1/threading/explain`: an agent pastes a raw email (message/rfc822) and learns which
case it would join and why, without anything changing. intake parses it exactly as a mailbox
message would be parsed (loop and bounce rules included) and asks case-store, whose
threading decides; the agent's bearer token goes along and case-store checks it."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

import aiohttp
from aiohttp import web

from .domain.mail import parse_mail, to_message
from .http import SETTINGS, Refused, read_body
from .tracking import CASE_STORE

log = logging.getLogger(__name__)

RAW_TYPES = ("message/rfc822", "text/plain", "application/octet-stream")
MAX_BYTES = 1024 * 1024


async def explain(request: web.Request) -> web.Response:
    if request.content_type not in RAW_TYPES:
        return _error(415, "unsupported_media_type", "send the raw message as message/rfc822")
    if "Authorization" not in request.headers:
        return _error(401, "unauthenticated", "a bearer token is required")
    try:
        raw = await read_body(request, MAX_BYTES)
    except Refused:
        return _error(413, "too_large", f"messages are explained up to {MAX_BYTES} bytes")
    own = frozenset(a.strip().lower() for a in
                    request.app[SETTINGS].imap_own_addresses.split(",") if a.strip())
    # Off the event loop: a large HTML mail takes a good part of a second to parse.
    mail = await asyncio.to_thread(parse_mail, raw, own)
    message = to_message(mail, dedupe_key="explain", mailbox="explain",
                         received_at=datetime.now(UTC), attachments=[])
    store = request.app[CASE_STORE]
    url = store.base.with_path(f"{store.base.path.rstrip('/')}/v1/threading/explain")
    try:
        async with store.session.post(
            url, data=message.model_dump_json(), headers={
                "Authorization": request.headers["Authorization"],
                "Content-Type": "application/json",
            },
        ) as resp:
            body = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return _error(503, "unavailable", "case-store cannot be reached", retry=True)
    try:
        answer = json.loads(body) if body else {}
    except ValueError:  # a proxy's error page, say
        return _error(502, "bad_gateway", f"case-store answered {status} with no JSON")
    if status == 200:
        answer["parsed"] = {"kind": mail.verdict.kind.value, "reason": mail.verdict.reason,
                            "message_id": mail.message_id, "case_ref": mail.case_ref}
    return web.json_response(answer, status=status)


def _error(status: int, error: str, reason: str, retry: bool = False) -> web.Response:
    headers = {"Retry-After": "5"} if retry else None
    return web.json_response({"error": error, "reason": reason}, status=status, headers=headers)


def add_explain_route(app: web.Application) -> None:
    app.router.add_post("/v1/threading/explain", explain)
