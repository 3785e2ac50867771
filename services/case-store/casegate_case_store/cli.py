"""`casegate db create` and `casegate db upgrade`: make the case store's database ready."""

from __future__ import annotations

import argparse
import sys

from .settings import Settings
from .store.migrations import create_database, current_revision, describe, upgrade


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


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser(
        "db", help="the case store's PostgreSQL database (CASEGATE_DATABASE_URL)"
    )
    commands = db.add_subparsers(dest="db_command", required=True)
    commands.add_parser("create", help="create the database if it does not exist").set_defaults(
        func=_create
    )
    commands.add_parser("upgrade", help="apply every schema migration").set_defaults(func=_upgrade)
