"""Administration: reason codes (data, not code), users, and their API tokens."""

from __future__ import annotations

import asyncpg

from ..store.changes import audit
from ..store.users import Role, create_token
from .models import (
    NewToken, ReasonCode, Revoked, ReasonCodeChange, ReasonCodeIn, ReasonCodes, TokenIn, User, UserIn,
    Users,
)
from .routing import Api, ApiError, Call, NoInput, id_param, not_found

api = Api()
EVERYONE = {Role.CREATOR, Role.RESOLVER, Role.SUPERVISOR, Role.ADMIN}
ADMIN = {Role.ADMIN}
USER_COLUMNS = "handle, name, roles, teams, email, slack_user, active"


@api.route("GET", "/v1/reason-codes", roles=EVERYONE, tag="admin", response=ReasonCodes,
           summary="Reason codes a status change can name (retired ones included, flagged)")
async def reason_codes(call: Call[NoInput, NoInput]) -> ReasonCodes:
    rows = await call.pool.fetch("SELECT code, label, active FROM reason_codes ORDER BY code")
    return ReasonCodes(items=[ReasonCode.model_validate(dict(r)) for r in rows])


@api.route("POST", "/v1/reason-codes", roles=ADMIN, tag="admin", body=ReasonCodeIn,
           response=ReasonCode, status=201, summary="Add a reason code")
async def reason_code_add(call: Call[NoInput, ReasonCodeIn]) -> ReasonCode:
    async with call.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO reason_codes (code, label) VALUES ($1, $2) ON CONFLICT DO NOTHING "
            "RETURNING code, label, active", call.body.code, call.body.label,
        )
        if row is None:
            raise ApiError(409, "conflict", f"reason code {call.body.code!r} exists")
        await audit(conn, call.who, "reason_code.add", f"reason_code:{call.body.code}",
                    {"label": call.body.label}, call.correlation_id)
    return ReasonCode.model_validate(dict(row))


@api.route("PATCH", "/v1/reason-codes/{code}", roles=ADMIN, tag="admin", body=ReasonCodeChange,
           response=ReasonCode,
           summary="Rename or retire a reason code (cases that used it keep it)")
async def reason_code_change(call: Call[NoInput, ReasonCodeChange]) -> ReasonCode:
    code = call.params["code"]
    async with call.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE reason_codes SET label = coalesce($2, label), active = coalesce($3, active) "
            "WHERE code = $1 RETURNING code, label, active",
            code, call.body.label, call.body.active,
        )
        if row is None:
            raise not_found("reason code")
        await audit(conn, call.who, "reason_code.change", f"reason_code:{code}",
                    call.body.model_dump(exclude_none=True), call.correlation_id)
    return ReasonCode.model_validate(dict(row))


@api.route("GET", "/v1/users", roles=ADMIN | {Role.SUPERVISOR}, tag="admin", response=Users,
           summary="Users with their roles and teams")
async def users(call: Call[NoInput, NoInput]) -> Users:
    rows = await call.pool.fetch(f"SELECT {USER_COLUMNS} FROM users ORDER BY handle")
    return Users(items=[User.model_validate(dict(r)) for r in rows])


@api.route("PUT", "/v1/users/{handle}", roles=ADMIN, tag="admin", body=UserIn, response=User,
           summary="Create or update a user")
async def user_put(call: Call[NoInput, UserIn]) -> User:
    want = call.body
    if want.handle != call.params["handle"]:
        raise ApiError(422, "invalid", "the body's handle must match the path")
    async with call.pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                "INSERT INTO users (handle, name, roles, teams, email, slack_user) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (handle) DO UPDATE SET "
                "name = EXCLUDED.name, roles = EXCLUDED.roles, teams = EXCLUDED.teams, "
                "email = EXCLUDED.email, slack_user = EXCLUDED.slack_user, active = true "
                f"RETURNING {USER_COLUMNS}",
                want.handle, want.name, sorted(set(want.roles)), want.teams, want.email,
                want.slack_user,
            )
        except asyncpg.UniqueViolationError:
            raise ApiError(409, "conflict", "email or Slack user belongs to another user") from None
        await audit(conn, call.who, "user.put", f"user:{want.handle}",
                    {"roles": want.roles, "teams": want.teams}, call.correlation_id)
    return User.model_validate(dict(row))


@api.route("POST", "/v1/users/{handle}/tokens", roles=ADMIN, tag="admin", body=TokenIn,
           response=NewToken, status=201, summary="A new API token, shown this once")
async def token_add(call: Call[NoInput, TokenIn]) -> NewToken:
    async with call.pool.acquire() as conn, conn.transaction():
        user_id = await conn.fetchval(
            "SELECT id FROM users WHERE handle = $1 AND active", call.params["handle"]
        )
        if user_id is None:
            raise not_found("user")
        token_id, token = await create_token(conn, user_id, call.body.name)
        await audit(conn, call.who, "token.create", f"user:{call.params['handle']}",
                    {"token_id": token_id, "name": call.body.name}, call.correlation_id)
    return NewToken(id=token_id, token=token)


@api.route("DELETE", "/v1/tokens/{id}", roles=ADMIN, tag="admin", response=Revoked,
           summary="Revoke a token")
async def token_revoke(call: Call[NoInput, NoInput]) -> Revoked:
    token_id = id_param(call.params["id"], "token")
    async with call.pool.acquire() as conn, conn.transaction():
        done = await conn.fetchval(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 "
            "RETURNING id", token_id,
        )
        if done is None:
            raise not_found("token")
        await audit(conn, call.who, "token.revoke", f"token:{token_id}", {},
                    call.correlation_id)
    return Revoked(id=token_id, revoked=True)
