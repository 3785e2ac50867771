"""The customer's tracking page: their case's status and public timeline, and a form for how
we keep them informed, both read from and written to case-store's tracking API.

The token in the link is the capability. The form carries it back in its body, so another
site cannot forge a post without knowing it (no cookie is involved, so there is nothing to
ride on); a post that a browser marks as coming from another origin is refused as well. A
wrong token and an unknown case get the same 404 page; case-store out of reach, a 503 page.
Since the page's URL holds the token, nothing is cached and no referrer is ever sent.
Bodies are customer and agent text: the templates autoescape everything.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
import jinja2
from aiohttp import web
from multidict import MultiDictProxy
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from yarl import URL

from .http import RETRY_AFTER_S, SETTINGS
from .settings import Settings

log = logging.getLogger(__name__)

FORM_TYPE = "application/x-www-form-urlencoded"
CASE_STORE_TIMEOUT_S = 5.0
PLAUSIBLE_REF = re.compile(r"[A-Za-z0-9-]{1,32}")
MAX_TOKEN = 200  # case-store's limit; a longer one cannot be right
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never hand it to anyone
    "Cache-Control": "no-store",
}
STATUS_LABELS = {
    "new": "Received", "open": "Being worked on", "pending_customer": "Waiting for your reply",
    "on_hold": "On hold", "resolved": "Resolved", "closed": "Closed",
}
PROBLEMS = {
    400: "We could not read the form", 403: "This request was refused",
    404: "We could not find this case", 413: "We could not read the form",
    415: "We could not read the form", 422: "We could not save your preferences",
    503: "Case tracking is unavailable right now",
}
HEADLINES = {"message_in": "You wrote", "reply": "Support replied", "status": "Status update"}
CHANNELS = [("email", "Email"), ("sms", "SMS"), ("slack", "Slack"),
            ("webform", "None: I check this page")]  # nothing is sent to a web page
OPT_OUTS = [("email", "Email"), ("sms", "SMS"), ("slack", "Slack")]
FIELD_LABELS = {
    "preferred_channel": "Preferred channel", "language": "Language", "timezone": "Time zone",
    "quiet_start": "Quiet hours from", "quiet_end": "Quiet hours until",
    "opt_out": "Do not contact me by",
}
TRACKING = Counter(
    "casegate_intake_tracking_total", "Tracking page requests by view and outcome",
    ["view", "outcome"],
)


class PublicEntry(BaseModel):
    kind: str
    author: str
    body: str
    created_at: datetime


class Tracking(BaseModel):
    ref: str
    subject: str
    status: str
    created_at: datetime
    updated_at: datetime
    timeline: list[PublicEntry]


class Preferences(BaseModel):
    preferred_channel: str | None
    language: str
    timezone: str
    quiet_start: str | None
    quiet_end: str | None
    opted_out: list[str]


class NotFound(Exception):
    """Unknown case or wrong token: case-store does not say which, and neither do we."""


class Unavailable(Exception):
    """case-store could not be reached or gave an answer we cannot use."""


@dataclass(eq=False)
class Rejected(Exception):
    reason: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class CaseStore:
    """case-store's tracking API, as this page needs it."""

    session: aiohttp.ClientSession
    base: URL

    async def tracking(self, ref: str, token: str) -> Tracking:
        return Tracking.model_validate(await self._call("GET", ref, "", token, None))

    async def read_preferences(self, ref: str, token: str) -> Preferences:
        doc = await self._call("GET", ref, "/preferences", token, None)
        return Preferences.model_validate(doc)

    async def preferences(self, ref: str, token: str, change: Mapping[str, object]) -> Preferences:
        """Apply `change` and answer the preferences as they now are."""
        doc = await self._call("PATCH", ref, "/preferences", token, dict(change))
        return Preferences.model_validate(doc)

    async def _call(
        self, method: str, ref: str, suffix: str, token: str, body: dict[str, object] | None
    ) -> Any:
        url = self.base.with_path(f"{self.base.path.rstrip('/')}/v1/track/{ref}{suffix}")
        try:
            async with self.session.request(
                method, url, params={"token": token}, json=body
            ) as resp:
                doc = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            # The name only: an error's text may quote the URL, which holds the token.
            raise Unavailable(f"case-store call failed: {type(exc).__name__}") from None
        if not isinstance(doc, dict):
            raise Unavailable(f"case-store answered {status} without a JSON object")
        if status == 404 or (status == 422 and body is None):
            raise NotFound()
        if status == 422:
            fields = doc.get("fields") if isinstance(doc.get("fields"), dict) else {}
            raise Rejected(str(doc.get("reason", "invalid")),
                           {str(k): str(v) for k, v in fields.items()})
        if status != 200:
            raise Unavailable(f"case-store answered {status}")
        return doc


CASE_STORE = web.AppKey("tracking_case_store", CaseStore)
TEMPLATES = web.AppKey("tracking_templates", jinja2.Environment)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("casegate_intake", "templates"),
        autoescape=True,  # every value, whatever the template's name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["status_label"] = lambda s: STATUS_LABELS.get(s, s.replace("_", " ").capitalize())
    env.filters["headline"] = lambda kind: HEADLINES.get(kind, "Update")
    return env


def _when(moment: datetime, zone: str) -> str:
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    return moment.astimezone(tz).strftime("%d %b %Y, %H:%M %Z")


def _page(request: web.Request, name: str, status: int, /, **values: Any) -> web.Response:
    headers = dict(HEADERS)
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    text = request.app[TEMPLATES].get_template(f"tracking/{name}").render(**values)
    return web.Response(text=text, status=status, content_type="text/html", headers=headers)


