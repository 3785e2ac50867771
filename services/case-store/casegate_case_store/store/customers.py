"""Customers as a message finds them: the owner of the sender's first known identity, or a
new customer owning them all. Each statement also returns the customer's profile (the
PROFILE and IDENTITIES columns), so the snapshot a new case carries needs no second read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from ..domain.cases import Identity
from .snapshot import IDENTITIES, PROFILE


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    name: str | None
    # The customer's preferences and identities as a snapshot's Contact needs them (PROFILE
    # and IDENTITIES columns), read by the statement that found or made the customer.
    profile: Mapping[str, Any] = field(compare=False)


@dataclass(frozen=True, slots=True)
class Claim:
    """A message's inbox claim, made in one statement with finding its sender."""

    fresh: bool  # False: the message was applied before, nothing else was done
    now: datetime  # the transaction's time: every default now() in it is this
    customer: Customer | None  # None: no known identity (or not fresh)


# The customer owning the first of the sender's identities, in lookup order ($1 kinds,
# $2 values).
_OWNER = """(
    SELECT i.customer_id
    FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(kind, value, n)
    JOIN customer_identities i ON i.kind = t.kind AND i.value = t.value
    ORDER BY t.n LIMIT 1
)"""


# A statement sees everything but the rows it updates as of its start: had the claim below
# waited inside for the customer's row (a STOP from the same person, new preferences), its
# snapshot would still show their identities from before, opt-out and all. Locked first, the
# claim starts after the holder committed and sees what it did.
_LOCK_OWNER = f"SELECT 1 FROM customers WHERE id = {_OWNER} FOR UPDATE"


def _touch(go: str) -> str:
    """The CTE `found`: the owner, touched (where they wrote from, $3, becomes their last
    channel; a name, $4, fills a blank) if `go` holds."""
    return (
        "found AS (UPDATE customers cu SET last_channel = coalesce($3, cu.last_channel), "
        f"name = coalesce(cu.name, $4) WHERE cu.id = {_OWNER} AND {go} "
        f"RETURNING {PROFILE.format(cu='cu')})"
    )


def _look(go: str) -> str:
    """The CTE `found`: the owner, unchanged, if `go` holds."""
    return f"found AS (SELECT {PROFILE.format(cu='cu')} FROM customers cu " \
        f"WHERE cu.id = {_OWNER} AND {go})"


def _claimed(found: str, first: int) -> str:
    """The inbox claim (consumer and key numbered from `first`) with `found`, which only
    acts on a fresh claim; always one row."""
    return f"""
WITH claim AS (
    INSERT INTO inbox (consumer, key) VALUES (${first}, ${first + 1})
    ON CONFLICT (consumer, key) DO NOTHING RETURNING true
), {found}
SELECT EXISTS (SELECT FROM claim) AS fresh, now() AS now, found.*,
       {IDENTITIES.format(customer_id="found.customer_id")}
FROM (SELECT) AS one LEFT JOIN found ON true
"""


_FIND_CUSTOMER = (
    f"WITH {_touch('true')} "
    f"SELECT found.*, {IDENTITIES.format(customer_id='found.customer_id')} FROM found"
)
_CLAIM_AND_TOUCH = _claimed(_touch("EXISTS (SELECT FROM claim)"), 5)
_CLAIM_AND_LOOK = _claimed(_look("EXISTS (SELECT FROM claim)"), 3)
# A new customer with every identity nobody owns yet ($3 kinds, $4 values).
_CREATE_CUSTOMER = f"""
WITH created AS (
    INSERT INTO customers AS cu (name, last_channel) VALUES ($1, $2)
    RETURNING {PROFILE.format(cu="cu")}
), owned AS (
    INSERT INTO customer_identities (customer_id, kind, value)
    SELECT created.customer_id, t.kind, t.value
    FROM created, unnest($3::text[], $4::text[]) AS t(kind, value)
    ON CONFLICT (kind, value) DO NOTHING RETURNING kind, value
)
SELECT created.*, coalesce((SELECT jsonb_agg(jsonb_build_object('kind', kind, 'value', value,
    'opted_out', false, 'bouncing', false)) FROM owned), '[]'::jsonb) AS identities
FROM created
"""


