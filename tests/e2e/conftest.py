"""The whole system as real processes: `scripts/devstack.py` (what `make up` runs) starts
the four services against this run's vhost, database and Redis, plus a real SMTP server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import TypeVar

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import ROOT, RUN_ID, delete_queues, free_port

RULES = """
rules:
  - name: billing
    when:
      keywords: [refund, invoice, charged]
    then: {team: billing, priority: P2}
default: {team: support, priority: P3}
"""


T = TypeVar("T")


async def wait_for(check: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """Poll `check` until it returns something truthy, and return that; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.1)


class Inbox:
    """aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 OK"


@dataclass
class Stack:
    env: dict[str, str]
    proc: subprocess.Popen[str]
    ports: dict[str, int]
    smtp: Inbox
    log: list[str] = field(default_factory=list)

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def stack_env(amqp_url: str, database_url: str, smtp_port: int | None, tmp: Path) -> dict[str, str]:
    tag = f"{RUN_ID}e2e{uuid.uuid4().hex[:6]}"
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    env = {
        **os.environ,
        "CASEGATE_AMQP_URL": amqp_url,
        "CASEGATE_BUS_EXCHANGE": f"t{tag}",
        "CASEGATE_BUS_PREFIX": f"t{tag}",
        "CASEGATE_BUS_RETRY_BASE_MS": "200",
        "CASEGATE_DATABASE_URL": database_url,
        "CASEGATE_REDIS_URL": "redis://127.0.0.1:6379/15",
        "CASEGATE_REDIS_PREFIX": f"t{tag}",
        "CASEGATE_RULES_FILE": str(rules),
        "CASEGATE_INTAKE_PORT": str(free_port()),
        "CASEGATE_CASE_STORE_PORT": str(free_port()),
        "CASEGATE_ROUTER_PORT": str(free_port()),
        "CASEGATE_NOTIFIER_PORT": str(free_port()),
    }
    if smtp_port is not None:
        env["CASEGATE_SMTP_URL"] = f"smtp://127.0.0.1:{smtp_port}"
    else:
        env.pop("CASEGATE_SMTP_URL", None)
    return env


def start_stack(env: dict[str, str], smtp: Inbox, timeout: float = 60) -> Stack:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/devstack.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ports = {
        name: int(env[f"CASEGATE_{name.upper().replace('-', '_')}_PORT"])
        for name in ("intake", "case-store", "router", "notifier")
    }
    stack = Stack(env, proc, ports, smtp)
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stack.log.append(line.rstrip())
            if line.startswith("casegate is up"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("stack did not come up:\n" + "\n".join(stack.log[-60:]), pytrace=False)
    return stack


def stop_stack(stack: Stack) -> float:
    """SIGTERM like Ctrl-C would; returns how long the whole stack took to stop. Then its
    queues go: a stack declares over a hundred quorum queues, and left idle until the run
    ends they slow the broker (and every test after) down."""
    started = time.monotonic()
    stack.proc.send_signal(signal.SIGTERM)
    try:
        stack.proc.wait(15)
    except subprocess.TimeoutExpired:
        stack.proc.kill()
    took = time.monotonic() - started
    with ThreadPoolExecutor(1) as worker:  # the caller's event loop may be running
        worker.submit(asyncio.run, delete_queues(stack.env["CASEGATE_AMQP_URL"],
                                                 stack.env["CASEGATE_BUS_PREFIX"])).result()
    return took


@pytest.fixture(scope="module")
def stack(
    amqp_url: str, database_url: str, smtp_server: tuple[Inbox, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    inbox, port = smtp_server
    env = stack_env(amqp_url, database_url, port, tmp_path_factory.mktemp("stack"))
    s = start_stack(env, inbox)
    yield s
    if s.proc.poll() is None:
        stop_stack(s)
