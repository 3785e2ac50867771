"""Intake's provider webhooks: Twilio SMS/MMS and status callbacks, Slack events and
interactivity. Each provider's routes exist only when its signing secret is configured.

Every view goes: read the body (bounded) -> verify the signature (403, nothing published) ->
adapter parse (4xx with the reason) -> publish, confirmed -> 2xx. If the broker cannot
confirm, 503: the provider retries, and the retry carries the same dedupe key and event id,
so case-store's inbox absorbs a repeat. Slack must hear back within 3 s and retries
otherwise: a short Redis SET NX on the event id answers a retry 200 without publishing again.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aio_pika.exceptions import PublishError
from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from casegate_shared.blobs import blob_store
from casegate_shared.bus import BusUnavailable
from casegate_shared.events import AgentAction, Envelope, derived_event_id, envelope
from casegate_shared.observability import correlated

from .adapters import Forbidden, Invalid, slack, slack_reply, twilio_sms
from .domain.sms import sms_keyword
from .http import BUS, RETRY_AFTER_S, SETTINGS, Refused, read_body
from .settings import Settings

log = logging.getLogger(__name__)

FORM_TYPE = "application/x-www-form-urlencoded"
SLACK_DEADLINE_S = 2.5  # Slack gives up on us after 3 s; views.open must fit inside
WEBHOOKS = Counter(
    "casegate_intake_webhooks_total", "Provider webhooks by route and outcome", ["route", "outcome"]
)


@dataclass(frozen=True, slots=True)
class TwilioDeps:
    validator: RequestValidator
    media: twilio_sms.MediaFetcher


@dataclass(slots=True)
class SlackDeps:
    verifier: SignatureVerifier
    client: AsyncWebClient | None  # None without a bot token: no reply modal
    redis: Redis
    bot_user_id: str | None


TWILIO = web.AppKey("twilio", TwilioDeps)
SLACK = web.AppKey("slack", SlackDeps)


# --- shared steps ---------------------------------------------------------------------


def form_fields(request: web.Request, body: bytes) -> MultiDictProxy[str]:
    if request.content_type != FORM_TYPE:
        raise Refused(415, "unsupported_media_type", f"expected {FORM_TYPE}")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(400, "malformed", f"form could not be decoded: {exc}"[:200]) from None
    return MultiDictProxy(MultiDict(pairs))


async def publish(app: web.Application, event: Envelope[Any]) -> None:
    """Publish, confirmed; a broker that cannot take it becomes a 503 for the provider."""
    try:
        await app[BUS].publish(event)
    except BusUnavailable as exc:
        log.warning("webhook not confirmed by the broker", extra={"error": str(exc)})
        raise Refused(503, "unavailable", "message bus unavailable") from None
    except PublishError as exc:  # confirmed but unroutable: nobody would ever read it
        log.error("webhook unroutable: nothing is bound", extra={"error": repr(exc)})
        raise Refused(503, "unavailable", "message not routable") from None


def refusal(route: str, refused: Refused) -> web.Response:
    WEBHOOKS.labels(route, refused.error).inc()
    if refused.status < 500:
        log.info(
            "webhook refused",
            extra={"route": route, "status": refused.status, "reason": refused.reason,
                   "fields": sorted(refused.fields)},
        )
    headers = {"Retry-After": str(RETRY_AFTER_S)} if refused.status == 503 else {}
    doc: dict[str, object] = {"error": refused.error, "reason": refused.reason}
    if refused.fields:
        doc["fields"] = refused.fields
    response = web.json_response(doc, status=refused.status, headers=headers)
    if refused.status == 413:
        response.force_close()  # the unread rest of the body is not worth a kept-alive connection
    return response


def as_refused(exc: Forbidden | Invalid) -> Refused:
    if isinstance(exc, Forbidden):
        return Refused(403, "forbidden", str(exc))
    return Refused(422, "invalid", f"invalid: {exc}", exc.fields)


# --- Twilio ---------------------------------------------------------------------------


def signed_url(request: web.Request, public_url: str | None) -> str:
    """The URL Twilio called and signed: behind a proxy, our public base plus the path."""
    if public_url:
        return public_url.rstrip("/") + request.raw_path
    return str(request.url)


async def _verified_twilio_form(request: web.Request) -> MultiDictProxy[str]:
    settings = request.app[SETTINGS]
    params = form_fields(request, await read_body(request, settings.webhook_max_bytes))
    twilio_sms.verify(
        request.app[TWILIO].validator,
        signed_url(request, settings.public_url),
        params,
        request.headers.get(twilio_sms.SIGNATURE_HEADER),
        twilio_sms.signature_settings(request.headers),
    )
    return params


async def twilio_inbound(request: web.Request) -> web.Response:
    """POST /v1/twilio/sms: an inbound SMS/MMS -> empty TwiML once the bus confirmed it."""
    route, cid = "twilio_sms", str(uuid.uuid4())
    with correlated(cid):
        try:
            params = await _verified_twilio_form(request)
            media = twilio_sms.media_of(params)
            message = twilio_sms.parse(params, [], request.app[SETTINGS].sms_default_region)
            if media:
                attachments = await request.app[TWILIO].media.fetch_all(media)
                message = message.model_copy(update={"attachments": attachments})
            await publish(
                request.app,
                envelope(
                    message,
                    source="intake",
                    correlation_id=cid,
                    subject=message.case_ref,
                    event_id=derived_event_id(message.dedupe_key),
                    routing_key=f"message.received.{message.channel.value}",
                ),
            )
        except (Forbidden, Invalid) as exc:
            return refusal(route, as_refused(exc))
        except Refused as refused:
            return refusal(route, refused)
        keyword = sms_keyword(message.body)
        WEBHOOKS.labels(route, "accepted").inc()
        log.info(
            "sms accepted",
            extra={"dedupe_key": message.dedupe_key, "media": len(media),
                   "keyword": keyword.value if keyword else None},
        )
        return web.Response(text=str(MessagingResponse()), content_type="text/xml")


async def twilio_status(request: web.Request) -> web.Response:
    """POST /v1/twilio/status?ref=…[&key=…]: a delivery report -> notification.delivery_updated."""
    route, cid = "twilio_status", str(uuid.uuid4())
    with correlated(cid):
        try:
            params = await _verified_twilio_form(request)
            update = twilio_sms.parse_status(
                params, request.query.get("ref"), request.query.get("key")
            )
            await publish(
                request.app,
                envelope(
                    update,
                    source="intake",
                    correlation_id=cid,
                    subject=update.ref,
                    event_id=derived_event_id(
                        "twilio-status", update.provider_message_id, update.status
                    ),
                ),
            )
        except (Forbidden, Invalid) as exc:
            return refusal(route, as_refused(exc))
        except Refused as refused:
            return refusal(route, refused)
        WEBHOOKS.labels(route, "accepted").inc()
        log.info("delivery update accepted", extra={"ref": update.ref, "status": update.status})
        return web.Response(status=204)


# --- Slack ----------------------------------------------------------------------------


async def _publish_action_once(request: web.Request, action: AgentAction, route: str) -> None:
    """Publish unless a retry of it is already through (Redis fast path; the dedupe key in
    case-store's inbox stays the authority, so Redis being away only costs a repeat).

    "Through" means confirmed: the key is written after the broker's confirm, never before.
    Slack retries after 3 s, while a publish may take longer and then fail; a retry told
    "seen" meanwhile would be the last Slack sends, and the action would be lost. Two
    deliveries in flight together both publish, with one event id, applied once."""
    deps = request.app[SLACK]
    key = f"{request.app[SETTINGS].redis_prefix}:slack:seen:{action.dedupe_key}"
    ttl = request.app[SETTINGS].slack_dedupe_ttl_s
    seen = False
    try:
        seen = bool(await deps.redis.exists(key))
    except (RedisError, OSError) as exc:
        log.warning("slack dedupe unavailable, publishing anyway", extra={"error": repr(exc)})
    if seen:
        retry = request.headers.get("X-Slack-Retry-Num")
        log.info("slack repeat ignored", extra={"dedupe_key": action.dedupe_key, "retry": retry})
        WEBHOOKS.labels(route, "repeat").inc()
        return
    event = envelope(
        action,
        source="intake",
        correlation_id=str(uuid.uuid4()),
        subject=action.ref,
        event_id=derived_event_id(action.dedupe_key),
    )
    await publish(request.app, event)  # Refused: 503, and Slack's retry publishes it
    try:
        await deps.redis.set(key, "1", ex=ttl)
    except (RedisError, OSError) as exc:
        log.warning("slack dedupe not recorded", extra={"error": repr(exc)})
    WEBHOOKS.labels(route, "accepted").inc()
    log.info(
        "agent action accepted",
        extra={"action": action.action.value, "ref": action.ref, "dedupe_key": action.dedupe_key},
    )


async def _verified_slack_body(request: web.Request) -> bytes:
    body = await read_body(request, request.app[SETTINGS].webhook_max_bytes)
    slack.verify(request.app[SLACK].verifier, body, request.headers)
    return body


async def slack_events(request: web.Request) -> web.Response:
    """POST /v1/slack/events: url_verification, and thread messages as notes or replies."""
    route = "slack_events"
    try:
        body = await _verified_slack_body(request)
        try:
            doc = json.loads(body)
        except ValueError:
            raise Refused(400, "malformed", "body is not valid JSON") from None
        settings, deps = request.app[SETTINGS], request.app[SLACK]
        outcome = slack.parse_event(doc, deps.bot_user_id, settings.slack_reply_prefix)
        if isinstance(outcome, slack.Challenge):
            return web.json_response({"challenge": outcome.value})
        if isinstance(outcome, AgentAction):
            await _publish_action_once(request, outcome, route)
        elif isinstance(outcome, slack.Ignored):
            log.debug("slack event ignored", extra={"reason": outcome.reason})
    except (Forbidden, Invalid) as exc:
        return refusal(route, as_refused(exc))
    except Refused as refused:
        return refusal(route, refused)
    return web.Response(status=200)


async def slack_interactivity(request: web.Request) -> web.Response:
    """POST /v1/slack/interactivity: buttons on a case's post, and the reply modal."""
    route = "slack_interactivity"
    try:
        fields = form_fields(request, await _verified_slack_body(request))
        try:
            payload = json.loads(fields.get("payload", ""))
        except ValueError:
            raise Refused(400, "malformed", "payload is not valid JSON") from None
        is_submission = isinstance(payload, dict) and payload.get("type") == "view_submission"
        try:
            outcome = slack.parse_interaction(payload)
        except Invalid as exc:
            if is_submission:  # shown in the modal, next to the field
                return web.json_response({"response_action": "errors", "errors": exc.fields})
            raise
        if isinstance(outcome, slack.OpenReply):
            await _open_reply_modal(request.app[SLACK], outcome)
        elif isinstance(outcome, AgentAction):
            try:
                await _publish_action_once(request, outcome, route)
            except Refused:
                if not is_submission:
                    raise
                problem = "Could not be sent just now; please try again in a moment."
                return web.json_response(
                    {"response_action": "errors", "errors": {slack_reply.REPLY_BLOCK: problem}}
                )
    except (Forbidden, Invalid) as exc:
        return refusal(route, as_refused(exc))
    except Refused as refused:
        return refusal(route, refused)
    return web.Response(status=200)


async def _open_reply_modal(deps: SlackDeps, reply: slack.OpenReply) -> None:
    if deps.client is None:
        log.warning("reply modal needs CASEGATE_SLACK_BOT_TOKEN", extra={"ref": reply.ref})
        return
    try:
        await deps.client.views_open(
            trigger_id=reply.trigger_id,
            view=slack_reply.reply_modal(reply.ref, reply.thread_key, reply.destination),
        )
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
        # Nothing to retry: the trigger is gone after 3 s; the agent clicks again.
        log.warning("reply modal not opened", extra={"ref": reply.ref, "error": repr(exc)[:300]})


# --- resources and routes -------------------------------------------------------------


async def _twilio(app: web.Application) -> AsyncIterator[None]:
    s: Settings = app[SETTINGS]
    assert s.twilio_auth_token is not None
    token = s.twilio_auth_token.get_secret_value()
    sid = s.twilio_account_sid
    authorization = aiohttp.encode_basic_auth(sid, token) if sid else None
    async with aiohttp.ClientSession() as session:
        fetcher = twilio_sms.MediaFetcher(
            session,
            blob_store(s),
            api_base=s.twilio_api_base,
            authorization=authorization,
            max_bytes=s.attachment_max_bytes,
            timeout_s=s.twilio_media_timeout_s,
        )
        app[TWILIO] = TwilioDeps(RequestValidator(token), fetcher)
        yield


async def _slack(app: web.Application) -> AsyncIterator[None]:
    s: Settings = app[SETTINGS]
    assert s.slack_signing_secret is not None
    redis = Redis.from_url(s.redis_url)
    timeout = aiohttp.ClientTimeout(total=SLACK_DEADLINE_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = None
        if s.slack_bot_token is not None:
            token = s.slack_bot_token.get_secret_value()
            client = AsyncWebClient(token=token, base_url=s.slack_api_base, session=session)
        bot_user_id = s.slack_bot_user_id or await _our_bot_user(client)
        app[SLACK] = SlackDeps(
            SignatureVerifier(s.slack_signing_secret.get_secret_value()), client, redis, bot_user_id
        )
        try:
            yield
        finally:
            await redis.aclose()


async def _our_bot_user(client: AsyncWebClient | None) -> str | None:
    """Ask Slack who we are; without an answer, our posts are still known by their bot_id."""
    if client is None:
        return None
    try:
        return str((await client.auth_test())["user_id"])
    except (SlackApiError, aiohttp.ClientError, TimeoutError, KeyError) as exc:
        log.warning("auth.test failed: own posts known by bot_id only", extra={"error": repr(exc)})
        return None


def add_webhook_routes(app: web.Application, settings: Settings) -> None:
    """Register each configured provider's resources and routes."""
    if settings.twilio_auth_token is not None:
        app.cleanup_ctx.append(_twilio)
        app.router.add_post("/v1/twilio/sms", twilio_inbound)
        app.router.add_post("/v1/twilio/status", twilio_status)
    if settings.slack_signing_secret is not None:
        app.cleanup_ctx.append(_slack)
        app.router.add_post("/v1/slack/events", slack_events)
        app.router.add_post("/v1/slack/interactivity", slack_interactivity)
