"""`casegate rules check FILE`: validate a rules file the way the router does at start."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .domain import RulesError, load_rules


def _check(args: argparse.Namespace) -> int:
    try:
        ruleset = load_rules(args.file)
    except RulesError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"ok: {len(ruleset.rules)} rules")
    return 0


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    rules = subparsers.add_parser("rules", help="routing rules").add_subparsers(
        dest="rules_command", required=True
    )
    check = rules.add_parser("check", help="validate a rules file; errors name file and line")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_check)
