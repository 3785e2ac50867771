"""A Slack stand-in: the Web API methods casegate calls (chat.postMessage, chat.update,
views.open, users.info, auth.test), and signed Events API / interactivity requests.

Wire format as Slack's: POST /api/<method> with a Bearer token and a form or JSON body,
answered 200 {"ok": true, ...} or {"ok": false, "error": "..."}; rate limits are HTTP 429
with Retry-After. Requests to intake are signed with slack_sdk's own
`SignatureVerifier.generate_signature`, so what intake verifies is what Slack would send.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from ._server import Failure, FailureScript, LoopbackServer


@dataclass(frozen=True)
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    at: float  # time.monotonic() on arrival
    answered: int  # HTTP status we answered


class SlackStandIn(LoopbackServer):
    def __init__(self, token: str | None = None, bot_user_id: str = "UCASEGATE") -> None:
        super().__init__()
        self.token = token or "xoxb-" + secrets.token_hex(12)
        self.bot_user_id = bot_user_id
        self.bot_id = "BCASEGATE"
        self.calls: list[Call] = []
        self.posts: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, ts) -> message
        self.users: dict[str, dict[str, Any]] = {}
        self.failures = FailureScript()
        self._ts = itertools.count(1)
        self.app.router.add_route("*", "/api/{method}", self._api)

    # --- control ----------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        """What CASEGATE_SLACK_API_BASE points at (Slack's is https://slack.com/api/)."""
        return f"{self.origin}/api/"

    def fail(
        self,
        *,
        status: int = 200,
        error: str | None = None,
        method: str | None = None,
        times: int | None = 1,
        retry_after: int | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """The next `times` calls (of `method`, or any) answer `status` (429 rate limited,
        5xx) or, with status 200, {"ok": false, "error": error}."""
        if error is None:
            error = "ratelimited" if status == 429 else "internal_error"
        body = {"ok": False, "error": error}
        self.failures.add(Failure(status, body, retry_after, times, method, delay_s))

    def recover(self) -> None:
        self.failures.clear()

    def add_user(self, user_id: str, name: str, email: str | None = None) -> None:
        self.users[user_id] = {
            "id": user_id,
            "name": name,
            "real_name": name,
            "is_bot": False,
            "profile": {"real_name": name, "display_name": name, "email": email},
        }

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    # --- the API ----------------------------------------------------------------------

    async def _args(self, request: web.Request) -> tuple[dict[str, Any], str | None]:
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            doc = await request.json()
            args.update(doc if isinstance(doc, dict) else {})
        elif request.method == "POST":
            args.update({k: str(v) for k, v in (await request.post()).items()})
        for name in ("blocks", "view"):  # form bodies carry these as JSON strings
            if isinstance(args.get(name), str):
                args[name] = json.loads(args[name])
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.get("token")
        return args, token

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args, token = await self._args(request)
        failure = self.failures.take(method)
        if failure is not None and failure.delay_s:
            await asyncio.sleep(failure.delay_s)
        if failure is not None:
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after else {}
            status, body = failure.status, failure.body or {"ok": False}
        elif token != self.token:
            headers, status, body = {}, 200, {"ok": False, "error": "invalid_auth"}
        else:
            handler = getattr(self, "_" + method.replace(".", "_"), None)
            body = handler(args) if handler else {"ok": False, "error": "unknown_method"}
            headers, status = {}, 200
        self.calls.append(Call(method, args, token, time.monotonic(), status))
        return web.json_response(body, status=status, headers=headers)

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _auth_test(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://casegate.slack.com/",
            "team": "casegate",
            "user": "casegate",
            "team_id": "TCASEGATE",
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
        }

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        message = {
            "type": "message",
            "text": args.get("text", ""),
            "blocks": args.get("blocks", []),
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "ts": ts,
        }
        if args.get("thread_ts"):
            if (channel, args["thread_ts"]) not in self.posts:
                return {"ok": False, "error": "thread_not_found"}
            message["thread_ts"] = args["thread_ts"]
        self.posts[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (args.get("channel"), args.get("ts"))
        if key not in self.posts:
            return {"ok": False, "error": "message_not_found"}
        message = self.posts[key]  # type: ignore[index]
        message.update({k: args[k] for k in ("text", "blocks") if k in args})
        return {"ok": True, "channel": key[0], "ts": key[1], "text": message["text"]}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = args.get("view")
        if not isinstance(view, dict) or view.get("type") != "modal":
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "view": {**view, "id": "V" + secrets.token_hex(5).upper()}}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}


# --- requests Slack sends to intake ---------------------------------------------------


def signed_headers(
    signing_secret: str, body: bytes, *, timestamp: int | None = None, content_type: str
) -> dict[str, str]:
    """X-Slack-Request-Timestamp and X-Slack-Signature, computed by slack_sdk itself."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": content_type,
    }


def event_callback(event: dict[str, Any], *, event_id: str | None = None) -> bytes:
    """An Events API envelope around `event`, as JSON bytes."""
    doc = {
        "token": "deprecated-verification-token",
        "team_id": "TCASEGATE",
        "api_app_id": "ACASEGATE",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(),
        "event_time": int(time.time()),
    }
    return json.dumps(doc).encode()


def url_verification(challenge: str) -> bytes:
    doc = {"token": "deprecated", "challenge": challenge, "type": "url_verification"}
    return json.dumps(doc).encode()


def interactivity(payload: dict[str, Any]) -> bytes:
    """An interactivity request body: form-encoded, one field `payload` holding JSON."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def block_action(
    action_id: str, value: str, *, user: str, channel: str, message_ts: str
) -> dict[str, Any]:
    """The payload of a button click on a message we posted."""
    now = f"{time.time():.6f}"
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "TCASEGATE"},
        "api_app_id": "ACASEGATE",
        "team": {"id": "TCASEGATE", "domain": "casegate"},
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}",
        "channel": {"id": channel, "name": "support"},
        "message": {"type": "message", "ts": message_ts, "bot_id": "BCASEGATE", "text": "case"},
        "response_url": "https://hooks.slack.com/actions/TCASEGATE/1/x",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "case_actions",
                "value": value,
                "action_ts": now,
                "text": {"type": "plain_text", "text": action_id.title()},
            }
        ],
    }


def view_submission(view: dict[str, Any], *, user: str, values: dict[str, Any]) -> dict[str, Any]:
    """The payload of a modal's submit: `view` as views.open returned it, with the values."""
    return {
        "type": "view_submission",
        "team": {"id": "TCASEGATE", "domain": "casegate"},
        "user": {"id": user, "username": user.lower(), "team_id": "TCASEGATE"},
        "api_app_id": "ACASEGATE",
        "trigger_id": f"{int(time.time())}.1.{secrets.token_hex(16)}",
        "view": {**view, "state": {"values": values}, "hash": secrets.token_hex(8)},
    }
