"""`casegate users sync`: the members of the router's teams file become users case-store
knows, so automatic assignment has someone to give cases to, without touching what admins
set through the API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import yaml

from casegate_case_store.store.users import Role, create_user

ROOT = Path(__file__).resolve().parents[2]
CASEGATE = Path(sys.executable).with_name("casegate")


def sync(url: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CASEGATE), "users", "sync", str(path)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "CASEGATE_DATABASE_URL": url}, check=False,
    )


async def users(url: str) -> dict[str, tuple[list[str], list[str], bool]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT handle, roles, teams, active FROM users")
    finally:
        await conn.close()
    return {r["handle"]: (sorted(r["roles"]), sorted(r["teams"]), r["active"]) for r in rows}


async def test_the_shipped_teams_file_makes_every_member_a_resolver(clean_db: str) -> None:
    done = sync(clean_db, ROOT / "config" / "teams.yaml")
    assert done.returncode == 0, done.stderr
    teams = yaml.safe_load((ROOT / "config" / "teams.yaml").read_text())["teams"]
    want: dict[str, set[str]] = {}
    for name, team in teams.items():
        for member in team.get("members") or []:
            want.setdefault(member["handle"], set()).add(name)
    assert want, "the shipped teams file should name members"
    got = await users(clean_db)
    assert {h: set(t) for h, (_, t, _) in got.items()} == want
    assert all(roles == ["resolver"] and active for roles, _, active in got.values())
    assert f"{len(want)} created" in done.stdout

    again = sync(clean_db, ROOT / "config" / "teams.yaml")
    assert again.returncode == 0 and f"0 created, 0 added to teams, {len(want)} unchanged" in (
        again.stdout
    )
    assert await users(clean_db) == got


async def test_existing_users_keep_what_admins_set_and_deactivated_ones_stay_so(
    clean_db: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(clean_db)
    try:
        await create_user(conn, "sue", "Sue", [Role.SUPERVISOR], teams=["billing"],
                          email="sue@example.com")
        await create_user(conn, "old", "Old", [Role.RESOLVER], teams=[])
        await conn.execute("UPDATE users SET active = false WHERE handle = 'old'")
    finally:
        await conn.close()
    teams = tmp_path / "teams.yaml"
    teams.write_text(yaml.safe_dump({"teams": {
        "support": {"slack_channel": "#support", "members": [
            {"handle": "sue", "region": "emea"}, {"handle": "old"}, {"handle": "new"}]},
        "billing": {"members": [{"handle": "sue"}]},
    }}))
    done = sync(clean_db, teams)
    assert done.returncode == 0, done.stderr
    assert "1 created, 1 added to teams, 0 unchanged" in done.stdout
    assert "deactivated, left so: old" in done.stderr
    assert await users(clean_db) == {
        "sue": (["supervisor"], ["billing", "support"], True),
        "old": (["resolver"], [], False),
        "new": (["resolver"], ["support"], True),
    }
    conn = await asyncpg.connect(clean_db)
    try:
        email = await conn.fetchval("SELECT email FROM users WHERE handle = 'sue'")
        audited = await conn.fetch("SELECT target FROM audit_log WHERE action = 'user.sync'")
    finally:
        await conn.close()
    assert email == "sue@example.com"
    assert sorted(r["target"] for r in audited) == ["user:new", "user:sue"]


async def test_a_file_that_is_not_a_teams_file_is_refused_with_the_reason(
    clean_db: str, tmp_path: Path
) -> None:
    bad = tmp_path / "teams.yaml"
    bad.write_text("teams:\n  support:\n    members: [{region: emea}]\n")
    done = sync(clean_db, bad)
    assert done.returncode == 2
    assert "is not a teams file" in done.stderr and "handle" in done.stderr
    bad.write_text("teams:\n  support:\n    members: [{handle: Emil}]\n")
    capital = sync(clean_db, bad)  # a handle the router and the API would never match
    assert capital.returncode == 2 and "handle" in capital.stderr
    missing = sync(clean_db, tmp_path / "nowhere.yaml")
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert await users(clean_db) == {}
