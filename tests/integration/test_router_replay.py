"""`casegate rules replay` against case-store's real PostgreSQL: stored cases decided again by a
changed rules file, a table and a JSON summary out, and the database left as it was."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson

from tests.conftest import ROOT

NEW_RULES = """\
rules:
  - name: refunds
    when: {keywords: [refund]}
    then: {team: refunds, priority: P2, sla_policy: premium}
  - name: acme
    when: {sender_domain: [acme.test]}
    then: {team: key-accounts, priority: P2}
  - name: sms
    when: {channel: [sms]}
    then: {team: mobile, priority: P3}
default: {team: support, priority: P3}
"""

# (ref, channel, subject, body, email, phone, routed team, priority, rule, sla noted, age in days)
STORED = [
    ("CS-REFN22", "email", "Refund please", "my order", "ada@example.com", None,
     "billing", "P2", "billing", "standard", 2),
    ("CS-ACME33", "webform", "Question", "hello", "bo@acme.test", None,
     "support", "P3", "default", "standard", 3),
    ("CS-SMS444", "sms", "", "are you open", None, "+4915112345678",
     "mobile", "P3", "sms", "standard", 4),
    ("CS-SAME55", "email", "Hi", "address change", "cy@example.com", None,
     "support", "P3", "default", "standard", 5),
    ("CS-OLD666", "email", "Refund", "old one", "di@example.com", None,
     "billing", "P2", "billing", "standard", 45),
]


async def seed(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        now = datetime.now(UTC)
        for i, (ref, channel, subject, body, email, phone, team, prio, rule, sla, age) in enumerate(STORED):
            customer = await conn.fetchval("INSERT INTO customers (name) VALUES ($1) RETURNING id", f"c{i}")
            for kind, value in (("email", email), ("phone", phone)):
                if value:
                    await conn.execute(
                        "INSERT INTO customer_identities (customer_id, kind, value) VALUES ($1, $2, $3)",
                        customer, kind, value,
                    )
            created = now - timedelta(days=age)
            case_id = await conn.fetchval(
                "INSERT INTO cases (ref, customer_id, channel, subject, description, status, priority, "
                "team, routed_by_rule, created_at) VALUES ($1, $2, $3, $4, $5, 'open', $6, $7, $8, $9) "
                "RETURNING id",
                ref, customer, channel, subject, body, prio, team, rule, created,
            )
            routed = {
                "team": team, "priority": prio, "rule": rule,
                "explanation": [{"rule": "@sla_policy", "matched": True, "reason": f"SLA policy {sla}"}],
            }
            await conn.execute(
                "INSERT INTO timeline_entries (case_id, kind, actor, visibility, body, data) "
                "VALUES ($1, 'routed', 'router', 'internal', 'routed', $2::jsonb)",
                case_id, orjson.dumps(routed).decode(),
            )
        # An agent moved this case later: the replay compares with the router's decision.
        await conn.execute("UPDATE cases SET team = 'moved-by-agent' WHERE ref = 'CS-SAME55'")
    finally:
        await conn.close()


async def snapshot(url: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT c.ref, c.team, c.priority, c.updated_at, (SELECT count(*) FROM timeline_entries t "
            "WHERE t.case_id = c.id) AS entries FROM cases c ORDER BY c.ref"
        )
        return [tuple(r) for r in rows]
    finally:
        await conn.close()


async def run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "casegate"), "rules", "replay", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_replay_reports_what_a_changed_file_would_route_differently(
    clean_db: str, tmp_path: Path
) -> None:
    await seed(clean_db)
    before = await snapshot(clean_db)
    rules = tmp_path / "new.yaml"
    rules.write_text(NEW_RULES)
    env = {**os.environ, "CASEGATE_DATABASE_URL": clean_db,
           "CASEGATE_SLA_FILE": str(ROOT / "config/sla.yaml")}

    code, out, err = await run(str(rules), "--since", "30d", env=env)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["case", "opened", "field", "was", "would", "be", "by", "rule"]
    rows = [line.split() for line in lines[2:6]]
    assert [(r[0], *r[3:]) for r in rows] == [  # oldest first; r[1:3] is when it was opened
        ("CS-ACME33", "team", "support", "key-accounts", "acme"),
        ("CS-ACME33", "priority", "P3", "P2", "acme"),
        ("CS-REFN22", "team", "billing", "refunds", "refunds"),
        ("CS-REFN22", "sla_policy", "standard", "premium", "refunds"),
    ]
    assert lines[6].startswith("2 of 4 cases since ")
    summary = json.loads(lines[-1])
    assert {k: v for k, v in summary.items() if k != "since"} == {
        "rules_version": summary["rules_version"],
        "examined": 4,
        "changed_cases": 2,
        "changed": {"team": 2, "priority": 1, "sla_policy": 1},
        "moves": [
            {"field": "priority", "from": "P3", "to": "P2", "cases": 1},
            {"field": "sla_policy", "from": "standard", "to": "premium", "cases": 1},
            {"field": "team", "from": "billing", "to": "refunds", "cases": 1},
            {"field": "team", "from": "support", "to": "key-accounts", "cases": 1},
        ],
        "sla_policy_not_recorded": 0,
    }
    assert await snapshot(clean_db) == before  # read-only: nothing changed

    code, out, _ = await run(str(rules), "--since", "60d", "--json", env=env)
    assert code == 0
    assert json.loads(out)["examined"] == 5 and len(out.splitlines()) == 1

    baseline = tmp_path / "same.yaml"
    baseline.write_text(NEW_RULES)
    code, out, _ = await run(str(rules), "--baseline", str(baseline), "--json", env=env)
    assert (code, json.loads(out)["changed_cases"]) == (0, 0)


async def test_replay_refuses_what_it_cannot_use(clean_db: str, tmp_path: Path) -> None:
    rules = tmp_path / "bad.yaml"
    rules.write_text(NEW_RULES.replace("P2", "P7", 1))
    env = {**os.environ, "CASEGATE_DATABASE_URL": clean_db,
           "CASEGATE_SLA_FILE": str(ROOT / "config/sla.yaml")}
    code, out, err = await run(str(rules), env=env)
    assert (code, out) == (1, "")
    assert err.startswith(f"{rules}:4: rules[0].then.priority")

    code, _, err = await run(str(rules), "--since", "a month", env=env)
    assert (code, err.strip()) == (2, "expected a period such as 30d, 12h, 2w or 90m, got 'a month'")

    env_without = {k: v for k, v in env.items() if k != "CASEGATE_DATABASE_URL"}
    code, _, err = await run(str(rules), env=env_without)
    assert (code, err.strip()) == (2, "no database: set CASEGATE_DATABASE_URL or pass --database-url")

    rules.write_text(NEW_RULES)
    code, _, err = await run(
        str(rules), "--database-url", "postgresql://postgres@127.0.0.1:1/none", env=env
    )
    assert code == 2 and err.startswith("cannot read the cases:")
