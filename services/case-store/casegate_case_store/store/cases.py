"""Repositories for cases and timeline entries.

Every function runs in the caller's transaction: the handler decides where it begins and
commits, so the inbox row, the change and the outbox events land together. The functions on
the busiest paths (a case opening, a route decision, a notification outcome) do their whole
job in one statement of data-modifying CTEs: each round trip to PostgreSQL costs about as
much as the work it carries, and a lone statement needs no transaction around it at all.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from casegate_shared.events import Channel, Envelope, NotificationOutcome, RouteDecided

from ..domain.cases import CaseStatus, NewCase, status_after_routing
from ..domain.timeline import TimelineEntry
from .customers import Customer, find_or_create_customer  # noqa: F401  (found here too)
from .outbox import NOTIFY_QUEUED, queue_args, queue_sql
from .snapshot import SNAPSHOT_SELECT

MAX_REF_TRIES = 8
_SLACK_CHANNEL_POST = re.compile(r"[CG][A-Z0-9]{2,20}:\d{6,12}\.\d{1,8}")


@dataclass(frozen=True, slots=True)
class OpenedCase:
    id: int
    ref: str
    created_at: datetime
    tracking_token: str


async def case_of_customer(conn: asyncpg.Connection, ref: str, customer_id: int) -> int | None:
    """The case's id if `ref` names a case of this customer; another's case is not theirs."""
    case_id: int | None = await conn.fetchval(
        "SELECT id FROM cases WHERE ref = $1 AND customer_id = $2", ref, customer_id
    )
    return case_id


@dataclass(frozen=True, slots=True)
class FirstEntry:
    """What a case opens with besides itself: the timeline entry of the message that opened
    it, and that message's email Message-ID (replies name it)."""

    entry: TimelineEntry
    correlation_id: str | None
    message_id: str | None = None


# The case, its first entry, its Message-ID and its `case.opened` event in one statement;
# a taken reference inserts nothing at all (the caller tries the next one).
_OPEN_CASE = f"""
WITH opened AS (
    INSERT INTO cases (ref, customer_id, channel, subject, description, status, priority,
                       tracking_token_hash, parent_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (ref) DO NOTHING RETURNING id, created_at
), entry AS (
    INSERT INTO timeline_entries (case_id, kind, actor, visibility, body, data, correlation_id)
    SELECT id, $10::text, $11::text, $12::text, $13::text, $14::jsonb, $15::text FROM opened
    WHERE $10::text IS NOT NULL
), message_id AS (
    INSERT INTO case_message_ids (message_id, case_id, direction)
    SELECT $16::text, id, 'in' FROM opened WHERE $16::text IS NOT NULL
), {queue_sql(17, "FROM opened WHERE $17::uuid IS NOT NULL")}
SELECT id, created_at, {NOTIFY_QUEUED} AS notified FROM opened
"""


async def open_case(
    conn: asyncpg.Connection,
    refs: Iterator[str],
    customer_id: int,
    case: NewCase,
    *,
    parent_id: int | None = None,
    first: FirstEntry | None = None,
    announce: Callable[[str, str], Envelope[Any]] | None = None,
) -> OpenedCase:
    """Insert the case under the first free reference from `refs`, with a fresh tracking
    token for the customer (only its hash is stored; the token itself is returned once).
    With `first` and `announce` ((ref, token) -> the `case.opened` envelope) the case opens
    complete, announced, in one round trip."""
    if announce and not conn.is_in_transaction():
        raise RuntimeError("an event outside a transaction could outlive its cause")
    token = secrets.token_urlsafe(18)
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    entry = first.entry if first else None
    for _, ref in zip(range(MAX_REF_TRIES), refs, strict=False):
        event = queue_args(announce(ref, token)) if announce else (None, None, None, None)
        row = await conn.fetchrow(
            _OPEN_CASE,
            ref, customer_id, case.channel.value, case.subject, case.description,
            case.status.value, case.priority.value, token_hash, parent_id,
            entry.kind.value if entry else None, entry.actor if entry else None,
            entry.visibility.value if entry else None, entry.body if entry else None,
            entry.data if entry else None, first.correlation_id if first else None,
            first.message_id if first else None,
            *event,
        )
        if row is not None:
            return OpenedCase(row["id"], ref, row["created_at"], token)
    raise RuntimeError(f"no free case reference after {MAX_REF_TRIES} tries")


async def case_id(conn: asyncpg.Connection, ref: str) -> int | None:
    found: int | None = await conn.fetchval("SELECT id FROM cases WHERE ref = $1", ref)
    return found


