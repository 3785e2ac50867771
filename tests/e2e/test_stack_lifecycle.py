"""`make up`'s supervisor: with no provider configured the acknowledgement lands in the
sandbox, and SIGTERM stops every service within 10 seconds, leaving nothing behind.

Its own module, so that it never shares the database with another running stack (two
case-store relays on one database would publish each other's events to their own bus)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp

from .conftest import Inbox, start_stack, stack_env, stop_stack
from .test_webform_flow import post_form, wait_for


async def test_sandbox_is_the_default_and_sigterm_stops_everything(
    amqp_url: str, database_url: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    stack = start_stack(stack_env(amqp_url, database_url, None, tmp_path), Inbox())
    try:
        status, body = await post_form(
            stack, name="Grace", email="grace@example.com", subject="Hello", message="Hi there"
        )
        assert status == 202
        ref = body["ref"]

        async def in_sandbox() -> list[dict[str, object]]:
            async with aiohttp.ClientSession() as http:
                async with http.get(stack.url("notifier", "/sandbox/messages")) as resp:
                    return [m for m in await resp.json() if m["case_ref"] == ref]

        try:
            [msg] = await wait_for(in_sandbox)
        except AssertionError:
            raise AssertionError("no acknowledgement:\n" + "\n".join(stack.log[-40:])) from None
        assert msg["to"] == "grace@example.com" or "grace@example.com" in str(msg["to"])
        assert ref in str(msg["subject"])
    finally:
        took = stop_stack(stack)
    assert took < 10, f"stack took {took:.1f}s to stop"
    assert stack.proc.returncode == 0, "\n".join(stack.log[-30:])
    marker = f"CASEGATE_BUS_PREFIX={stack.env['CASEGATE_BUS_PREFIX']}".encode()
    assert not processes_with(marker), "service processes survived the stop"
    for port in stack.ports.values():
        probe = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
        assert not probe.stdout.strip(), f"something still listens on {port}"


def processes_with(marker: bytes) -> list[int]:
    """Pids whose environment holds `marker` (our children carry the run's bus prefix)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found
