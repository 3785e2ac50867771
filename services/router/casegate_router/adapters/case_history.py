"""Reading stored cases from case-store's PostgreSQL, read-only, for `casegate rules replay`.

One read-only transaction, streamed with a cursor so a month of cases never sits in memory at
once. case-store owns the schema and may add columns; the optional ones this reads (tags,
region, SLA policy, customer tier and tags) are used when they exist and skipped when not.
The routing decision compared against is the case's first `routed` timeline entry (what the
router decided then); without one, the case's own team and priority.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from casegate_shared.events import Channel, Priority
from casegate_shared.settings import libpq_url

from ..domain import Message
from ..domain.replay import Routed, StoredCase

_OPTIONAL = {
    ("cases", "region"): "c.region",
    ("cases", "sla_policy"): "c.sla_policy",
    ("customers", "tier"): "cu.tier AS customer_tier",
    ("customers", "tags"): "cu.tags AS customer_tags",
}


async def _columns(conn: asyncpg.Connection) -> set[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name IN ('cases', 'customers')"
    )
    return {(r["table_name"], r["column_name"]) for r in rows}


def _query(columns: set[tuple[str, str]]) -> str:
    optional = [expr for key, expr in _OPTIONAL.items() if key in columns]
    extra = "".join(f", {expr}" for expr in optional)
    return f"""
SELECT c.ref, c.channel, c.subject, c.description, c.priority, c.team, c.routed_by_rule,
       c.created_at{extra},
       (SELECT i.value FROM customer_identities i WHERE i.customer_id = c.customer_id
        AND i.kind = 'email' ORDER BY i.created_at LIMIT 1) AS email,
       (SELECT i.value FROM customer_identities i WHERE i.customer_id = c.customer_id
        AND i.kind = 'phone' ORDER BY i.created_at LIMIT 1) AS phone,
       (SELECT t.data::text FROM timeline_entries t WHERE t.case_id = c.id AND t.kind = 'routed'
        ORDER BY t.id LIMIT 1) AS routed
FROM cases c JOIN customers cu ON cu.id = c.customer_id
WHERE c.created_at >= $1
ORDER BY c.created_at, c.id
"""


def _stored(row: asyncpg.Record) -> StoredCase:
    fields: dict[str, Any] = dict(row)
    routed_data: dict[str, Any] = orjson.loads(fields["routed"]) if fields["routed"] else {}
    priority = Priority(fields["priority"])
    message = Message(
        channel=Channel(fields["channel"]),
        subject=fields["subject"],
        body=fields["description"],
        sender_email=fields["email"],
        sender_phone=fields["phone"],
        customer_tags=frozenset(fields.get("customer_tags") or ()),
        customer_tier=fields.get("customer_tier"),
        region=fields.get("region"),
        # The priority the case was opened with is not stored apart from the routed one;
        # the case's priority now is the closest there is.
        priority=priority,
        at=fields["created_at"],
    )
    sla_policy = fields.get("sla_policy") or _noted_sla_policy(routed_data)
    if routed_data:
        routed = Routed(
            routed_data.get("team"),
            Priority(routed_data["priority"]) if routed_data.get("priority") else None,
            sla_policy,
            routed_data.get("rule"),
        )
    else:
        routed = Routed(fields["team"], priority, sla_policy, fields["routed_by_rule"])
    return StoredCase(fields["ref"], fields["created_at"], message, routed)


def _noted_sla_policy(routed: dict[str, Any]) -> str | None:
    """The router notes the SLA policy in the explanation ('@sla_policy' line)."""
    for line in routed.get("explanation") or ():
        if line.get("rule") == "@sla_policy":
            return str(line.get("reason", "")).removeprefix("SLA policy ") or None
    return None


async def stored_cases(database_url: str, since: datetime) -> AsyncIterator[StoredCase]:
    """Cases opened at or after `since`, oldest first, in one read-only snapshot."""
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            query = _query(await _columns(conn))
            async for row in conn.cursor(query, since, prefetch=500):
                yield _stored(row)
    finally:
        await conn.close()