def _customer(row: Mapping[str, Any]) -> Customer:
    profile = dict(row)
    if isinstance(profile["identities"], str):
        # A connection without the pool's jsonb codec (a script, a test) hands jsonb over
        # as its text.
        profile["identities"] = orjson.loads(profile["identities"])
    return Customer(row["customer_id"], row["name"], profile)


def _columns(identities: list[Identity]) -> tuple[list[str], list[str]]:
    return [i.kind.value for i in identities], [i.value for i in identities]


async def claim_message(
    conn: asyncpg.Connection,
    consumer: str,
    key: str,
    identities: list[Identity],
    name: str | None,
    channel: str | None,
    *,
    touch: bool = True,
) -> Claim:
    """Claim `key` in `consumer`'s inbox and, if it is fresh, find the sender: touched and
    given their other identities as `find_or_create_customer` does (creating is left to
    `create_customer`), or with `touch=False` only looked up."""
    kinds, values = _columns(identities)
    if touch:
        # The customer's lock first, in a statement of its own (see `_LOCK_OWNER`).
        await conn.execute(_LOCK_OWNER, kinds, values)
        row = await conn.fetchrow(
            _CLAIM_AND_TOUCH, kinds, values, channel, name or None, consumer, key
        )
    else:
        row = await conn.fetchrow(_CLAIM_AND_LOOK, kinds, values, consumer, key)
    assert row is not None  # the statement always answers one row
    customer = None if row["customer_id"] is None else _customer(row)
    if customer is not None and touch and len(identities) > 1:
        customer = await _attach(conn, customer, identities)
    return Claim(row["fresh"], row["now"], customer)


async def find_or_create_customer(
    conn: asyncpg.Connection,
    identities: list[Identity],
    name: str | None,
    channel: str | None = None,
) -> Customer:
    """The customer owning the first known identity, or a new one owning them all.
    `channel` (where they just wrote from) becomes their last channel in the same statement:
    the preferred channel defaults to it."""
    kinds, values = _columns(identities)
    row = await conn.fetchrow(_FIND_CUSTOMER, kinds, values, channel, name or None)
    if row is None:
        return await create_customer(conn, identities, name, channel)
    customer = _customer(row)
    if len(identities) > 1:
        customer = await _attach(conn, customer, identities)
    return customer


async def create_customer(
    conn: asyncpg.Connection, identities: list[Identity], name: str | None, channel: str | None
) -> Customer:
    """A new customer owning the identities nobody owns yet."""
    kinds, values = _columns(identities)
    row = await conn.fetchrow(_CREATE_CUSTOMER, name, channel, kinds, values)
    assert row is not None
    customer = _customer(row)
    first = identities[0] if identities else None
    if first is not None and not any(
        i["kind"] == first.kind.value and i["value"] == first.value
        for i in customer.profile["identities"]
    ):
        # A concurrent message from the same person committed them first (the insert waited
        # for it): drop our half-made customer and join theirs.
        await conn.execute("DELETE FROM customers WHERE id = $1", customer.id)
        return await find_or_create_customer(conn, identities, name, channel)
    return customer


async def _attach(
    conn: asyncpg.Connection, customer: Customer, identities: list[Identity]
) -> Customer:
    """Add identities the customer does not have yet; one owned by someone else stays theirs
    (merging two people is an agent's decision, not an intake side effect)."""
    kinds, values = _columns(identities)
    added = await conn.fetch(
        "INSERT INTO customer_identities (customer_id, kind, value) "
        "SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v) "
        "ON CONFLICT (kind, value) DO NOTHING RETURNING kind, value",
        customer.id, kinds, values,
    )
    if not added:
        return customer
    fresh = [{"kind": r["kind"], "value": r["value"], "opted_out": False, "bouncing": False}
             for r in added]
    profile = {**customer.profile, "identities": [*customer.profile["identities"], *fresh]}
    return Customer(customer.id, customer.name, profile)