async def add_entry(
    conn: asyncpg.Connection,
    case_id: int,
    entry: TimelineEntry,
    correlation_id: str | None,
    actor_user_id: int | None = None,
) -> int:
    entry_id: int = await conn.fetchval(
        "INSERT INTO timeline_entries "
        "(case_id, kind, actor, visibility, body, data, correlation_id, actor_user_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        case_id,
        entry.kind.value,
        entry.actor,
        entry.visibility.value,
        entry.body,
        entry.data,
        correlation_id,
        actor_user_id,
    )
    return entry_id


# What a route decision changes, and the snapshot of the case it leaves, in one statement; its
# inbox claim ($1 consumer, $2 key) decides whether anything changes. $6 maps each status to
# the one routing leaves (`status_after_routing`, a domain rule, so it is passed as data).
_CLAIM_AND_ROUTE = f"""
WITH claim AS (
    INSERT INTO inbox (consumer, key) VALUES ($1, $2)
    ON CONFLICT (consumer, key) DO NOTHING RETURNING true
), routed AS (
    UPDATE cases c SET team = $4, priority = $5, routed_by_rule = $7,
        status = coalesce($6::jsonb ->> c.status, c.status), updated_at = now(),
        sla_policy = coalesce($8, c.sla_policy), region = coalesce($9, c.region),
        first_response_warn_at = coalesce($10, c.first_response_warn_at),
        first_response_due = coalesce($11, c.first_response_due),
        resolution_warn_at = coalesce($12, c.resolution_warn_at),
        resolution_due = coalesce($13, c.resolution_due),
        tags = CASE WHEN cardinality($14::text[]) = 0 THEN c.tags
                    ELSE ARRAY(SELECT DISTINCT unnest(c.tags || $14::text[])) END
    WHERE c.ref = $3 AND EXISTS (SELECT FROM claim)
    RETURNING c.*
)
{SNAPSHOT_SELECT.format(cases="routed")}"""
_AFTER_ROUTING = {s.value: status_after_routing(s).value for s in CaseStatus}


async def claim_and_route(
    conn: asyncpg.Connection, consumer: str, key: str, decision: RouteDecided
) -> asyncpg.Record | None:
    """Apply a fresh route decision; the routed case's id and snapshot columns
    (SNAPSHOT_SELECT), or None when the decision was applied before or the case is unknown."""
    # The case's lock first, in a statement of its own: a statement sees everything but the
    # rows it updates as of its start, so one that waited for the lock inside would announce
    # the Message-IDs or identities the lock's holder had just committed as they were before.
    await conn.execute("SELECT 1 FROM cases WHERE ref = $1 FOR UPDATE", decision.ref)
    row: asyncpg.Record | None = await conn.fetchrow(
        _CLAIM_AND_ROUTE, consumer, key, decision.ref, decision.team, decision.priority.value,
        _AFTER_ROUTING, decision.rule, decision.sla_policy, decision.region,
        decision.first_response_warn_at, decision.first_response_due,
        decision.resolution_warn_at, decision.resolution_due, decision.tags,
    )
    return row


_ENTRY_AND_EVENT = f"""
WITH entry AS (
    INSERT INTO timeline_entries
        (case_id, kind, actor, visibility, body, data, correlation_id, actor_user_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id
), {queue_sql(9)}
SELECT (SELECT id FROM entry) AS entry_id, {NOTIFY_QUEUED} AS notified
"""


async def add_entry_and_event(
    conn: asyncpg.Connection,
    case_id: int,
    entry: TimelineEntry,
    correlation_id: str | None,
    event: Envelope[Any],
    actor_user_id: int | None = None,
) -> int:
    """`add_entry` and `write_event` in one round trip (the event must not need the entry's
    id); returns the entry's id."""
    if not conn.is_in_transaction():
        raise RuntimeError("an event outside a transaction could outlive its cause")
    entry_id: int = await conn.fetchval(
        _ENTRY_AND_EVENT, case_id, entry.kind.value, entry.actor, entry.visibility.value,
        entry.body, entry.data, correlation_id, actor_user_id, *queue_args(event),
    )
    return entry_id


# How a delivery record takes a later outcome of the same notification: a provider's later
# report (delivered, undelivered) outranks a repeated "sent".
# A repeated "sent" never hides a provider's later report; a "failed" that never left us never
# hides that an earlier attempt did go out (a provider message id): the record says what
# happened to the customer, and a notifier that could not tell must not rewrite it.
_DELIVERY_UPSERT = """ON CONFLICT (notification_key) DO UPDATE SET
    status = CASE WHEN EXCLUDED.status = 'sent' AND deliveries.status <> 'failed'
                  THEN deliveries.status
                  WHEN EXCLUDED.provider_message_id IS NULL
                       AND deliveries.provider_message_id IS NOT NULL
                  THEN deliveries.status
                  ELSE EXCLUDED.status END,
    provider_message_id = coalesce(EXCLUDED.provider_message_id, deliveries.provider_message_id),
    reason = CASE WHEN EXCLUDED.provider_message_id IS NULL
                       AND deliveries.provider_message_id IS NOT NULL
                  THEN deliveries.reason ELSE EXCLUDED.reason END,
    updated_at = now()"""


