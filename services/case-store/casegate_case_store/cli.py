"""`casegate db create` and `casegate db upgrade`: make the case store's database ready;
`casegate token create` and `casegate users sync`: its first users."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .api.models import Handle
from .settings import Settings
from .store.migrations import create_database, current_revision, describe, plain_url, upgrade
from .store.users import Role, create_token, create_user, sync_roster

T = TypeVar("T")


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


async def _on_database(url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    conn = await asyncpg.connect(plain_url(url))
    try:
        return await work(conn)
    finally:
        await conn.close()


async def _new_token(conn: asyncpg.Connection, handle: str, roles: list[Role],
                     teams: list[str]) -> str:
    async with conn.transaction():
        user_id = await create_user(conn, handle, handle, roles, teams=teams)
        _, token = await create_token(conn, user_id, f"cli:{handle}")
        await conn.execute(
            "INSERT INTO audit_log (action, target, detail) VALUES ('token.create', $1, "
            "jsonb_build_object('via', 'cli', 'roles', $2::text[]))",
            f"user:{handle}", [r.value for r in roles],
        )
    return token


def _token(args: argparse.Namespace) -> int:
    url = Settings().database_url
    roles = [Role(r) for r in args.role]
    teams = [t.strip() for t in (args.teams or "").split(",") if t.strip()]
    try:
        token = asyncio.run(_on_database(
            url, lambda conn: _new_token(conn, args.name, roles, teams)))
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


class _Member(BaseModel):
    model_config = ConfigDict(extra="ignore")  # region, skills, caps: the router's business
    handle: Handle  # as the API and the router spell one: a user the router can find


class _Team(BaseModel):
    model_config = ConfigDict(extra="ignore")
    members: list[_Member] = []


class _Roster(BaseModel):
    """Only what makes users out of the router's teams file: who is in which team."""

    model_config = ConfigDict(extra="ignore")
    teams: dict[str, _Team]

    def teams_of(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for name, team in self.teams.items():
            for member in team.members:
                found.setdefault(member.handle, []).append(name)
        return found


def read_roster(path: Path) -> dict[str, list[str]]:
    """handle -> teams, from a teams file; raises ValueError with a reason an operator can
    act on."""
    try:
        return _Roster.model_validate(yaml.safe_load(path.read_text())).teams_of()
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    except ValidationError as exc:
        raise ValueError(f"{path} is not a teams file: {exc.error_count()} error(s): "
                         f"{exc.errors()[0]['loc']} {exc.errors()[0]['msg']}") from None


def _users_sync(args: argparse.Namespace) -> int:
    url = Settings().database_url
    try:
        teams_of = read_roster(Path(args.file))
        done = asyncio.run(_on_database(url, lambda conn: sync_roster(conn, teams_of)))
    except ValueError as exc:
        print(f"casegate users sync: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"cannot sync users in {describe(url)}: {exc}", file=sys.stderr)
        return 1
    print(f"{len(teams_of)} team member(s): {len(done.created)} created, "
          f"{len(done.joined)} added to teams, "
          f"{len(teams_of) - len(done.created) - len(done.joined) - len(done.inactive)} "
          "unchanged")
    if done.inactive:
        print(f"deactivated, left so: {', '.join(done.inactive)}", file=sys.stderr)
    return 0


def register_users(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = subparsers.add_parser("users", help="agent users of the case-store API")
    commands = users.add_subparsers(dest="users_command", required=True)
    sync = commands.add_parser(
        "sync", help="make every member of a teams file a user (a resolver in its teams)"
    )
    sync.add_argument("file", help="the router's teams file, e.g. config/teams.yaml")
    sync.set_defaults(func=_users_sync)
