"""`casegate rules check|replay`: validate policy files the way the router does at start, and
replay stored cases against a changed rules file.

`check FILE` validates a rules file alone; with `--sla` (and `--teams`) it also checks the
names the rules use against the SLA file, as the router does. `replay NEW_FILE --since 30d`
reads case-store's database read-only (CASEGATE_DATABASE_URL or --database-url) and prints a
table of the cases that would have gone to another team, priority or SLA policy, then a JSON
summary as the last line. It changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .domain import RuleSet, RulesError, load_rules
from .domain.loader import load_sla, load_teams
from .domain.policies import rules_context
from .domain.replay import StoredCase, parse_since, replay, table
from .settings import Settings


def _check(args: argparse.Namespace) -> int:
    try:
        context: dict[str, Any] | None = None
        sla = None
        if args.sla is not None:
            sla = load_sla(args.sla)
            context = rules_context(sla)
        ruleset = load_rules(args.file, context)
        teams = None
        if args.teams is not None:
            teams = load_teams(args.teams, {"regions": sla.regions} if sla else None)
    except RulesError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"ok: {len(ruleset.rules)} rules")
    if sla is not None:
        print(f"ok: {len(sla.policies)} SLA policies, {len(sla.regions)} regions")
    if teams is not None:
        print(f"ok: {len(teams.teams)} teams")
    return 0


async def _stored(url: str, since: datetime) -> list[StoredCase]:
    from .adapters.case_history import stored_cases  # asyncpg: only this command needs it

    return [case async for case in stored_cases(url, since)]


def _replay(args: argparse.Namespace) -> int:
    settings = Settings()
    url = args.database_url or settings.database_url
    if not url:
        print("no database: set CASEGATE_DATABASE_URL or pass --database-url", file=sys.stderr)
        return 2
    try:
        window = parse_since(args.since)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        sla = load_sla(args.sla or settings.sla_file)
        context = rules_context(sla)
        rules = load_rules(args.file, context)
        baseline: RuleSet | None = load_rules(args.baseline, context) if args.baseline else None
    except RulesError as exc:
        print(exc, file=sys.stderr)
        return 1
    since = datetime.now(UTC) - window
    try:
        cases = asyncio.run(_stored(url, since))
    except Exception as exc:  # asyncpg, OSError, timeouts: all mean the same here
        print(f"cannot read the cases: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    changes, summary = replay(cases, rules, baseline)
    if not args.json:
        if changes:
            print(table(changes))
        print(
            f"{summary.changed_cases} of {summary.examined} cases since "
            f"{since:%Y-%m-%d %H:%M} UTC would be routed differently"
        )
    print(json.dumps({"since": since.isoformat(), **summary.as_json()}, sort_keys=True))
    return 0


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    rules = subparsers.add_parser("rules", help="routing rules").add_subparsers(
        dest="rules_command", required=True
    )
    check = rules.add_parser("check", help="validate a rules file; errors name file and line")
    check.add_argument("file", type=Path)
    check.add_argument("--sla", type=Path, help="also check it against this SLA file")
    check.add_argument("--teams", type=Path, help="and validate this teams file")
    check.set_defaults(func=_check)

    rp = rules.add_parser(
        "replay", help="which stored cases a changed rules file would route differently"
    )
    rp.add_argument("file", type=Path, help="the changed rules file")
    rp.add_argument("--since", default="30d", help="how far back: 30d, 12h, 2w (default 30d)")
    rp.add_argument("--baseline", type=Path, help="compare with this rules file, not the record")
    rp.add_argument("--sla", type=Path, help="SLA file (default: CASEGATE_SLA_FILE)")
    rp.add_argument("--database-url", help="default: CASEGATE_DATABASE_URL")
    rp.add_argument("--json", action="store_true", help="only the JSON summary")
    rp.set_defaults(func=_replay)
