"""Routing and SLA arithmetic throughput, in one process, with no broker or database.

1. Decisions per second for a generated rules file of 200 rules, heavy on keywords and
   regular expressions, where most messages fall through to the default (the dearest case:
   every rule is tried).
2. The SLA sweeper's pure math: due and warning times (both clocks) for 100,000 open cases
   spread over four regions, priorities and the last 30 days.

Prints its figures and, as its last line, one JSON object.

    .venv/bin/python bench/routing.py [--rules 200] [--messages 3000] [--cases 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from casegate_router.domain import Message, decide, parse_rules
from casegate_router.domain.loader import load_sla
from casegate_router.domain.policies import rules_context
from casegate_router.domain.sla import due_times, warning_at
from casegate_shared.events import Channel, Priority

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "account address app billing cancel card change charge contract customer delivery device "
    "email error help invoice issue login mobile network order package password payment plan "
    "price problem question refund reset service shipping signal status subscription support "
    "ticket update upgrade user warranty website".split()
)


def generated_rules(count: int, seed: int) -> str:
    rng = random.Random(seed)
    rules = []
    for i in range(count):
        when: dict[str, object] = {"keywords": [f"kw{i}x{j}" for j in range(8)]}
        kind = i % 4
        if kind == 1:
            when["subject_regex"] = rf"(?i)\border[- ]?{i}\b"
        elif kind == 2:
            when["body_regex"] = rf"ref[- ]?{i:04d}-\d{{3}}"
            when.pop("keywords")
            when["any"] = [{"keywords": [f"kw{i}y", "never-here"]}, {"channel": ["sms"]}]
        elif kind == 3:
            when["not"] = {"subject_regex": rf"^Re: list {i}\b"}
            when["channel"] = [rng.choice(["email", "chat", "webform"])]
        then = {"team": f"team-{i % 17}", "priority": rng.choice(["P1", "P2", "P3"])}
        rules.append({"name": f"rule-{i}", "when": when, "then": then})
    return yaml.safe_dump({"rules": rules, "default": {"team": "support", "priority": "P3"}})


def messages(count: int, seed: int) -> list[tuple[Channel, str, str]]:
    rng = random.Random(seed)
    channels = [Channel.EMAIL, Channel.EMAIL, Channel.WEBFORM, Channel.CHAT, Channel.SMS]
    out = []
    for _ in range(count):
        subject = " ".join(rng.choices(WORDS, k=rng.randint(2, 8)))
        body = " ".join(rng.choices(WORDS, k=rng.randint(20, 300)))
        if rng.random() < 0.1:
            body += f" kw{rng.randrange(200)}x{rng.randrange(8)}"
        out.append((rng.choice(channels), subject, body))
    return out


def bench_routing(rule_count: int, message_count: int) -> dict[str, float]:
    sla = load_sla(ROOT / "config/sla.yaml")
    started = time.perf_counter()
    rules = parse_rules(generated_rules(rule_count, 1), context=rules_context(sla))
    load_s = time.perf_counter() - started
    sample = messages(message_count, 2)
    at = datetime(2025, 1, 6, 10, tzinfo=UTC)
    started = time.perf_counter()
    defaults = 0
    for channel, subject, body in sample:
        decision = decide(rules, Message(channel, subject, body, at=at))
        defaults += decision.rule == "default"
    elapsed = time.perf_counter() - started
    return {
        "rules": rule_count,
        "rules_load_ms": round(load_s * 1000, 1),
        "decisions": message_count,
        "decisions_per_s": round(message_count / elapsed, 1),
        "ms_per_decision": round(elapsed / message_count * 1000, 3),
        "fell_to_default": round(defaults / message_count, 3),
    }


def bench_sweeper(case_count: int) -> dict[str, float]:
    sla = load_sla(ROOT / "config/sla.yaml")
    rng = random.Random(3)
    now = datetime(2025, 3, 28, 12, tzinfo=UTC)  # a DST weekend ahead in Europe and behind in NZ
    regions = list(sla.regions.values())
    policies = list(sla.policies.values())
    cases = [
        (rng.choice(policies), rng.choice(list(Priority)), rng.choice(regions),
         now - timedelta(minutes=rng.randrange(30 * 24 * 60)))
        for _ in range(case_count)
    ]
    started = time.perf_counter()
    for policy, priority, region, opened in cases:
        due_times(policy, priority, region, opened)
        warning_at(policy, priority, region, opened, "first_response")
        warning_at(policy, priority, region, opened, "resolution")
    elapsed = time.perf_counter() - started
    return {
        "open_cases": case_count,
        "sweep_s": round(elapsed, 2),
        "cases_per_s": round(case_count / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--cases", type=int, default=100_000)
    args = parser.parse_args()

    routing = bench_routing(args.rules, args.messages)
    print(f"routing: {routing['rules']} rules loaded in {routing['rules_load_ms']} ms; "
          f"{routing['decisions_per_s']} decisions/s ({routing['ms_per_decision']} ms each, "
          f"{routing['fell_to_default']:.0%} fell through to the default)")
    sweeper = bench_sweeper(args.cases)
    print(f"sweeper: due and warning times for {sweeper['open_cases']} open cases in "
          f"{sweeper['sweep_s']} s ({sweeper['cases_per_s']} cases/s)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")
    print(json.dumps({"routing": routing, "sweeper": sweeper, "peak_rss_mb": round(peak_mb, 1)}))


if __name__ == "__main__":
    main()