def _problem(request: web.Request, view: str, status: int, **values: Any) -> web.Response:
    TRACKING.labels(view, str(status)).inc()
    log.info("tracking refused", extra={"view": view, "status": status})
    page: dict[str, Any] = {"up": "", "ref": None, "token": None, "reason": None, "fields": {},
                            "status": status, "title": PROBLEMS[status], **values}
    return _page(request, "problem.html.j2", status, **page)


def _safe(exc: Exception) -> str:
    """What may be logged: a validation error's text would quote case text."""
    return str(exc) if isinstance(exc, Unavailable) else type(exc).__name__


def _plausible(ref: str, token: str) -> bool:
    return bool(PLAUSIBLE_REF.fullmatch(ref)) and 0 < len(token) <= MAX_TOKEN


async def track_page(request: web.Request) -> web.Response:
    """GET /track/{ref}?token=…: the case's status, public timeline and the preferences form."""
    ref, token = request.match_info["ref"], request.query.get("token", "")
    if not _plausible(ref, token):
        return _problem(request, "page", 404)
    store = request.app[CASE_STORE]
    try:
        case, prefs = await asyncio.gather(
            store.tracking(ref, token), store.read_preferences(ref, token)
        )
    except NotFound:
        return _problem(request, "page", 404)
    except (Unavailable, Rejected, ValidationError) as exc:
        log.warning("case-store unusable for tracking", extra={"error": _safe(exc)})
        return _problem(request, "page", 503)
    TRACKING.labels("page", "200").inc()
    return _page(
        request, "case.html.j2", 200, up="", case=case, prefs=prefs, token=token,
        saved=request.query.get("saved") == "1", channels=CHANNELS, opt_outs=OPT_OUTS,
    )


async def save_preferences(request: web.Request) -> web.StreamResponse:
    """POST /track/{ref}/preferences (form, token in the body) -> case-store's PATCH -> 303
    back to the page."""
    ref = request.match_info["ref"]
    if not _same_origin(request, request.app[SETTINGS].public_url):
        return _problem(request, "preferences", 403, up="../",
                        reason="This form can only be sent from its own page.")
    if request.content_type != FORM_TYPE:
        return _problem(request, "preferences", 415, up="../", reason="Send the form itself.")
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        return _problem(request, "preferences", 413, up="../", reason="The form is too large.")
    except (web.HTTPBadRequest, ValueError, LookupError):
        return _problem(request, "preferences", 400, up="../", reason="The form is malformed.")
    token = form.get("token")
    if not isinstance(token, str) or not _plausible(ref, token):
        return _problem(request, "preferences", 404, up="../")
    try:
        await request.app[CASE_STORE].preferences(ref, token, _change(form))
    except NotFound:
        return _problem(request, "preferences", 404, up="../")
    except Rejected as exc:
        fields = {FIELD_LABELS.get(k.split(".")[0], k): v for k, v in exc.fields.items()}
        return _problem(request, "preferences", 422, up="../", ref=ref, token=token,
                        reason=exc.reason, fields=fields)
    except (Unavailable, ValidationError) as exc:
        log.warning("case-store unusable for tracking", extra={"error": _safe(exc)})
        return _problem(request, "preferences", 503, up="../")
    TRACKING.labels("preferences", "303").inc()
    # Post/redirect/get: a reload shows the page instead of sending the form again.
    location = f"../{ref}?token={quote(token, safe='')}&saved=1"
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def _change(form: MultiDictProxy[Any]) -> dict[str, object]:
    """The PATCH body: opt-outs are the whole list (an unticked box opts back in); an empty
    field leaves its setting as it is. case-store validates every value."""
    ticked = {v for v in form.getall("opt_out", []) if isinstance(v, str)}
    change: dict[str, object] = {"opt_out": sorted(ticked)}
    for name in ("preferred_channel", "language", "timezone", "quiet_start", "quiet_end"):
        value = form.get(name)
        if isinstance(value, str) and value.strip():
            change[name] = value.strip()
    return change


def _same_origin(request: web.Request, public_url: str | None) -> bool:
    """Refuse what a browser says came from elsewhere; a client that sends neither header is
    no browser riding on a victim's link, and still needs the token."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    # Compared by host, so TLS ended at a proxy in front of us does not matter.
    host = urlsplit(origin).netloc.lower()
    allowed = {request.host.lower()}
    if public_url:
        allowed.add(urlsplit(public_url).netloc.lower())
    return bool(host) and host in allowed


async def _case_store(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=CASE_STORE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        app[CASE_STORE] = CaseStore(session, URL(app[SETTINGS].case_store_url))
        yield


def add_tracking_routes(app: web.Application, settings: Settings) -> None:
    """The page, its form and its stylesheet (registered first: `/track/{ref}` would match)."""
    if urlsplit(settings.case_store_url).scheme not in ("http", "https"):
        raise ValueError("CASEGATE_CASE_STORE_URL must be an http(s) URL")
    app[TEMPLATES] = templates()
    app.cleanup_ctx.append(_case_store)
    css = files("casegate_intake").joinpath("templates/tracking/style.css").read_text()
    css_headers = {**HEADERS, "Cache-Control": "public, max-age=3600"}

    async def stylesheet(_: web.Request) -> web.Response:
        return web.Response(text=css, content_type="text/css", headers=css_headers)

    app.router.add_get("/track/style.css", stylesheet)
    app.router.add_get("/track/{ref}", track_page)
    app.router.add_post("/track/{ref}/preferences", save_preferences)
