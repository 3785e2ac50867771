"""Files on a case: streamed into the blob store on upload (never held whole in memory),
streamed back on download, metadata and a timeline entry in PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, StringConstraints

from casegate_shared.blobs import BlobTooLarge
from casegate_shared.events import AttachmentRef, CaseChange

from ..domain.timeline import EntryKind
from ..store.users import Role
from .actions import WRITERS, _record, case_for, entry
from .models import AttachmentInfo
from .routing import BLOBS, Api, ApiError, Call, NoInput, id_param, not_found

log = logging.getLogger(__name__)
api = Api()
EVERYONE = WRITERS
UPLOAD_LIMIT = web.AppKey("upload_limit", int)
CHUNK = 64 * 1024


class UploadQuery(BaseModel):
    filename: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255,
                               pattern=r"^[^/\\\x00-\x1f]+$")
    ]


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    while chunk := await request.content.read(CHUNK):
        yield chunk


@api.route("POST", "/v1/cases/{ref}/attachments", roles=WRITERS, tag="attachments",
           query=UploadQuery, response=AttachmentInfo, status=201,
           raw_body="application/octet-stream",
           summary="Upload a file (the request body) to the case")
async def upload(call: Call[UploadQuery, NoInput]) -> AttachmentInfo:
    limit = call.request.app[UPLOAD_LIMIT]
    length = call.request.content_length
    if length is not None and length > limit:
        raise ApiError(413, "too_large", f"files are limited to {limit} bytes")
    claimed = call.request.content_type
    try:
        blob = await call.request.app[BLOBS].put(_chunks(call.request), limit, claimed)
    except BlobTooLarge:
        raise ApiError(413, "too_large", f"files are limited to {limit} bytes") from None
    async with case_for(call) as (conn, case):
        row = await conn.fetchrow(
            "INSERT INTO attachments (case_id, blob_key, filename, content_type, size, sha256, "
            "visibility) VALUES ($1, $2, $3, $4, $5, $6, 'internal') "
            "RETURNING id, filename, content_type, size, sha256, omitted_reason, created_at",
            case.id, blob.key, call.query.filename, blob.content_type, blob.size, blob.sha256,
        )
        ref = AttachmentRef(blob_key=blob.key, filename=call.query.filename,
                            content_type=blob.content_type, size=blob.size, sha256=blob.sha256)
        item = entry(EntryKind.ATTACHMENT, call, f"Attached {call.query.filename}",
                     attachment_id=row["id"], size=blob.size)
        await _record(conn, case, call, item, CaseChange.ATTACHMENT_ADDED, "case.attachment",
                      attachments=[ref])
    return AttachmentInfo.model_validate(dict(row))


@api.route("GET", "/v1/cases/{ref}/attachments/{id}", roles=EVERYONE | {Role.CREATOR},
           tag="attachments", raw_response="application/octet-stream",
           summary="Download a file of the case")
async def download(call: Call[NoInput, NoInput]) -> web.StreamResponse:
    attachment_id = id_param(call.params["id"], "attachment")
    async with case_for(call) as (conn, case):
        row = await conn.fetchrow(
            "SELECT blob_key, filename, content_type, size FROM attachments "
            "WHERE id = $1 AND case_id = $2", attachment_id, case.id,
        )
    if row is None or row["blob_key"] is None:
        raise not_found("attachment")
    chunks = call.request.app[BLOBS].open(row["blob_key"])
    try:  # read before answering: a missing file must be a 404, not a cut-off download
        first = await anext(chunks, b"")
    except KeyError:
        log.error("attachment file missing", extra={"attachment_id": attachment_id})
        raise not_found("attachment content") from None
    response = web.StreamResponse(headers={
        # Served as a download, never rendered: a stored HTML file must not run in our origin.
        "Content-Type": row["content_type"],
        "Content-Disposition": f'attachment; filename="{_ascii(row["filename"])}"',
        "X-Content-Type-Options": "nosniff",
        "Content-Length": str(row["size"]),
    })
    await response.prepare(call.request)
    await response.write(first)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and c not in '"\\' and c.isprintable() else "_" for c in name)
