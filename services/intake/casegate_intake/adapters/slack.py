"""The Slack channel for agents: signed Events API and interactivity requests -> `AgentAction`.

Slack signs `v0:<timestamp>:<body>` with the app's signing secret; a request older than five
minutes is refused (replay). What agents do becomes an action on a case: a button on the
case's post (claim, resolve, escalate, reply: the value is the case ref), a message in the
case's thread (an internal note, or a reply to the customer when it starts with the reply
prefix), or the reply modal's submission. Our own bot's messages are never actions.

The reply modal, and where it says the reply goes, are in `slack_reply`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_sdk.signature import SignatureVerifier

from casegate_shared.events import CASE_REF_PATTERN, AgentAction, AgentActionKind

from ..domain.text import body_problem, normalize_newlines
from . import Forbidden, Invalid
from .slack_reply import REPLY_BLOCK, REPLY_CALLBACK, REPLY_INPUT, ReplyDestination, reply_value

BUTTONS = {
    "claim": AgentActionKind.CLAIM,
    "resolve": AgentActionKind.RESOLVE,
    "escalate": AgentActionKind.ESCALATE,
}
REPLY_BUTTON = "reply"
# Message subtypes that are still a person writing; edits, joins, bot posts are not.
_PERSON_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
_REF = re.compile(CASE_REF_PATTERN)


@dataclass(frozen=True, slots=True)
class Challenge:
    """Slack checking the endpoint (url_verification): answer with the challenge."""

    value: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A genuine request that asks nothing of us (our own post, an edit, a join)."""

    reason: str


@dataclass(frozen=True, slots=True)
class OpenReply:
    """The Reply button: open the reply modal now (the trigger expires in three seconds)."""

    trigger_id: str
    ref: str
    thread_key: str | None
    actor: str
    destination: ReplyDestination | None = None  # None: a card drawn without one


Outcome = Challenge | Ignored | OpenReply | AgentAction


_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


def verify(verifier: SignatureVerifier, body: bytes, headers: Mapping[str, str]) -> None:
    """Raise Forbidden unless the body carries Slack's signature, made in the last 5 minutes."""
    timestamp = headers.get("X-Slack-Request-Timestamp")
    signature = headers.get("X-Slack-Signature")
    if not timestamp or not signature:
        raise Forbidden("Slack signature headers are missing")
    # ASCII digits, and few: str.isdigit() also takes "²", which int() refuses.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise Forbidden("X-Slack-Request-Timestamp is not a number")
    if not _SIGNATURE.fullmatch(signature):  # the SDK's compare refuses non-ASCII with TypeError
        raise Forbidden("X-Slack-Signature is not a v0 signature")
    try:
        valid = verifier.is_valid(body, timestamp, signature)
    except (ValueError, UnicodeDecodeError):  # the SDK decodes the body before comparing
        valid = False
    if not valid:
        raise Forbidden("Slack signature does not match or is older than five minutes")


