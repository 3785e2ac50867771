"""End to end: a web form through intake, case-store, router and notifier, each a real
process, to a case row routed by the rules file and an acknowledgement at a real SMTP server."""

from __future__ import annotations

import re

import aiohttp
import asyncpg

from casegate_shared.events import CASE_REF_PATTERN

from .conftest import Stack, wait_for


async def post_form(stack: Stack, **fields: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(stack.url("intake", "/v1/webform"), json=fields) as resp:
            return resp.status, await resp.json()


async def test_webform_becomes_a_routed_case_and_an_acknowledgement(stack: Stack) -> None:
    status, body = await post_form(
        stack,
        name="Ada Lovelace",
        email="ada@example.com",
        subject="Refund for order 1234",
        message="I was charged twice for my order.",
    )
    assert status == 202, body
    ref = str(body["ref"])
    assert re.fullmatch(CASE_REF_PATTERN, ref)

    db = await asyncpg.connect(stack.env["CASEGATE_DATABASE_URL"])
    try:
        async def routed() -> asyncpg.Record | None:
            return await db.fetchrow(
                "SELECT ref, team, priority, status FROM cases WHERE ref = $1 AND team IS NOT NULL",
                ref,
            )

        case = await wait_for(routed)
        assert (case["team"], case["priority"]) == ("billing", "P2")
        kinds = [
            r["kind"]
            for r in await db.fetch(
                "SELECT t.kind FROM timeline_entries t JOIN cases c ON c.id = t.case_id "
                "WHERE c.ref = $1 ORDER BY t.id",
                ref,
            )
        ]
        assert kinds[0] == "message_in"
        assert "routed" in kinds
    finally:
        await db.close()

    async def acknowledged() -> list[object]:
        return [m for m in stack.smtp.messages if ref in str(m["Subject"])]

    [ack] = await wait_for(acknowledged)
    assert ack["To"] == "Ada Lovelace <ada@example.com>"
    assert f"[{ref}]" in str(ack["Subject"])


async def test_every_service_reports_ready_and_serves_metrics(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        for service in ("intake", "case-store", "router", "notifier"):
            async with http.get(stack.url(service, "/readyz")) as resp:
                assert resp.status == 200, (service, await resp.text())
            async with http.get(stack.url(service, "/metrics")) as resp:
                assert resp.status == 200
                assert "casegate_" in await resp.text()
