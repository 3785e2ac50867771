"""`casegate db create` and `casegate db upgrade`: make the case store's database ready."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from .settings import Settings
from .store.migrations import create_database, current_revision, describe, plain_url, upgrade
from .store.users import Role, create_token, create_user


def _create(_: argparse.Namespace) -> int:
    url = Settings().database_url
    try:
        created = create_database(url)
    except Exception as exc:  # an operator wants the reason, not a traceback
        print(f"cannot create database {describe(url)}: {exc}", file=sys.stderr)
        return 1
    print(f"created database {describe(url)}" if created else f"database {describe(url)} exists")
    return 0


def _upgrade(_: argparse.Namespace) -> int:
    url = Settings().database_url
    try:
        before = current_revision(url)
        upgrade(url)
        after = current_revision(url)
    except Exception as exc:
        print(f"cannot migrate database {describe(url)}: {exc}", file=sys.stderr)
        return 1
    if before == after:
        print(f"database {describe(url)} already at revision {after}")
    else:
        print(f"migrated database {describe(url)} from {before or 'empty'} to {after}")
    return 0


async def _new_token(url: str, handle: str, roles: list[Role], teams: list[str]) -> str:
    conn = await asyncpg.connect(plain_url(url))
    try:
        async with conn.transaction():
            user_id = await create_user(conn, handle, handle, roles, teams=teams)
            _, token = await create_token(conn, user_id, f"cli:{handle}")
            await conn.execute(
                "INSERT INTO audit_log (action, target, detail) VALUES ('token.create', $1, "
                "jsonb_build_object('via', 'cli', 'roles', $2::text[]))",
                f"user:{handle}", [r.value for r in roles],
            )
        return token
    finally:
        await conn.close()


def _token(args: argparse.Namespace) -> int:
    url = Settings().database_url
    roles = [Role(r) for r in args.role]
    teams = [t.strip() for t in (args.teams or "").split(",") if t.strip()]
    try:
        token = asyncio.run(_new_token(url, args.name, roles, teams))
    except Exception as exc:
        print(f"cannot create a token in {describe(url)}: {exc}", file=sys.stderr)
        return 1
    print(token)  # the only time it is shown: the database keeps its hash
    return 0


def register_token(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = subparsers.add_parser("token", help="API tokens for the case-store API")
    commands = token.add_subparsers(dest="token_command", required=True)
    create = commands.add_parser(
        "create", help="create (or update) user NAME with ROLE and print a new token once"
    )
    create.add_argument("--role", action="append", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", required=True, help="the user's handle, e.g. alice")
    create.add_argument("--teams", help="comma-separated teams the user works in")
    create.set_defaults(func=_token)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser(
        "db", help="the case store's PostgreSQL database (CASEGATE_DATABASE_URL)"
    )
    commands = db.add_subparsers(dest="db_command", required=True)
    commands.add_parser("create", help="create the database if it does not exist").set_defaults(
        func=_create
    )
    commands.add_parser("upgrade", help="apply every schema migration").set_defaults(func=_upgrade)
