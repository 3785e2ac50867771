"""Customers: one person across channels, merged when they turn out to be one, exported on
request, and erased (personal data removed, case statistics kept) when they ask."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from ..store.changes import audit
from ..store.queries import SUMMARY_COLUMNS
from ..store.users import Role
from .models import CaseSummary, CustomerDetail, CustomerMergeIn, Export, Identity
from .routing import BLOBS, Api, ApiError, Call, NoInput, id_param, not_found

api = Api()
LEADS = {Role.SUPERVISOR, Role.ADMIN}
ERASED = "[erased]"


def customer_id(call: Call[Any, Any]) -> int:
    return id_param(call.params["id"], "customer")


async def _customer(conn: asyncpg.Connection, cid: int) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM customers WHERE id = $1", cid)
    if row is None:
        raise not_found("customer")
    return row


@api.route("GET", "/v1/customers/{id}", roles=LEADS, tag="customers", response=CustomerDetail,
           summary="A customer with identities on every channel and all their cases")
async def customer_get(call: Call[NoInput, NoInput]) -> CustomerDetail:
    cid = customer_id(call)
    async with call.pool.acquire() as conn:
        row = await _customer(conn, cid)
        identities = await conn.fetch(
            "SELECT kind, value, opted_out_at IS NOT NULL AS opted_out, "
            "bouncing_at IS NOT NULL AS bouncing FROM customer_identities "
            "WHERE customer_id = $1 ORDER BY created_at", cid,
        )
        cases = await conn.fetch(
            f"SELECT {SUMMARY_COLUMNS} FROM cases c LEFT JOIN users a ON a.id = c.assignee_id "
            "WHERE c.customer_id = $1 ORDER BY c.created_at DESC, c.id DESC", cid,
        )
    return CustomerDetail(
        id=row["id"], name=row["name"], preferred_channel=row["preferred_channel"],
        language=row["language"], timezone=row["timezone"], tier=row["tier"],
        tags=list(row["tags"]), merged_into=row["merged_into"],
        erased=row["erased_at"] is not None,
        identities=[Identity.model_validate(dict(i)) for i in identities],
        cases=[CaseSummary.model_validate(dict(c)) for c in cases],
    )


@api.route("POST", "/v1/customers/{id}/merge", roles=LEADS, tag="customers",
           body=CustomerMergeIn, response=CustomerDetail,
           summary="Merge a duplicate customer into this one: every case and identity moves")
async def customer_merge(call: Call[NoInput, CustomerMergeIn]) -> CustomerDetail:
    keep, dup = customer_id(call), call.body.duplicate
    if keep == dup:
        raise ApiError(409, "conflict", "a customer cannot be merged into themselves")
    async with call.pool.acquire() as conn, conn.transaction():
        # Lock both in id order so two opposite merges cannot deadlock.
        rows = await conn.fetch(
            "SELECT id, merged_into FROM customers WHERE id = ANY($1::bigint[]) "
            "ORDER BY id FOR UPDATE", [keep, dup],
        )
        if len(rows) != 2:
            raise not_found("customer")
        if any(r["merged_into"] is not None for r in rows):
            raise ApiError(409, "conflict", "one of them was already merged away")
        await conn.execute(
            "UPDATE customer_identities SET customer_id = $1 WHERE customer_id = $2", keep, dup
        )
        await conn.execute("UPDATE cases SET customer_id = $1 WHERE customer_id = $2", keep, dup)
        await conn.execute(
            "UPDATE customers k SET name = coalesce(k.name, d.name), "
            "tags = ARRAY(SELECT DISTINCT unnest(k.tags || d.tags)) FROM customers d "
            "WHERE k.id = $1 AND d.id = $2", keep, dup,
        )
        await conn.execute("UPDATE customers SET merged_into = $1 WHERE id = $2", keep, dup)
        await audit(conn, call.who, "customer.merge", f"customer:{keep}", {"duplicate": dup},
                    call.correlation_id)
    return await customer_get(call)


async def export_of(conn: asyncpg.Connection, cid: int) -> dict[str, Any]:
    customer = dict(await _customer(conn, cid))
    identities = [dict(r) for r in await conn.fetch(
        "SELECT kind, value, created_at, opted_out_at, bouncing_at, bounce_reason "
        "FROM customer_identities WHERE customer_id = $1", cid,
    )]
    cases = []
    for case in await conn.fetch(
        "SELECT id, ref, subject, description, channel, status, priority, created_at, "
        "resolved_at, closed_at FROM cases WHERE customer_id = $1 ORDER BY id", cid,
    ):
        entries = await conn.fetch(
            # What the person wrote and was told; internal notes are the team's, not theirs.
            "SELECT kind, actor, body, created_at FROM timeline_entries WHERE case_id = $1 "
            "AND visibility = 'public' ORDER BY id", case["id"],
        )
        item = {k: v for k, v in dict(case).items() if k != "id"}
        item["timeline"] = [dict(e) for e in entries]
        cases.append(item)
    return {"customer": customer, "identities": identities, "cases": cases}


@api.route("GET", "/v1/customers/{id}/export", roles=LEADS, tag="customers", response=Export,
           summary="Everything held about the person, as JSON")
async def customer_export(call: Call[NoInput, NoInput]) -> Export:
    cid = customer_id(call)
    async with call.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        data = await export_of(conn, cid)
        await audit(conn, call.who, "customer.export", f"customer:{cid}", {}, call.correlation_id)
    return Export(**data, exported_at=datetime.now(UTC))


@api.route("POST", "/v1/customers/{id}/erase", roles={Role.ADMIN}, tag="customers",
           response=CustomerDetail,
           summary="Remove or pseudonymize the person's data; case statistics stay")
async def customer_erase(call: Call[NoInput, NoInput]) -> CustomerDetail:
    cid = customer_id(call)
    async with call.pool.acquire() as conn:
        async with conn.transaction():
            await _customer(conn, cid)
            keys = await erase(conn, cid)
            await audit(conn, call.who, "customer.erase", f"customer:{cid}", {},
                        call.correlation_id)
        # Files go after the commit, and only those no other case still refers to
        # (blobs are content-addressed, so two cases may share one).
        for key in keys:
            if not await conn.fetchval("SELECT 1 FROM attachments WHERE blob_key = $1", key):
                await call.request.app[BLOBS].delete(key)
    return await customer_get(call)


async def erase(conn: asyncpg.Connection, cid: int) -> list[str]:
    """Status, priority, team, channel and timestamps stay (reports still add up); words,
    names, addresses and files go. Answers the blob keys that lost their reference."""
    case_ids = [r["id"] for r in await conn.fetch(
        "SELECT id FROM cases WHERE customer_id = $1", cid
    )]
    keys = [r["blob_key"] for r in await conn.fetch(
        "SELECT DISTINCT blob_key FROM attachments WHERE case_id = ANY($1::bigint[]) "
        "AND blob_key IS NOT NULL", case_ids,
    )]
    await conn.execute("DELETE FROM customer_identities WHERE customer_id = $1", cid)
    await conn.execute(
        "UPDATE customers SET name = NULL, tags = '{}', tier = NULL, quiet_start = NULL, "
        "quiet_end = NULL, erased_at = now() WHERE id = $1", cid,
    )
    await conn.execute(
        "UPDATE cases SET subject = $2, description = $2, search = ''::tsvector, "
        "tracking_token_hash = NULL WHERE id = ANY($1::bigint[])", case_ids, ERASED,
    )
    await conn.execute(
        "UPDATE timeline_entries SET body = $2, data = jsonb_build_object('erased', true) "
        "WHERE case_id = ANY($1::bigint[]) AND kind IN ('message_in', 'reply', 'note', "
        "'notification', 'delivery', 'attachment')", case_ids, ERASED,
    )
    await conn.execute(
        "UPDATE attachments SET filename = $2, blob_key = NULL, sha256 = NULL, "
        "omitted_reason = 'erased' WHERE case_id = ANY($1::bigint[])", case_ids, ERASED,
    )
    await conn.execute(
        "DELETE FROM case_message_ids WHERE case_id = ANY($1::bigint[])", case_ids
    )
    return keys
