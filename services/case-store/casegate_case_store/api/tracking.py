"""The customer's view: with the token they were given at intake, their case's status and
public timeline, and their notification preferences. Nothing internal, nobody else's data;
a wrong token and an unknown case look the same (404)."""

from __future__ import annotations

import hashlib
import hmac
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from ..domain import cases as rules
from ..domain.timeline import EntryKind, TimelineEntry, Visibility
from ..store.changes import record_contact_change
from .models import Preferences, PreferencesIn, PublicEntry, TrackQuery, Tracking
from .routing import Api, ApiError, Call, NoInput, not_found

api = Api()
PUBLIC_KINDS = ("message_in", "reply", "status")


async def tracked_case(conn: asyncpg.Connection, call: Call[TrackQuery, object]) -> asyncpg.Record:
    ref = rules.normalize_ref(call.params["ref"]) or ""
    row = await conn.fetchrow(
        "SELECT id, ref, subject, status, created_at, updated_at, customer_id, "
        "tracking_token_hash FROM cases WHERE ref = $1", ref,
    )
    given = hashlib.sha256(call.query.token.encode()).hexdigest()
    # Constant-time compare: the answer's timing must not help guess a token.
    if row is None or not row["tracking_token_hash"] or not hmac.compare_digest(
        row["tracking_token_hash"], given
    ):
        raise not_found("case")
    return row


@api.route("GET", "/v1/track/{ref}", roles=None, tag="tracking", query=TrackQuery,
           response=Tracking, summary="The customer's view of their case (tracking token)")
async def track(call: Call[TrackQuery, NoInput]) -> Tracking:
    async with call.pool.acquire() as conn:
        case = await tracked_case(conn, call)
        entries = await conn.fetch(
            "SELECT kind, actor, body, created_at FROM timeline_entries WHERE case_id = $1 "
            "AND visibility = 'public' AND kind = ANY($2::text[]) ORDER BY id",
            case["id"], list(PUBLIC_KINDS),
        )
    return Tracking(
        ref=case["ref"], subject=case["subject"], status=case["status"],
        created_at=case["created_at"], updated_at=case["updated_at"],
        timeline=[
            PublicEntry(
                kind=e["kind"],
                author="you" if e["actor"] == "customer" else "support",
                body=e["body"], created_at=e["created_at"],
            )
            for e in entries
        ],
    )


async def _preferences(conn: asyncpg.Connection, customer_id: int) -> Preferences:
    row = await conn.fetchrow(
        "SELECT preferred_channel, language, timezone, to_char(quiet_start, 'HH24:MI') AS qs, "
        "to_char(quiet_end, 'HH24:MI') AS qe, ARRAY(SELECT CASE kind WHEN 'phone' THEN 'sms' "
        "ELSE kind END FROM customer_identities WHERE customer_id = $1 "
        "AND opted_out_at IS NOT NULL) AS opted_out FROM customers WHERE id = $1",
        customer_id,
    )
    return Preferences(
        preferred_channel=row["preferred_channel"], language=row["language"],
        timezone=row["timezone"], quiet_start=row["qs"], quiet_end=row["qe"],
        opted_out=sorted(row["opted_out"]),
    )


@api.route("GET", "/v1/track/{ref}/preferences", roles=None, tag="tracking", query=TrackQuery,
           response=Preferences, summary="The customer's notification preferences")
async def preferences_get(call: Call[TrackQuery, NoInput]) -> Preferences:
    async with call.pool.acquire() as conn:
        case = await tracked_case(conn, call)
        return await _preferences(conn, case["customer_id"])


@api.route("PATCH", "/v1/track/{ref}/preferences", roles=None, tag="tracking", query=TrackQuery,
           body=PreferencesIn, response=Preferences,
           summary="The customer sets their channel, language, time zone, quiet hours, opt-outs")
async def preferences(call: Call[TrackQuery, PreferencesIn]) -> Preferences:
    want = call.body
    if want.timezone is not None:
        try:
            ZoneInfo(want.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ApiError(422, "invalid", f"unknown time zone {want.timezone!r}") from None
    if (want.quiet_start is None) != (want.quiet_end is None):
        raise ApiError(422, "invalid", "quiet hours need both a start and an end")
    if want.quiet_hours_off and want.quiet_start is not None:
        raise ApiError(422, "invalid", "set quiet hours or turn them off, not both")
    async with call.pool.acquire() as conn, conn.transaction():
        case = await tracked_case(conn, call)
        cid = case["customer_id"]
        await conn.execute("SELECT 1 FROM customers WHERE id = $1 FOR UPDATE", cid)
        before = await _preferences(conn, cid)
        await conn.execute(
            "UPDATE customers SET preferred_channel = coalesce($2, preferred_channel), "
            "language = coalesce($3, language), timezone = coalesce($4, timezone), "
            "quiet_start = CASE WHEN $7 THEN NULL ELSE coalesce($5::text::time, quiet_start) END, "
            "quiet_end = CASE WHEN $7 THEN NULL ELSE coalesce($6::text::time, quiet_end) END "
            "WHERE id = $1",
            cid, want.preferred_channel, want.language, want.timezone, want.quiet_start,
            want.quiet_end, want.quiet_hours_off,
        )
        if want.opt_out is not None:
            kinds = ["phone" if c == "sms" else c for c in want.opt_out]
            await conn.execute(
                "UPDATE customer_identities SET opted_out_at = CASE WHEN kind = ANY($2::text[]) "
                "THEN coalesce(opted_out_at, now()) ELSE NULL END WHERE customer_id = $1",
                cid, kinds,
            )
        now = await _preferences(conn, cid)
        if now == before:
            return now  # nothing changed: no entries, no cards redrawn
        entry = TimelineEntry(EntryKind.DELIVERY, "customer", Visibility.INTERNAL,
                              "Customer changed their notification preferences",
                              {"preferences": now.model_dump(mode="json")})
        await record_contact_change(conn, cid, entry, call.correlation_id)
        return now
