"""The agent and supervisor API, and the customer tracking API, on case-store's port."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import actions, admin, attachments, cases, customers, reports, threading, tracking
from .routing import Api, openapi

MODULES = (cases, actions, attachments, customers, reports, admin, tracking, threading)
VERSION = "1.0.0"


def combined() -> Api:
    api = Api()
    for module in MODULES:
        api.endpoints.extend(module.api.endpoints)
    return api


def install(app: web.Application) -> dict[str, Any]:
    api = combined()
    api.install(app)
    document = openapi(api, "casegate case-store API", VERSION)

    async def serve_openapi(_: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/openapi.json", serve_openapi)
    return document
