"""The agent API's plumbing: one declaration per endpoint drives authentication, role
checks, input validation and the OpenAPI 3.1 document, so the document cannot drift from
what the server does.

A view receives a `Call` (who is calling, validated query/body, path parameters) and returns
a pydantic model (sent as JSON) or an aiohttp response (downloads, CSV).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from casegate_shared.blobs import BlobStore
from casegate_shared.observability import correlated

from ..inbound import ThreadingRules
from ..store.users import Principal, Role, authenticate

log = logging.getLogger(__name__)

POOL = web.AppKey("api_pool", asyncpg.Pool)
THREADING = web.AppKey("api_threading", ThreadingRules)
BLOBS = web.AppKey("api_blobs", BlobStore)
Q = TypeVar("Q", bound=BaseModel)
B = TypeVar("B", bound=BaseModel)
_PARAM = re.compile(r"{(\w+)}")


class ApiError(Exception):
    """An answer other than success: status, a machine-readable kind, a human reason."""

    def __init__(self, status: int, error: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.error, self.reason, self.extra = status, error, reason, extra


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def id_param(raw: str, what: str) -> int:
    """A numeric path parameter; anything else (including '²', which str.isdigit accepts)
    names nothing, so 404."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise not_found(what)
    return int(raw)


class ErrorBody(BaseModel):
    error: str
    reason: str
    fields: dict[str, str] | None = None


@dataclass(slots=True)
class Call(Generic[Q, B]):
    request: web.Request
    principal: Principal | None
    query: Q
    body: B
    params: dict[str, str]
    correlation_id: str

    @property
    def pool(self) -> asyncpg.Pool:
        return self.request.app[POOL]

    @property
    def who(self) -> Principal:
        assert self.principal is not None, "only on authenticated endpoints"
        return self.principal


class NoInput(BaseModel):
    pass


View = Callable[[Call[Any, Any]], Awaitable[BaseModel | web.StreamResponse]]


@dataclass(slots=True)
class Endpoint:
    method: str
    path: str
    view: View
    roles: frozenset[Role] | None  # None: public (the tracking endpoint)
    summary: str
    query: type[BaseModel]
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    tag: str
    raw_body: str | None = None  # content type of a streamed body (uploads)
    raw_response: str | None = None  # content type of a streamed answer (downloads, CSV)


@dataclass
class Api:
    endpoints: list[Endpoint] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        roles: set[Role] | None,
        summary: str,
        tag: str,
        query: type[BaseModel] = NoInput,
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        raw_body: str | None = None,
        raw_response: str | None = None,
    ) -> Callable[[View], View]:
        def register(view: View) -> View:
            allowed = None if roles is None else frozenset(roles)
            self.endpoints.append(
                Endpoint(
                    method, path, view, allowed, summary, query, body, response, status, tag,
                    raw_body, raw_response,
                )
            )
            return view

        return register

    def install(self, app: web.Application) -> None:
        for endpoint in self.endpoints:
            app.router.add_route(endpoint.method, endpoint.path, _handler(endpoint))


def _error(status: int, error: str, reason: str, **extra: Any) -> web.Response:
    body = {"error": error, "reason": reason, **extra}
    headers = {"WWW-Authenticate": 'Bearer realm="casegate"'} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


def _fields(exc: ValidationError) -> dict[str, str]:
    found: dict[str, str] = {}
    for err in exc.errors(include_url=False, include_input=False):
        found.setdefault(".".join(str(p) for p in err["loc"]) or "body", err["msg"])
    return found


async def _principal(request: web.Request, endpoint: Endpoint) -> Principal | None:
    if endpoint.roles is None:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "a bearer token is required")
    principal = await authenticate(request.app[POOL], token.strip())
    if principal is None:
        raise ApiError(401, "unauthenticated", "the token is unknown or revoked")
    if not principal.roles & endpoint.roles:
        needed = ", ".join(sorted(endpoint.roles))
        raise ApiError(403, "forbidden", f"this needs one of the roles: {needed}")
    return principal


async def _body(request: web.Request, endpoint: Endpoint) -> BaseModel:
    if endpoint.body is None:
        return NoInput()
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json")
    raw = await request.read()
    try:
        return endpoint.body.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise ApiError(422, "invalid", "the body is not valid", fields=_fields(exc)) from None


def _handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        cid = request.headers.get("X-Correlation-Id") or str(uuid.uuid4())
        with correlated(cid):
            try:
                principal = await _principal(request, endpoint)
                try:
                    query = endpoint.query.model_validate(dict(request.query))
                except ValidationError as exc:
                    raise ApiError(422, "invalid", "bad query", fields=_fields(exc)) from None
                body = await _body(request, endpoint)
                call = Call(request, principal, query, body, dict(request.match_info), cid)
                result = await endpoint.view(call)
            except ApiError as exc:
                log.info("api refused", extra={"status": exc.status, "reason": exc.reason})
                return _error(exc.status, exc.error, exc.reason, **exc.extra)
        if isinstance(result, web.StreamResponse):
            return result
        return web.Response(
            body=result.model_dump_json(), status=endpoint.status, content_type="application/json"
        )

    return handle


def openapi(api: Api, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document, schemas straight from the pydantic models."""
    models = {e.body for e in api.endpoints if e.body} | {
        e.response for e in api.endpoints if e.response
    }
    models.add(ErrorBody)
    keyed = [(m, "validation") for m in models if m] + [(m, "serialization") for m in models if m]
    refs, defs = models_json_schema(keyed, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for e in api.endpoints:
        operation: dict[str, Any] = {
            "summary": e.summary,
            "tags": [e.tag],
            "operationId": f"{e.method.lower()}_{e.view.__name__}",
            "parameters": _parameters(e),
            "responses": _responses(e, refs),
        }
        if e.roles is not None:
            operation["security"] = [{"bearer": []}]
            operation["description"] = "Roles: " + ", ".join(sorted(e.roles))
        else:
            operation["security"] = []
        if e.body is not None:
            schema = refs[(e.body, "validation")]
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            }
        elif e.raw_body:
            operation["requestBody"] = {
                "required": True,
                "content": {e.raw_body: {"schema": {"type": "string", "format": "binary"}}},
            }
        paths.setdefault(e.path, {})[e.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _parameters(e: Endpoint) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
        for n in _PARAM.findall(e.path)
    ]
    schema = e.query.model_json_schema()
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        found.append(
            {"name": name, "in": "query", "required": name in required, "schema": prop}
        )
    return found


def _responses(e: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    error = {"application/json": {"schema": refs[(ErrorBody, "serialization")]}}
    ok: dict[str, Any] = {"description": "success"}
    content: dict[str, Any] = {}
    if e.response is not None:
        content["application/json"] = {"schema": refs[(e.response, "serialization")]}
    if e.raw_response:
        content[e.raw_response] = {"schema": {"type": "string"}}
    if content:
        ok["content"] = content
    answers: dict[str, Any] = {str(e.status): ok}
    for status, why in (
        ("400", "bad input"),
        ("404", "not found"),
        ("409", "conflict with the case's state"),
        ("413", "too large"),
        ("415", "unsupported media type"),
        ("422", "invalid input"),
    ):
        answers[status] = {"description": why, "content": error}
    if e.roles is not None:
        answers["401"] = {"description": "no or bad token", "content": error}
        answers["403"] = {"description": "role not allowed", "content": error}
    return answers
