"""Read side of the agent API: filtered, searchable, cursor-paged case lists and one case
with everything on it. Every query carries the caller's visibility condition."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from .changes import access_args, visible_sql
from .users import Principal

SUMMARY_COLUMNS = """c.id, c.ref, c.subject, c.channel, c.status, c.reason_code, c.priority,
c.team, a.handle AS assignee, c.customer_id, c.tags, c.created_at, c.updated_at,
c.first_response_due, c.resolution_due,
(c.first_response_breached OR c.resolution_breached) AS breached"""

SORTS = {
    "-created": ("c.created_at", "DESC"),
    "created": ("c.created_at", "ASC"),
    "-updated": ("c.updated_at", "DESC"),
    "updated": ("c.updated_at", "ASC"),
}


class BadCursor(ValueError):
    pass


class Where:
    """Conditions with numbered parameters; the first three belong to the visibility check."""

    def __init__(self, who: Principal) -> None:
        self.args: list[Any] = [*access_args(who)]
        self.parts: list[str] = [visible_sql(1)]

    def add(self, sql: str, *values: Any) -> None:
        for value in values:
            self.args.append(value)
            sql = sql.replace("?", f"${len(self.args)}", 1)
        self.parts.append(sql)

    def sql(self) -> str:
        return " AND ".join(self.parts)


def encode_cursor(value: datetime, case_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([value.isoformat(), case_id])).decode()


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        stamp, case_id = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(stamp), int(case_id)
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise BadCursor("cursor is not one this API gave out") from exc


async def list_cases(
    conn: asyncpg.Connection | asyncpg.Pool, who: Principal, f: Any
) -> tuple[list[asyncpg.Record], str | None]:
    where = Where(who)
    for column, value in (
        ("c.status", f.status), ("c.team", f.team), ("c.channel", f.channel),
        ("c.priority", f.priority), ("c.customer_id", f.customer),
    ):
        if value is not None:
            where.add(f"{column} = ?", value)
    if f.assignee is not None:
        where.add("a.handle = ?", f.assignee)
    if f.tag is not None:
        where.add("c.tags @> ARRAY[?]::text[]", f.tag)
    if f.breached is not None:
        where.add("(c.first_response_breached OR c.resolution_breached) = ?", f.breached)
    if f.created_from is not None:
        where.add("c.created_at >= ?", f.created_from)
    if f.created_to is not None:
        where.add("c.created_at < ?", f.created_to)
    if f.q:
        where.add("c.search @@ websearch_to_tsquery('simple', ?)", f.q)
    column, direction = SORTS[f.sort]
    if f.cursor:
        stamp, last_id = decode_cursor(f.cursor)
        op = "<" if direction == "DESC" else ">"
        where.add(f"({column}, c.id) {op} (?, ?)", stamp, last_id)
    sql = (
        f"SELECT {SUMMARY_COLUMNS} FROM cases c LEFT JOIN users a ON a.id = c.assignee_id "
        f"WHERE {where.sql()} ORDER BY {column} {direction}, c.id {direction} "
        f"LIMIT {int(f.limit) + 1}"
    )
    rows = await conn.fetch(sql, *where.args)
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    key = "created_at" if "created" in f.sort else "updated_at"
    cursor = encode_cursor(rows[-1][key], rows[-1]["id"]) if more and rows else None
    return rows, cursor


async def find_visible_id(
    conn: asyncpg.Connection | asyncpg.Pool, ref: str, who: Principal
) -> int | None:
    case_id: int | None = await conn.fetchval(
        f"SELECT c.id FROM cases c WHERE c.ref = $1 AND {visible_sql(2)}", ref, *access_args(who)
    )
    return case_id


async def case_detail(conn: asyncpg.Connection, case_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"SELECT {SUMMARY_COLUMNS}, c.description, c.region, p.ref AS parent, "
        "m.ref AS merged_into FROM cases c LEFT JOIN users a ON a.id = c.assignee_id "
        "LEFT JOIN cases p ON p.id = c.parent_id LEFT JOIN cases m ON m.id = c.merged_into_id "
        "WHERE c.id = $1",
        case_id,
    )
    assert row is not None
    detail = dict(row)
    detail["children"] = [
        r["ref"] for r in await conn.fetch(
            "SELECT ref FROM cases WHERE parent_id = $1 ORDER BY id", case_id
        )
    ]
    detail["participants"] = [
        dict(r) for r in await conn.fetch(
            "SELECT u.handle AS user, p.role FROM case_participants p JOIN users u "
            "ON u.id = p.user_id WHERE p.case_id = $1 ORDER BY p.added_at", case_id,
        )
    ]
    detail["attachments"] = [
        dict(r) for r in await conn.fetch(
            "SELECT id, filename, content_type, size, sha256, omitted_reason, created_at "
            "FROM attachments WHERE case_id = $1 ORDER BY id", case_id,
        )
    ]
    detail["timeline"] = [
        dict(r) for r in await conn.fetch(
            "SELECT id, kind, actor, visibility, body, data, correlation_id, created_at "
            "FROM timeline_entries WHERE case_id = $1 ORDER BY id", case_id,
        )
    ]
    return detail
