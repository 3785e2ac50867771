"""Run the four services as separate processes with readable, prefixed logs (`make up`).

SIGINT or SIGTERM stops them all: each gets SIGTERM (their graceful shutdown), and whatever
is still alive after the grace period gets SIGKILL, so nothing is left behind. Children are
also tied to this process with PR_SET_PDEATHSIG, so even a SIGKILL here takes them down.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

from casegate_case_store.settings import Settings as CaseStoreSettings

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
GRACE_S = 7.0
COLOURS = {"intake": 36, "case-store": 33, "router": 35, "notifier": 32}
SERVICES = {
    "intake": ("casegate-intake", "CASEGATE_INTAKE_PORT", 8080),
    "case-store": ("casegate-case-store", "CASEGATE_CASE_STORE_PORT", 8081),
    "router": ("casegate-router", "CASEGATE_ROUTER_PORT", 8082),
    "notifier": ("casegate-notifier", "CASEGATE_NOTIFIER_PORT", 8083),
}
PLAIN_KEYS = {"time", "level", "service", "logger", "msg", "correlation_id"}


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def pretty(name: str, line: str) -> str:
    """A JSON log line as `name | hh:mm:ss level msg key=value ...` (other lines as they are)."""
    tag = f"\033[{COLOURS[name]}m{name:<10}\033[0m|" if sys.stdout.isatty() else f"{name:<10}|"
    try:
        doc = json.loads(line)
    except ValueError:
        return f"{tag} {line}"
    if not isinstance(doc, dict):
        return f"{tag} {line}"
    extras = " ".join(f"{k}={v}" for k, v in doc.items() if k not in PLAIN_KEYS and k != "exc")
    cid = doc.get("correlation_id")
    out = f"{tag} {str(doc.get('time', ''))[11:19]} {doc.get('level', ''):<7} {doc.get('msg', '')}"
    out += f" {extras}" if extras else ""
    out += f" cid={str(cid)[:8]}" if cid else ""
    if "exc" in doc:
        out += "\n" + str(doc["exc"])
    return out


async def pump(name: str, stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        print(pretty(name, line.decode(errors="replace").rstrip()), flush=True)


def port_of(name: str) -> int:
    _, env, default = SERVICES[name]
    return int(os.environ.get(env, default))


def is_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def wait_ready(procs: dict[str, asyncio.subprocess.Process], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    pending = set(procs)
    while pending and time.monotonic() < deadline:
        if any(p.returncode is not None for p in procs.values()):
            return False
        ready = {n for n in pending if await asyncio.to_thread(is_ready, port_of(n))}
        pending -= ready
        await asyncio.sleep(0.3)
    return not pending


async def stop(procs: dict[str, asyncio.subprocess.Process]) -> None:
    for proc in procs.values():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs.values())), GRACE_S)
    except TimeoutError:
        for name, proc in procs.items():
            if proc.returncode is None:
                print(f"devstack: {name} did not stop in {GRACE_S:.0f}s, killing it", flush=True)
                proc.kill()
        await asyncio.gather(*(p.wait() for p in procs.values()))


async def main() -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stopping.set)
    parent = os.getppid()

    procs: dict[str, asyncio.subprocess.Process] = {}
    pumps = []
    # intake reaches case-store (tracking page, threading explain) wherever it was put.
    os.environ.setdefault("CASEGATE_CASE_STORE_URL", f"http://127.0.0.1:{port_of('case-store')}")
    # The router (workload for assignment) and the notifier (the delivery record, assignees'
    # addresses) read case-store's database: the one `make migrate` made, unless told another.
    os.environ.setdefault("CASEGATE_DATABASE_URL", CaseStoreSettings().database_url)
    for name, (script, _, _) in SERVICES.items():
        proc = await asyncio.create_subprocess_exec(
            str(BIN / script),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            # Own process group: a terminal's Ctrl-C reaches us, and we stop them in order.
            start_new_session=True,
        )
        procs[name] = proc
        assert proc.stdout is not None
        pumps.append(asyncio.create_task(pump(name, proc.stdout)))

    if await wait_ready(procs):
        intake = port_of("intake")
        print(
            f"\ncasegate is up: intake http://127.0.0.1:{intake}/webform, sandbox "
            f"http://127.0.0.1:{port_of('notifier')}/sandbox. Try:\n"
            f"  curl -s -X POST http://127.0.0.1:{intake}/v1/webform -H 'Content-Type: "
            "application/json' -d '{\"name\":\"Ada\",\"email\":\"ada@example.com\","
            "\"subject\":\"Refund for order 1234\",\"message\":\"I was charged twice.\"}'\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
    elif not stopping.is_set():
        print("devstack: a service did not become ready; see its log above", flush=True)
        stopping.set()

    async def watch() -> None:
        while not stopping.is_set():
            if os.getppid() != parent or any(p.returncode is not None for p in procs.values()):
                stopping.set()
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    await stopping.wait()
    died = [n for n, p in procs.items() if p.returncode is not None]
    print("devstack: stopping" + (f" ({', '.join(died)} exited)" if died else ""), flush=True)
    await stop(procs)
    watcher.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
    return 1 if died else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