def _sent_ids(outcome: NotificationOutcome) -> tuple[str | None, str | None]:
    """What a sent notification adds to its case: (Slack card, email Message-ID). The first
    post about the case in a team channel is its card: thread messages there are about this
    case (DMs to a person, D…, are not threads anyone else reads). An email's Message-ID is
    what a customer's reply names in In-Reply-To."""
    mid = outcome.provider_message_id if outcome.outcome == "sent" else None
    if not mid:
        return None, None
    if outcome.channel is Channel.SLACK and _SLACK_CHANNEL_POST.fullmatch(mid):
        return mid, None
    if outcome.channel is Channel.EMAIL and mid.startswith("<"):
        return None, mid
    return None, None


async def record_delivery(
    conn: asyncpg.Connection, case_id: int, outcome: NotificationOutcome
) -> None:
    """The durable delivery record behind the notifier's dedupe, and what a sent message adds
    to its case (`_sent_ids`)."""
    await conn.execute(
        "INSERT INTO deliveries (notification_key, case_id, channel, provider, status, "
        f"provider_message_id, reason) VALUES ($1, $2, $3, $4, $5, $6, $7) {_DELIVERY_UPSERT}",
        outcome.notification_key, case_id, outcome.channel.value, outcome.provider,
        outcome.outcome, outcome.provider_message_id, outcome.reason,
    )
    card, message_id = _sent_ids(outcome)
    if card:
        await conn.execute(
            "UPDATE cases SET slack_thread = $2 WHERE id = $1 AND slack_thread IS NULL",
            case_id, card,
        )
    if message_id:
        await conn.execute(
            "INSERT INTO case_message_ids (message_id, case_id, direction) "
            "VALUES ($1, $2, 'out') ON CONFLICT DO NOTHING",
            message_id, case_id,
        )


# A notification outcome on its case, in one statement that is its own transaction: the
# inbox claim, the timeline entry, and what `record_delivery` writes. A case that does not
# exist gets nothing, not even the claim.
_RECORD_OUTCOME = f"""
WITH target AS (
    SELECT id FROM cases WHERE ref = $1
), claim AS (
    INSERT INTO inbox (consumer, key) SELECT $2::text, $3::text FROM target
    ON CONFLICT (consumer, key) DO NOTHING RETURNING true
), entry AS (
    INSERT INTO timeline_entries (case_id, kind, actor, visibility, body, data, correlation_id)
    SELECT target.id, $4::text, $5::text, $6::text, $7::text, $8::jsonb, $9::text
    FROM target WHERE EXISTS (SELECT FROM claim)
), delivery AS (
    INSERT INTO deliveries (notification_key, case_id, channel, provider, status,
                            provider_message_id, reason)
    SELECT $10::text, target.id, $11::text, $12::text, $13::text, $14::text, $15::text
    FROM target WHERE EXISTS (SELECT FROM claim)
    {_DELIVERY_UPSERT}
), thread AS (
    UPDATE cases SET slack_thread = $16::text
    WHERE id = (SELECT id FROM target) AND slack_thread IS NULL
      AND $16::text IS NOT NULL AND EXISTS (SELECT FROM claim)
), sent AS (
    INSERT INTO case_message_ids (message_id, case_id, direction)
    SELECT $17::text, target.id, 'out' FROM target
    WHERE $17::text IS NOT NULL AND EXISTS (SELECT FROM claim)
    ON CONFLICT DO NOTHING
)
SELECT EXISTS (SELECT FROM target) AS found, EXISTS (SELECT FROM claim) AS fresh
"""


async def record_outcome(
    db: asyncpg.Pool | asyncpg.Connection,
    consumer: str,
    key: str,
    outcome: NotificationOutcome,
    entry: TimelineEntry,
    correlation_id: str | None,
) -> bool | None:
    """Record a notification outcome once: True if recorded now, False if it was before,
    None if there is no such case."""
    card, sent_message_id = _sent_ids(outcome)
    row = await db.fetchrow(
        _RECORD_OUTCOME, outcome.ref, consumer, key,
        entry.kind.value, entry.actor, entry.visibility.value, entry.body, entry.data,
        correlation_id, outcome.notification_key, outcome.channel.value, outcome.provider,
        outcome.outcome, outcome.provider_message_id, outcome.reason, card, sent_message_id,
    )
    assert row is not None  # the statement always answers one row
    if not row["found"]:
        return None
    return bool(row["fresh"])