def unescape(text: str) -> str:
    """Slack escapes exactly these three in message text; the customer should see them plain."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid({name: "is missing"})
    return value


def _body(text: str, name: str) -> str:
    if problem := body_problem(text):
        raise Invalid({name: problem})
    return normalize_newlines(unescape(text)).strip()


def parse_event(doc: Any, bot_user_id: str | None, reply_prefix: str) -> Outcome:
    """An Events API request body (already JSON-decoded) -> what it asks of us."""
    if not isinstance(doc, dict):
        raise Invalid({"body": "must be a JSON object"})
    kind = doc.get("type")
    if kind == "url_verification":
        return Challenge(_text(doc.get("challenge"), "challenge"))
    if kind != "event_callback":
        return Ignored(f"request type {kind!r}")
    event_id = _text(doc.get("event_id"), "event_id")
    event = doc.get("event")
    if not isinstance(event, dict):
        raise Invalid({"event": "must be an object"})
    if event.get("type") != "message":
        return Ignored(f"event type {event.get('type')!r}")
    if event.get("bot_id") or (bot_user_id and event.get("user") == bot_user_id):
        return Ignored("our own bot's message")
    if event.get("subtype") not in _PERSON_SUBTYPES:
        return Ignored(f"message subtype {event.get('subtype')!r}")
    thread_ts, ts = event.get("thread_ts"), event.get("ts")
    if not thread_ts or thread_ts == ts:
        return Ignored("not a reply in a thread")
    channel = _text(event.get("channel"), "event.channel")
    user = _text(event.get("user"), "event.user")
    text = _body(str(event.get("text") or ""), "event.text")
    action = AgentActionKind.NOTE
    if reply_prefix and text.lower().startswith(reply_prefix.lower()):
        action, text = AgentActionKind.REPLY, text[len(reply_prefix) :].strip()
    if not text:
        return Ignored("empty message")
    return AgentAction(
        action=action,
        thread_key=f"{channel}:{thread_ts}",
        actor_slack_user=user,
        dedupe_key=f"slack:{event_id}",
        body=text,
        at=_at(doc.get("event_time")),
    )


def parse_interaction(payload: Any) -> Outcome:
    """An interactivity payload (the JSON in the `payload` form field) -> what it asks of us."""
    if not isinstance(payload, dict):
        raise Invalid({"payload": "must be a JSON object"})
    user = payload.get("user")
    actor = _text(user.get("id") if isinstance(user, dict) else None, "user.id")
    kind = payload.get("type")
    if kind == "block_actions":
        return _block_action(payload, actor)
    if kind == "view_submission":
        return _view_submission(payload, actor)
    return Ignored(f"interaction type {kind!r}")


def _block_action(payload: dict[str, Any], actor: str) -> Outcome:
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise Invalid({"actions": "is missing"})
    action = actions[0]
    action_id = action.get("action_id")
    if action_id not in BUTTONS and action_id != REPLY_BUTTON:
        return Ignored(f"action {action_id!r}")
    value = _text(action.get("value"), "actions.value")
    destination = None
    if action_id == REPLY_BUTTON:
        value, destination = reply_value(value)
    ref = value.upper()
    if not _REF.fullmatch(ref):
        raise Invalid({"actions.value": "is not a case reference"})
    container = payload.get("container") if isinstance(payload.get("container"), dict) else {}
    channel, message_ts = container.get("channel_id"), container.get("message_ts")
    thread_key = f"{channel}:{message_ts}" if channel and message_ts else None
    if action_id == REPLY_BUTTON:
        trigger = _text(payload.get("trigger_id"), "trigger_id")
        return OpenReply(trigger, ref, thread_key, actor, destination)
    action_ts = _text(action.get("action_ts"), "actions.action_ts")
    return AgentAction(
        action=BUTTONS[action_id],
        ref=ref,
        thread_key=thread_key,
        actor_slack_user=actor,
        dedupe_key=f"slack:action:{action_id}:{actor}:{action_ts}",
        at=_at(action_ts),
    )


def _view_submission(payload: dict[str, Any], actor: str) -> Outcome:
    view = payload.get("view")
    if not isinstance(view, dict):
        raise Invalid({"view": "is missing"})
    if view.get("callback_id") != REPLY_CALLBACK:
        return Ignored(f"view {view.get('callback_id')!r}")
    try:
        meta = json.loads(_text(view.get("private_metadata"), "view.private_metadata"))
        ref, thread_key = meta["ref"], meta.get("thread_key")
    except (ValueError, TypeError, KeyError):
        raise Invalid({"view.private_metadata": "is not ours"}) from None
    if not isinstance(ref, str) or not _REF.fullmatch(ref):
        raise Invalid({"view.private_metadata": "does not name a case"})
    try:
        raw = view["state"]["values"][REPLY_BLOCK][REPLY_INPUT]["value"]
    except (KeyError, TypeError):
        raw = None
    text = normalize_newlines(raw).strip() if isinstance(raw, str) else ""
    if problem := body_problem(text):
        raise Invalid({REPLY_BLOCK: problem})
    if not text:
        raise Invalid({REPLY_BLOCK: "Write the reply first."})
    return AgentAction(
        action=AgentActionKind.REPLY,
        ref=ref,
        thread_key=thread_key if isinstance(thread_key, str) else None,
        actor_slack_user=actor,
        dedupe_key=f"slack:view:{_text(view.get('id'), 'view.id')}",
        body=text,
    )


def _at(value: object) -> datetime:
    """Slack's epoch seconds (an int, or a "1700000000.123456" string) as a time."""
    try:
        return datetime.fromtimestamp(float(value), UTC)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)
