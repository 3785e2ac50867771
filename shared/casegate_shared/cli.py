"""`casegate`: the operator's command line.

Built-in commands cover the bus (`dlq list`, `dlq replay`, `schema`); each installed service
adds its own through the `casegate.cli` entry point group (a `register(subparsers)` function).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .bus import Bus
from .dlq import known_queues, list_parked, replay
from .events import ALL_PAYLOADS, Envelope
from .settings import BusSettings


async def _with_bus(fn: Callable[[Bus], Coroutine[Any, Any, int]]) -> int:
    bus = Bus(BusSettings(), source="casegate-cli")
    await bus.connect(timeout=10)
    try:
        return await fn(bus)
    finally:
        await bus.close()


def _dlq_list(args: argparse.Namespace) -> int:
    queues = args.queue or known_queues()

    async def run(bus: Bus) -> int:
        parked = await list_parked(bus, queues)
        if args.json:
            print(json.dumps([p.__dict__ for p in parked], indent=2))
        else:
            for p in parked:
                print(f"{p.queue}\t{p.message_id}\t{p.routing_key}\t{p.parked_at}\t{p.error}")
            print(f"{len(parked)} parked message(s) in {len(queues)} queue(s)", file=sys.stderr)
        return 0

    return asyncio.run(_with_bus(run))


def _dlq_replay(args: argparse.Namespace) -> int:
    ids = set(args.id) if args.id else None

    async def run(bus: Bus) -> int:
        count = await replay(bus, args.queue, ids)
        print(f"replayed {count} message(s) into {bus.queue_name(args.queue)}")
        return 0

    return asyncio.run(_with_bus(run))


def _schema(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for payload in ALL_PAYLOADS:
        name = payload.event_type.replace("{", "").replace("}", "")
        schema = Envelope[payload].model_json_schema()  # type: ignore[valid-type]
        schema["title"] = f"{payload.__name__} ({payload.event_type})"
        (out / f"{name}.json").write_text(json.dumps(schema, indent=2) + "\n")
    print(f"wrote {len(ALL_PAYLOADS)} schemas to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="casegate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    dlq = sub.add_parser("dlq", help="parked (dead-lettered) messages").add_subparsers(
        dest="dlq_command", required=True
    )
    ls = dlq.add_parser("list", help="list parked messages with their reasons")
    ls.add_argument("queue", nargs="*", help="queue short names (default: every known queue)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_dlq_list)
    rp = dlq.add_parser("replay", help="move parked messages back to their work queue")
    rp.add_argument("queue", help="queue short name, e.g. case-store.inbound")
    rp.add_argument("--id", action="append", help="only this message id (repeatable)")
    rp.set_defaults(func=_dlq_replay)

    schema = sub.add_parser("schema", help="write the JSON Schema of every event")
    schema.add_argument("--out", default="docs/schemas")
    schema.set_defaults(func=_schema)

    for ep in entry_points(group="casegate.cli"):
        try:
            ep.load()(sub)
        except Exception as exc:  # one broken plugin must not take every command down
            print(f"casegate: commands from {ep.value} unavailable: {exc}", file=sys.stderr)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
