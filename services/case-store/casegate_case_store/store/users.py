"""Users, their roles and teams, and API tokens.

A token is shown once, when it is made; the database keeps only its SHA-256, so a copy of
the database does not let anyone call the API. (Tokens are 256 random bits: a fast hash is
enough, unlike passwords.)
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

TOKEN_PREFIX = "cg_"


class Role(StrEnum):
    CREATOR = "creator"  # registers cases, writes replies and notes
    RESOLVER = "resolver"  # works cases: claims, changes status, resolves
    SUPERVISOR = "supervisor"  # every case, assignment, merges, reports, customers
    ADMIN = "admin"  # reason codes, users, tokens, erasure


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    handle: str
    roles: frozenset[Role]
    teams: tuple[str, ...]
    token_id: int | None = None

    @property
    def sees_everything(self) -> bool:
        return bool(self.roles & {Role.SUPERVISOR, Role.ADMIN})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def authenticate(pool: asyncpg.Pool, token: str) -> Principal | None:
    """The active user behind an unrevoked token, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = await pool.fetchrow(
        "UPDATE api_tokens t SET last_used_at = now() FROM users u "
        "WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.id = t.user_id AND u.active "
        "RETURNING u.id, u.handle, u.roles, u.teams, t.id AS token_id",
        hash_token(token),
    )
    if row is None:
        return None
    return Principal(
        row["id"], row["handle"], frozenset(Role(r) for r in row["roles"]),
        tuple(row["teams"]), row["token_id"],
    )


async def create_user(
    conn: asyncpg.Connection | asyncpg.Pool,
    handle: str,
    name: str,
    roles: list[Role],
    *,
    teams: list[str] | None = None,
    email: str | None = None,
    slack_user: str | None = None,
) -> int:
    """A user, or the existing one of that handle with its roles and teams updated."""
    user_id: int = await conn.fetchval(
        "INSERT INTO users (handle, name, roles, teams, email, slack_user) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (handle) DO UPDATE SET "
        "roles = EXCLUDED.roles, teams = EXCLUDED.teams, name = EXCLUDED.name, "
        "email = coalesce(EXCLUDED.email, users.email), "
        "slack_user = coalesce(EXCLUDED.slack_user, users.slack_user) RETURNING id",
        handle, name, [r.value for r in roles], teams or [], email, slack_user,
    )
    return user_id


async def create_token(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: int, name: str
) -> tuple[int, str]:
    """A new token (id, value) for the user; the only time its value exists anywhere."""
    token = new_token()
    token_id: int = await conn.fetchval(
        "INSERT INTO api_tokens (user_id, name, token_hash) VALUES ($1, $2, $3) RETURNING id",
        user_id, name, hash_token(token),
    )
    return token_id, token


async def user_by_slack(conn: asyncpg.Connection, slack_user: str) -> Principal | None:
    row = await conn.fetchrow(
        "SELECT id, handle, roles, teams FROM users WHERE slack_user = $1 AND active", slack_user
    )
    if row is None:
        return None
    return Principal(
        row["id"], row["handle"], frozenset(Role(r) for r in row["roles"]), tuple(row["teams"])
    )


@dataclass(frozen=True, slots=True)
class RosterSync:
    """What `sync_roster` changed: handles created, handles given teams they lacked, and
    handles left alone because an admin deactivated them."""

    created: tuple[str, ...]
    joined: tuple[str, ...]
    inactive: tuple[str, ...]


async def sync_roster(conn: asyncpg.Connection, teams_of: dict[str, list[str]]) -> RosterSync:
    """Make every member of the teams file a user: a new handle becomes a resolver in its
    teams; an existing user gains the teams it lacks and keeps its roles, other teams, name
    and contacts, which admins manage through the API. A deactivated user stays so."""
    created: list[str] = []
    joined: list[str] = []
    inactive: list[str] = []
    async with conn.transaction():
        for handle, teams in sorted(teams_of.items()):
            row = await conn.fetchrow(
                "SELECT teams, active FROM users WHERE handle = $1 FOR UPDATE", handle
            )
            if row is None:
                # DO NOTHING: an admin may create the same handle this very moment, and what
                # they set must not become a plain resolver.
                made = await conn.fetchval(
                    "INSERT INTO users (handle, name, roles, teams) VALUES ($1, $1, $2, $3) "
                    "ON CONFLICT (handle) DO NOTHING RETURNING id",
                    handle, [Role.RESOLVER.value], sorted(teams))
                if made is not None:
                    created.append(handle)
                    continue
                row = await conn.fetchrow(
                    "SELECT teams, active FROM users WHERE handle = $1 FOR UPDATE", handle)
            if not row["active"]:
                inactive.append(handle)
            elif missing := sorted(set(teams) - set(row["teams"])):
                await conn.execute(
                    "UPDATE users SET teams = teams || $2::text[] WHERE handle = $1",
                    handle, missing,
                )
                joined.append(handle)
        for handle in (*created, *joined):
            await conn.execute(
                "INSERT INTO audit_log (action, target, detail) VALUES ('user.sync', $1, "
                "jsonb_build_object('via', 'cli', 'teams', $2::text[]))",
                f"user:{handle}", sorted(teams_of[handle]),
            )
    return RosterSync(tuple(created), tuple(joined), tuple(inactive))
