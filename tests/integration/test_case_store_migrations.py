"""case-store's migrations and `casegate db` commands against the real PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from casegate_case_store import cli
from casegate_case_store.store.migrations import (
    alembic_config,
    create_database,
    current_revision,
    downgrade,
    upgrade,
)
from tests.conftest import PG_ADMIN_URL

TABLES = {
    "customers", "customer_identities", "cases", "timeline_entries", "inbox", "outbox",
    "users", "api_tokens", "reason_codes", "audit_log", "attachments", "case_participants",
    "case_message_ids", "deliveries",
}


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config(PG_ADMIN_URL)).get_current_head()


def tables(url: str) -> set[str]:
    async def read() -> set[str]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r["tablename"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(read())


@pytest.fixture
def scratch_url() -> Iterator[str]:
    """The URL of a database that does not exist yet; dropped afterwards if it came to be."""
    name = f"casegate_scratch_{uuid.uuid4().hex[:10]}"
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    async def drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def test_create_database_creates_once(scratch_url: str) -> None:
    assert create_database(scratch_url) is True
    assert create_database(scratch_url) is False
    assert current_revision(scratch_url) is None


def test_upgrade_reaches_head_and_running_it_again_changes_nothing(scratch_url: str) -> None:
    create_database(scratch_url)
    upgrade(scratch_url)
    assert current_revision(scratch_url) == head() == "0005"
    assert TABLES <= tables(scratch_url)
    upgrade(scratch_url)
    assert current_revision(scratch_url) == head()


def test_downgrade_to_base_and_back(scratch_url: str) -> None:
    create_database(scratch_url)
    upgrade(scratch_url)
    downgrade(scratch_url, "base")
    assert not TABLES & tables(scratch_url)
    upgrade(scratch_url)
    assert TABLES <= tables(scratch_url)


def test_upgrades_in_several_processes_at_once_wait_for_each_other(scratch_url: str) -> None:
    create_database(scratch_url)
    code = f"from casegate_case_store.store.migrations import upgrade; upgrade({scratch_url!r})"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-2000:]
    assert current_revision(scratch_url) == head()


def test_upgrades_in_several_threads_at_once_take_turns(scratch_url: str) -> None:
    create_database(scratch_url)
    with ThreadPoolExecutor(max_workers=3) as pool:
        for future in [pool.submit(upgrade, scratch_url) for _ in range(3)]:
            future.result(timeout=60)
    assert current_revision(scratch_url) == head()


async def test_upgrade_can_be_called_while_an_event_loop_runs(database_url: str) -> None:
    upgrade(database_url)  # the session database is at head already: a no-op, not an error
    assert current_revision(database_url) == head()


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="casegate")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def test_db_commands_create_and_migrate_the_configured_database(
    scratch_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASEGATE_DATABASE_URL", scratch_url)
    name = scratch_url.rsplit("/", 1)[1]

    assert run_cli("db", "create") == 0
    assert run_cli("db", "create") == 0
    assert run_cli("db", "upgrade") == 0
    assert run_cli("db", "upgrade") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("created database") and out[0].endswith(name)
    assert out[1].endswith(f"{name} exists")
    assert out[2].endswith(f"from empty to {head()}")
    assert out[3].endswith(f"already at revision {head()}")
    assert TABLES <= tables(scratch_url)


def test_db_upgrade_reports_an_unreachable_database_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASEGATE_DATABASE_URL", "postgresql://u:s3cret@127.0.0.1:1/nowhere")
    assert run_cli("db", "upgrade") == 1
    err = capsys.readouterr().err
    assert "127.0.0.1:1/nowhere" in err and "s3cret" not in err
