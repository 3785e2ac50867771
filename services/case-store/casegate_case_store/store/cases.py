"""Repositories for customers, cases and timeline entries.

Every function runs in the caller's transaction: the handler decides where it begins and
commits, so the inbox row, the change and the outbox events land together.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..domain.cases import CaseStatus, Identity, NewCase
from casegate_shared.events import Channel, NotificationOutcome

from ..domain.timeline import TimelineEntry

MAX_REF_TRIES = 8
_SLACK_CHANNEL_POST = re.compile(r"[CG][A-Z0-9]{2,20}:\d{6,12}\.\d{1,8}")


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    name: str | None


@dataclass(frozen=True, slots=True)
class OpenedCase:
    id: int
    ref: str
    created_at: datetime
    tracking_token: str


@dataclass(frozen=True, slots=True)
class LockedCase:
    id: int
    status: CaseStatus


async def find_or_create_customer(
    conn: asyncpg.Connection,
    identities: list[Identity],
    name: str | None,
    channel: str | None = None,
) -> Customer:
    """The customer owning the first known identity, or a new one owning them all.
    `channel` (where they just wrote from) becomes their last channel in the same statement:
    the preferred channel defaults to it."""
    for identity in identities:
        row = await conn.fetchrow(
            "UPDATE customers c SET last_channel = coalesce($3, c.last_channel) "
            "FROM customer_identities i WHERE i.kind = $1 AND i.value = $2 "
            "AND c.id = i.customer_id RETURNING c.id, c.name",
            identity.kind.value,
            identity.value,
            channel,
        )
        if row is not None:
            customer = Customer(row["id"], row["name"])
            if len(identities) > 1:
                await _attach(conn, customer.id, identities)
            if customer.name is None and name:
                await conn.execute(
                    "UPDATE customers SET name = $2 WHERE id = $1", customer.id, name
                )
                customer = Customer(customer.id, name)
            return customer
    return await _create_customer(conn, identities, name, channel)


async def _create_customer(
    conn: asyncpg.Connection, identities: list[Identity], name: str | None, channel: str | None
) -> Customer:
    customer_id: int = await conn.fetchval(
        "INSERT INTO customers (name, last_channel) VALUES ($1, $2) RETURNING id", name, channel
    )
    if not identities:
        return Customer(customer_id, name)  # nothing to recognise them by next time
    first = identities[0]
    owner = await conn.fetchval(
        "INSERT INTO customer_identities (customer_id, kind, value) VALUES ($1, $2, $3) "
        "ON CONFLICT (kind, value) DO NOTHING RETURNING customer_id",
        customer_id,
        first.kind.value,
        first.value,
    )
    if owner is None:
        # A concurrent message from the same person committed them first (the insert waited
        # for it): drop our half-made customer and join theirs.
        await conn.execute("DELETE FROM customers WHERE id = $1", customer_id)
        return await find_or_create_customer(conn, identities, name, channel)
    if len(identities) > 1:
        await _attach(conn, customer_id, identities[1:])
    return Customer(customer_id, name)


async def _attach(conn: asyncpg.Connection, customer_id: int, identities: list[Identity]) -> None:
    """Add identities the customer does not have yet; one owned by someone else stays theirs
    (merging two people is an agent's decision, not an intake side effect)."""
    await conn.execute(
        "INSERT INTO customer_identities (customer_id, kind, value) "
        "SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v) "
        "ON CONFLICT (kind, value) DO NOTHING",
        customer_id,
        [i.kind.value for i in identities],
        [i.value for i in identities],
    )


async def case_of_customer(conn: asyncpg.Connection, ref: str, customer_id: int) -> int | None:
    """The case's id if `ref` names a case of this customer; another's case is not theirs."""
    case_id: int | None = await conn.fetchval(
        "SELECT id FROM cases WHERE ref = $1 AND customer_id = $2", ref, customer_id
    )
    return case_id


async def open_case(
    conn: asyncpg.Connection, refs: Iterator[str], customer_id: int, case: NewCase
) -> OpenedCase:
    """Insert the case under the first free reference from `refs`, with a fresh tracking
    token for the customer (only its hash is stored; the token itself is returned once)."""
    token = secrets.token_urlsafe(18)
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    for _, ref in zip(range(MAX_REF_TRIES), refs, strict=False):
        row = await conn.fetchrow(
            "INSERT INTO cases (ref, customer_id, channel, subject, description, status, priority, "
            "tracking_token_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (ref) DO NOTHING RETURNING id, created_at",
            ref,
            customer_id,
            case.channel.value,
            case.subject,
            case.description,
            case.status.value,
            case.priority.value,
            token_hash,
        )
        if row is not None:
            return OpenedCase(row["id"], ref, row["created_at"], token)
    raise RuntimeError(f"no free case reference after {MAX_REF_TRIES} tries")


async def lock_case(conn: asyncpg.Connection, ref: str) -> LockedCase | None:
    """The case row, locked until the transaction ends (its status is about to change)."""
    row = await conn.fetchrow("SELECT id, status FROM cases WHERE ref = $1 FOR UPDATE", ref)
    return None if row is None else LockedCase(row["id"], CaseStatus(row["status"]))


async def case_id(conn: asyncpg.Connection, ref: str) -> int | None:
    found: int | None = await conn.fetchval("SELECT id FROM cases WHERE ref = $1", ref)
    return found


async def set_routing(
    conn: asyncpg.Connection,
    case_id: int,
    *,
    team: str,
    priority: str,
    rule: str,
    status: CaseStatus,
) -> None:
    await conn.execute(
        "UPDATE cases SET team = $2, priority = $3, routed_by_rule = $4, status = $5, "
        "updated_at = now() WHERE id = $1",
        case_id,
        team,
        priority,
        rule,
        status.value,
    )


async def touch(conn: asyncpg.Connection, case_id: int) -> None:
    await conn.execute("UPDATE cases SET updated_at = now() WHERE id = $1", case_id)


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


async def record_delivery(
    conn: asyncpg.Connection, case_id: int, outcome: NotificationOutcome
) -> None:
    """The durable delivery record behind the notifier's dedupe, and the Message-ID a
    customer's reply will name in In-Reply-To."""
    await conn.execute(
        "INSERT INTO deliveries (notification_key, case_id, channel, provider, status, "
        "provider_message_id, reason) VALUES ($1, $2, $3, $4, $5, $6, $7) "
        "ON CONFLICT (notification_key) DO UPDATE SET status = EXCLUDED.status, "
        "provider_message_id = coalesce(EXCLUDED.provider_message_id, "
        "deliveries.provider_message_id), reason = EXCLUDED.reason, updated_at = now()",
        outcome.notification_key, case_id, outcome.channel.value, outcome.provider,
        outcome.outcome, outcome.provider_message_id, outcome.reason,
    )
    mid = outcome.provider_message_id
    if outcome.channel is Channel.SLACK and outcome.outcome == "sent" and mid and (
        _SLACK_CHANNEL_POST.fullmatch(mid)
    ):
        # The first post about the case in a team channel is its card: thread messages there
        # are about this case (DMs to a person, D…, are not threads anyone else reads).
        await conn.execute(
            "UPDATE cases SET slack_thread = $2 WHERE id = $1 AND slack_thread IS NULL",
            case_id, mid,
        )
    if outcome.channel is Channel.EMAIL and outcome.outcome == "sent" and mid and mid.startswith("<"):
        await conn.execute(
            "INSERT INTO case_message_ids (message_id, case_id, direction) "
            "VALUES ($1, $2, 'out') ON CONFLICT DO NOTHING",
            mid, case_id,
        )
