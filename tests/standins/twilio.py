"""A Twilio stand-in: the Messages part of the REST API (2010-04-01), media files for MMS, and
signed webhooks (inbound messages, status callbacks) sent the way Twilio sends them.

Wire format as Twilio's: form-encoded requests with Basic auth (account SID, auth token),
JSON answers (201 with the message resource; errors as {"code", "message", "more_info",
"status"}), RFC 2822 dates. Webhooks are signed with the twilio package's own
`RequestValidator.compute_signature`, so what intake verifies is what Twilio would send.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import RequestValidator
from yarl import URL

from ._server import Failure, FailureScript, LoopbackServer

API = "/2010-04-01"

ERRORS: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    21211: "The 'To' number is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated",
    21602: "Message body is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    30001: "Queue overflow",
}


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def error_body(code: int, status: int, message: str | None = None) -> dict[str, Any]:
    return {
        "code": code,
        "message": message or ERRORS.get(code, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    form: MultiDict[str]
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival


@dataclass
class Media:
    data: bytes
    content_type: str
    fetches: int = 0


class TwilioStandIn(LoopbackServer):
    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        require_media_auth: bool = True,
    ) -> None:
        super().__init__()
        self.account_sid = account_sid or sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.require_media_auth = require_media_auth
        self.requests: list[Recorded] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.media: dict[str, Media] = {}
        self.failures = FailureScript()
        base = f"{API}/Accounts/{{account}}"
        self.app.router.add_post(f"{base}/Messages.json", self._create_message)
        self.app.router.add_get(f"{base}/Messages.json", self._list_messages)
        self.app.router.add_get(f"{base}/Messages/{{msg}}.json", self._fetch_message)
        self.app.router.add_get(f"{base}/Messages/{{msg}}/Media/{{media}}", self._media)

    # --- control ----------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        """What CASEGATE_TWILIO_API_BASE points at (Twilio's is https://api.twilio.com)."""
        return self.origin

    def fail(
        self,
        status: int,
        *,
        code: int | None = None,
        times: int | None = 1,
        retry_after: int | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """The next `times` message creations (None: until `recover()`) answer `status`."""
        default = 20429 if status == 429 else 30001 if status >= 500 else 0
        body = error_body(code or default, status)
        self.failures.add(Failure(status, body, retry_after, times, delay_s=delay_s))

    def stall(self, seconds: float, *, times: int = 1) -> None:
        """Answer the next creations late: the message is created, the client may time out."""
        self.failures.add(Failure(201, None, None, times, delay_s=seconds))

    def recover(self) -> None:
        self.failures.clear()

    def created(self) -> list[Recorded]:
        """Every POST to Messages.json, whatever it was answered."""
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("Messages.json")]

    def add_media(self, data: bytes, content_type: str, message_sid: str | None = None) -> str:
        """Serve `data` as an MMS media file; returns its URL (as Twilio puts it in MediaUrl0)."""
        media_sid = sid("ME")
        self.media[media_sid] = Media(data, content_type)
        msg = message_sid or sid("MM")
        return f"{self.origin}{API}/Accounts/{self.account_sid}/Messages/{msg}/Media/{media_sid}"

    def sign(self, url: str, params: MultiDict[str] | dict[str, str]) -> str:
        return str(RequestValidator(self.auth_token).compute_signature(url, params))

    async def post_signed(
        self,
        url: str,
        params: dict[str, str],
        *,
        signed_url: str | None = None,
        signature: str | None = None,
    ) -> tuple[int, str, str]:
        """POST a webhook as Twilio does: form body, X-Twilio-Signature over `signed_url`
        (the public URL; defaults to `url`). Returns (status, content type, body)."""
        headers = {"X-Twilio-Signature": signature or self.sign(signed_url or url, params)}
        async with aiohttp.ClientSession() as session:
            # encoded=True: the URL goes out byte for byte as signed, as Twilio calls it
            async with session.post(URL(url, encoded=True), data=params, headers=headers) as resp:
                return resp.status, resp.content_type, await resp.text()

    async def report_status(
        self,
        message_sid: str,
        status: str,
        *,
        error_code: int | None = None,
        via: str | None = None,
    ) -> int:
        """Send the signed status callback of a created message to its StatusCallback URL
        (or to `via`, a local address standing for that public URL)."""
        msg = self.messages[message_sid]
        url = msg["status_callback"]
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "From": msg["from"],
            "To": msg["to"],
            "MessageSid": message_sid,
            "SmsSid": message_sid,
            "MessageStatus": status,
            "SmsStatus": status,
        }
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        target = url if via is None else via + URL(url, encoded=True).raw_path_qs
        code, _, _ = await self.post_signed(target, params, signed_url=url)
        return code

    # --- the API ----------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        expected = aiohttp.encode_basic_auth(self.account_sid, self.auth_token)
        return hmac.compare_digest(request.headers.get("Authorization", ""), expected)

    def _refuse(self, request: web.Request) -> web.Response | None:
        if not self._authorized(request):
            return web.json_response(error_body(20003, 401), status=401)
        if request.match_info["account"] != self.account_sid:
            return web.json_response(error_body(20404, 404), status=404)
        return None

    async def _record(self, request: web.Request) -> MultiDict[str]:
        form: MultiDict[str] = MultiDict()
        if request.method == "POST":
            posted: MultiDictProxy[Any] = await request.post()
            form.extend((k, str(v)) for k, v in posted.items())
        else:
            form.extend(request.query.items())
        self.requests.append(
            Recorded(request.method, request.path, form, dict(request.headers), time.monotonic())
        )
        return form

    def _resource(self, form: MultiDict[str]) -> dict[str, Any]:
        message_sid = sid("SM")
        now = format_datetime(datetime.now(UTC))
        media = form.getall("MediaUrl", [])
        body = form.get("Body", "")
        uri = f"{API}/Accounts/{self.account_sid}/Messages/{message_sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": str(len(media)),
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": message_sid,
            "status": "queued",
            "status_callback": form.get("StatusCallback"),
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": form.get("To"),
            "uri": f"{uri}.json",
        }

    async def _create_message(self, request: web.Request) -> web.Response:
        form = await self._record(request)
        if (refused := self._refuse(request)) is not None:
            return refused
        failure = self.failures.take("create")
        if failure is not None and failure.delay_s:
            await asyncio.sleep(failure.delay_s)
        if failure is not None and failure.status != 201:
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after else {}
            return web.json_response(failure.body, status=failure.status, headers=headers)
        if not form.get("To"):
            return web.json_response(error_body(21604, 400), status=400)
        if not form.get("Body") and not form.getall("MediaUrl", []):
            return web.json_response(error_body(21602, 400), status=400)
        resource = self._resource(form)
        self.messages[resource["sid"]] = resource
        return web.json_response(
            {k: v for k, v in resource.items() if k != "status_callback"}, status=201
        )

    async def _list_messages(self, request: web.Request) -> web.Response:
        form = await self._record(request)
        if (refused := self._refuse(request)) is not None:
            return refused
        wanted = {"to": form.get("To"), "from": form.get("From")}
        found = [
            {k: v for k, v in m.items() if k != "status_callback"}
            for m in reversed(self.messages.values())  # newest first, as Twilio lists them
            if all(v is None or m[k] == v for k, v in wanted.items())
        ]
        size = int(form.get("PageSize", "50"))
        uri = f"{API}/Accounts/{self.account_sid}/Messages.json?PageSize={size}&Page=0"
        return web.json_response(
            {
                "messages": found[:size],
                "end": min(size, len(found)) - 1,
                "first_page_uri": uri,
                "next_page_uri": None,
                "page": 0,
                "page_size": size,
                "previous_page_uri": None,
                "start": 0,
                "uri": uri,
            }
        )

    async def _fetch_message(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (refused := self._refuse(request)) is not None:
            return refused
        msg = self.messages.get(request.match_info["msg"])
        if msg is None:
            return web.json_response(error_body(20404, 404), status=404)
        return web.json_response({k: v for k, v in msg.items() if k != "status_callback"})

    async def _media(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if self.require_media_auth and (refused := self._refuse(request)) is not None:
            return refused
        media = self.media.get(request.match_info["media"])
        if media is None:
            return web.json_response(error_body(20404, 404), status=404)
        media.fetches += 1
        return web.Response(body=media.data, content_type=media.content_type)
