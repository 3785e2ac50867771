"""The agent API over real HTTP against a running case-store (real PostgreSQL and RabbitMQ):
authentication and roles, object-level access, every action writing its timeline entry,
audit row and event, tracking without internal entries, customer merge/export/erase checked
in the database, reports, attachments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from tests.conftest import eventually
from tests.integration.test_case_store_service import Observer, running
from tests.support.bus_events import published

from casegate_case_store.settings import Settings
from casegate_case_store.store.users import Role, create_token, create_user
from casegate_shared.settings import BusSettings

Json = dict[str, Any]


class Client:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base, self.session = base, session

    async def call(
        self, method: str, path: str, token: str | None = None, json: Any = None,
        **kw: Any,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kw.pop("headers", {}))
        async with self.session.request(
            method, self.base + path, json=json, headers=headers, **kw
        ) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.read()


@pytest.fixture
def settings(bus_settings: BusSettings, clean_db: str, tmp_path: Any) -> Settings:
    from tests.conftest import free_port

    return Settings(
        **bus_settings.model_dump(), database_url=clean_db, case_store_port=free_port(),
        blob_dir=str(tmp_path / "blobs"), attachment_max_bytes=4096,
    )


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[web.Application]:
    async with running(settings) as app:
        yield app


@pytest.fixture
async def client(service: web.Application, settings: Settings) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(f"http://127.0.0.1:{settings.case_store_port}", session)


@pytest.fixture
async def db(clean_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(clean_db)
    yield conn
    await conn.close()


async def token_for(db: asyncpg.Connection, handle: str, *roles: Role, teams: list[str] | None = None,
                    slack_user: str | None = None) -> str:
    user_id = await create_user(db, handle, handle.title(), list(roles), teams=teams,
                                slack_user=slack_user)
    _, token = await create_token(db, user_id, "test")
    return token


@pytest.fixture
async def tokens(db: asyncpg.Connection) -> dict[str, str]:
    return {
        "creator": await token_for(db, "cora", Role.CREATOR, teams=["billing"]),
        "resolver": await token_for(db, "remy", Role.RESOLVER, teams=["billing"]),
        "outsider": await token_for(db, "otto", Role.RESOLVER, teams=["shipping"]),
        "supervisor": await token_for(db, "sue", Role.SUPERVISOR),
        "admin": await token_for(db, "ada", Role.ADMIN),
    }


NEW_CASE = {
    "customer": {"name": "Dana Smith", "email": "dana@example.com"},
    "subject": "Invoice twice",
    "description": "I was charged twice for order 1234.",
}


async def new_case(client: Client, tokens: dict[str, str]) -> Json:
    status, body = await client.call("POST", "/v1/cases", tokens["creator"], NEW_CASE)
    assert status == 201, body
    status, _ = await client.call(
        "POST", f"/v1/cases/{body['ref']}/assignment", tokens["supervisor"], {"team": "billing"}
    )
    assert status == 200
    return body


# --- authentication and roles ----------------------------------------------------------


async def test_missing_or_wrong_token_is_401_with_a_reason(client: Client) -> None:
    status, body = await client.call("GET", "/v1/cases")
    assert status == 401 and body["error"] == "unauthenticated"
    status, body = await client.call("GET", "/v1/cases", "cg_not-a-real-token")
    assert status == 401 and "unknown" in body["reason"]
    status, _ = await client.call("GET", "/v1/cases", headers={"Authorization": "Basic eDp5"})
    assert status == 401


async def test_a_revoked_token_stops_working(
    client: Client, tokens: dict[str, str], db: asyncpg.Connection
) -> None:
    status, made = await client.call("POST", "/v1/users/remy/tokens", tokens["admin"],
                                     {"name": "laptop"})
    assert status == 201 and made["token"].startswith("cg_")
    assert (await client.call("GET", "/v1/cases", made["token"]))[0] == 200
    stored = await db.fetchval("SELECT token_hash FROM api_tokens WHERE id = $1", made["id"])
    assert made["token"] not in stored  # only the hash is kept
    assert (await client.call("DELETE", f"/v1/tokens/{made['id']}", tokens["admin"]))[0] == 200
    assert (await client.call("GET", "/v1/cases", made["token"]))[0] == 401


async def test_a_resolver_gives_back_only_their_own_case(
    client: Client, tokens: dict[str, str], db: asyncpg.Connection
) -> None:
    case = await new_case(client, tokens)
    ref = case["ref"]
    status, _ = await client.call("POST", f"/v1/cases/{ref}/assignment", tokens["supervisor"],
                                  {"assignee": "sue"})
    assert status == 200
    # remy sees the case (billing) but it is sue's: he may not take it off her.
    status, body = await client.call("POST", f"/v1/cases/{ref}/assignment", tokens["resolver"],
                                     {"unassign": True})
    assert status == 403 and "assigned to someone else" in body["reason"]
    # Nor claim it for himself first (and then give it back).
    status, body = await client.call("POST", f"/v1/cases/{ref}/assignment", tokens["resolver"],
                                     {"assignee": "remy"})
    assert status == 403 and "a supervisor can move it" in body["reason"]
    assert await db.fetchval("SELECT u.handle FROM cases c JOIN users u ON u.id = c.assignee_id "
                             "WHERE c.ref = $1", ref) == "sue"
    # A case remy holds, remy may give back.
    await db.execute("UPDATE cases SET assignee_id = (SELECT id FROM users WHERE handle = "
                     "'remy') WHERE ref = $1", ref)
    status, body = await client.call("POST", f"/v1/cases/{ref}/assignment", tokens["resolver"],
                                     {"unassign": True})
    assert status == 200, body
    assert await db.fetchval("SELECT assignee_id FROM cases WHERE ref = $1", ref) is None


ROLE_MATRIX: list[tuple[str, str, Json | None, set[str]]] = [
    ("GET", "/v1/cases", None, {"creator", "resolver", "supervisor", "admin"}),
    ("POST", "/v1/cases", NEW_CASE, {"creator", "supervisor", "admin"}),
    ("POST", "/v1/cases/{ref}/replies", {"body": "On it"},
     {"creator", "resolver", "supervisor", "admin"}),
    ("POST", "/v1/cases/{ref}/status", {"status": "on_hold", "reason_code": "in_progress"},
     {"resolver", "supervisor", "admin"}),
    ("POST", "/v1/cases/{ref}/priority", {"priority": "P1"}, {"resolver", "supervisor", "admin"}),
    ("POST", "/v1/cases/{ref}/merge", {"into": "CS-222222"}, {"supervisor", "admin"}),
    ("POST", "/v1/cases/{ref}/participants", {"users": ["sue"]},
     {"creator", "resolver", "supervisor", "admin"}),
    ("POST", "/v1/cases/{ref}/participants", {"users": ["sue"], "role": "owner"},
     {"supervisor", "admin"}),
    ("GET", "/v1/customers/1", None, {"supervisor", "admin"}),
    ("POST", "/v1/customers/1/erase", None, {"admin"}),
    ("GET", "/v1/reports/summary", None, {"supervisor", "admin"}),
    ("POST", "/v1/reason-codes", {"code": "dup_{role}", "label": "Dup"}, {"admin"}),
    ("GET", "/v1/users", None, {"supervisor", "admin"}),
]


@pytest.mark.parametrize(("method", "path", "body", "allowed"), ROLE_MATRIX)
async def test_each_role_is_allowed_or_refused_with_403(
    client: Client, tokens: dict[str, str], method: str, path: str, body: Json | None,
    allowed: set[str],
) -> None:
    case = await new_case(client, tokens)
    for role in ("creator", "resolver", "supervisor", "admin"):
        fresh = await new_case(client, tokens)  # each role acts on a case of its own
        url = path.replace("{ref}", fresh["ref"] if "merge" not in path else case["ref"])
        payload = None if body is None else {
            k: (v.replace("{role}", role) if isinstance(v, str) else v) for k, v in body.items()
        }
        status, answer = await client.call(method, url, tokens[role], payload)
        if role in allowed:
            assert status not in (401, 403), (role, url, answer)
        else:
            assert status == 403, (role, url, status, answer)
            assert answer["error"] == "forbidden"


async def test_agents_see_only_their_teams_cases(client: Client, tokens: dict[str, str]) -> None:
    case = await new_case(client, tokens)
    ref = case["ref"]
    assert (await client.call("GET", f"/v1/cases/{ref}", tokens["resolver"]))[0] == 200
    # Another team's agent: the case does not exist for them, in reads and in writes.
    assert (await client.call("GET", f"/v1/cases/{ref}", tokens["outsider"]))[0] == 404
    status, _ = await client.call("POST", f"/v1/cases/{ref}/notes", tokens["outsider"],
                                  {"body": "peek"})
    assert status == 404
    _, listing = await client.call("GET", "/v1/cases", tokens["outsider"])
    assert listing["items"] == []
    _, listing = await client.call("GET", "/v1/cases", tokens["supervisor"])
    assert [c["ref"] for c in listing["items"]] == [ref]


# --- actions ---------------------------------------------------------------------------


async def test_actions_write_timeline_audit_and_events(
    client: Client, tokens: dict[str, str], db: asyncpg.Connection, bus_settings: BusSettings
) -> None:
    observer = Observer(bus_settings, ["case.*"])
    await observer.start()
    try:
        ref = (await new_case(client, tokens))["ref"]
        await observer.take(2)  # case.opened, case.assigned
        steps: list[tuple[str, Json, str]] = [
            ("replies", {"body": "We refunded the second charge."}, "case.reply_added"),
            ("notes", {"body": "Customer is a reseller, be nice"}, "case.note_added"),
            ("assignment", {"assignee": "remy"}, "case.assigned"),
            ("priority", {"priority": "P2"}, "case.priority_changed"),
            ("participants", {"users": ["sue"]}, "case.participants_changed"),
            ("status", {"status": "resolved", "reason_code": "completed"}, "case.status_changed"),
        ]
        for action, body, event_type in steps:
            status, done = await client.call("POST", f"/v1/cases/{ref}/{action}",
                                             tokens["supervisor"], body)
            assert status in (200, 201), (action, done)
            (event,) = await observer.take()
            assert event["type"] == event_type
            assert event["data"]["entry_id"] == done["entry_id"]
            assert event["data"]["case"]["ref"] == ref
        assert event["data"]["case"]["status"] == "resolved"
        assert event["data"]["case"]["assignee"] == "remy"
        assert [p["user"] for p in event["data"]["case"]["participants"]] == ["cora", "sue"]
    finally:
        await observer.close()

    _, detail = await client.call("GET", f"/v1/cases/{ref}", tokens["supervisor"])
    kinds = [e["kind"] for e in detail["timeline"]]
    assert kinds == ["message_in", "assignment", "reply", "note", "assignment", "priority",
                     "participant", "status"]
    assert detail["status"] == "resolved" and detail["reason_code"] == "completed"
    audited = await db.fetch("SELECT action FROM audit_log WHERE target = $1 ORDER BY id", ref)
    assert [a["action"] for a in audited] == [
        "case.create", "case.assign", "case.reply", "case.note", "case.assign",
        "case.priority", "case.participants", "case.status",
    ]
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await db.execute("DELETE FROM audit_log")
    # A resolved case may reopen, never go to on_hold directly; the reason must exist.
    status, body = await client.call("POST", f"/v1/cases/{ref}/status", tokens["resolver"],
                                     {"status": "on_hold", "reason_code": "in_progress"})
    assert status == 409 and "cannot become" in body["reason"]
    status, body = await client.call("POST", f"/v1/cases/{ref}/status", tokens["resolver"],
                                     {"status": "open", "reason_code": "no_such_code"})
    assert status == 422


async def test_tracking_shows_the_public_timeline_only_and_refuses_other_tokens(
    client: Client, tokens: dict[str, str], db: asyncpg.Connection, bus_settings: BusSettings
) -> None:
    mine = await new_case(client, tokens)
    theirs = await new_case(client, tokens)
    ref = mine["ref"]
    await client.call("POST", f"/v1/cases/{ref}/replies", tokens["resolver"], {"body": "Refunded"})
    await client.call("POST", f"/v1/cases/{ref}/notes", tokens["resolver"], {"body": "SECRET"})
    status, view = await client.call("GET", f"/v1/track/{ref}?token={mine['tracking_token']}")
    assert status == 200
    bodies = [e["body"] for e in view["timeline"]]
    assert "Refunded" in bodies and not any("SECRET" in b for b in bodies)
    assert [e["kind"] for e in view["timeline"]] == ["message_in", "reply"]
    status, _ = await client.call("GET", f"/v1/track/{ref}?token={theirs['tracking_token']}")
    assert status == 404
    assert (await client.call("GET", f"/v1/track/{ref}?token=guess"))[0] == 404
    async with published(bus_settings, "case.contact_changed") as changed:
        status, prefs = await client.call(
            "PATCH", f"/v1/track/{ref}/preferences?token={mine['tracking_token']}",
            json={"preferred_channel": "sms", "quiet_start": "21:00", "quiet_end": "08:00",
                  "timezone": "Europe/Berlin", "opt_out": ["email"]},
        )
        assert status == 200, prefs
        # Both cases are this customer's: each card must learn where a reply goes now.
        async def both() -> bool:
            return len(changed) == 2

        await eventually(both)
    assert prefs["preferred_channel"] == "sms" and prefs["opted_out"] == ["email"]
    assert (prefs["quiet_start"], prefs["timezone"]) == ("21:00", "Europe/Berlin")
    assert sorted(e["data"]["ref"] for e in changed) == sorted([ref, theirs["ref"]])
    customer = changed[0]["data"]["case"]["customer"]
    assert customer["preferred_channel"] == "sms" and customer["opted_out"] == ["email"]
    assert await db.fetchval(
        "SELECT count(*) FROM timeline_entries WHERE kind = 'delivery' AND visibility = "
        "'internal' AND body = 'Customer changed their notification preferences'") == 2
    # The same preferences again change nothing, so nothing is announced.
    status, same = await client.call(
        "PATCH", f"/v1/track/{ref}/preferences?token={mine['tracking_token']}",
        json={"preferred_channel": "sms", "opt_out": ["email"]})
    assert status == 200 and same == prefs
    assert await db.fetchval(
        "SELECT count(*) FROM timeline_entries WHERE body = "
        "'Customer changed their notification preferences'") == 2
    status, _ = await client.call(
        "PATCH", f"/v1/track/{ref}/preferences?token={mine['tracking_token']}",
        json={"timezone": "Mars/Olympus"},
    )
    assert status == 422
    status, prefs = await client.call(
        "PATCH", f"/v1/track/{ref}/preferences?token={mine['tracking_token']}",
        json={"quiet_hours_off": True},
    )
    assert status == 200 and prefs["quiet_start"] is None
    status, read = await client.call(
        "GET", f"/v1/track/{ref}/preferences?token={mine['tracking_token']}"
    )
    assert status == 200 and read == prefs
    status, _ = await client.call(
        "GET", f"/v1/track/{ref}/preferences?token={theirs['tracking_token']}"
    )
    assert status == 404


# --- customers -------------------------------------------------------------------------


async def test_customer_merge_export_and_erase(
    client: Client, tokens: dict[str, str], db: asyncpg.Connection, settings: Settings
) -> None:
    first = await new_case(client, tokens)
    other = dict(NEW_CASE, customer={"name": "D. Smith", "phone": "+4915112345678"})
    _, second = await client.call("POST", "/v1/cases", tokens["creator"], other)
    owner = "SELECT customer_id FROM cases WHERE ref = $1"
    keep = await db.fetchval(owner, first["ref"])
    dup = await db.fetchval(owner, second["ref"])
    assert keep != dup
    status, merged = await client.call("POST", f"/v1/customers/{keep}/merge",
                                       tokens["supervisor"], {"duplicate": dup})
    assert status == 200, merged
    assert {i["kind"] for i in merged["identities"]} == {"email", "phone"}
    assert {c["ref"] for c in merged["cases"]} == {first["ref"], second["ref"]}
    assert await db.fetchval("SELECT merged_into FROM customers WHERE id = $1", dup) == keep

    status, exported = await client.call("GET", f"/v1/customers/{keep}/export",
                                         tokens["supervisor"])
    assert status == 200
    assert {i["value"] for i in exported["identities"]} == {"dana@example.com", "+4915112345678"}
    assert any("charged twice" in e["body"] for c in exported["cases"] for e in c["timeline"])

    status, upload = await client.call(
        "POST", f"/v1/cases/{first['ref']}/attachments?filename=invoice.pdf",
        tokens["supervisor"], data=b"%PDF-1.4 personal invoice",
        headers={"Content-Type": "application/pdf"},
    )
    assert status == 201 and upload["content_type"] == "application/pdf"
    status, erased = await client.call("POST", f"/v1/customers/{keep}/erase", tokens["admin"])
    assert status == 200 and erased["erased"] and erased["identities"] == []
    assert await db.fetchval("SELECT count(*) FROM customer_identities WHERE customer_id = $1",
                             keep) == 0
    texts = await db.fetch(
        "SELECT c.subject, t.body FROM cases c JOIN timeline_entries t ON t.case_id = c.id "
        "WHERE c.customer_id = $1 AND t.kind = 'message_in'", keep,
    )
    assert texts and all(r["subject"] == "[erased]" == r["body"] for r in texts)
    # Statistics survive: the cases are still there with their status and channel.
    assert await db.fetchval("SELECT count(*) FROM cases WHERE customer_id = $1", keep) == 2
    assert not list(Path(settings.blob_dir).rglob(upload["sha256"]))  # the file is gone too


# --- reports and attachments ---------------------------------------------------------------


async def test_report_summary_as_json_and_csv(client: Client, tokens: dict[str, str]) -> None:
    ref = (await new_case(client, tokens))["ref"]
    await new_case(client, tokens)
    await client.call("POST", f"/v1/cases/{ref}/replies", tokens["resolver"], {"body": "Hi"})
    await client.call("POST", f"/v1/cases/{ref}/status", tokens["resolver"],
                      {"status": "resolved", "reason_code": "completed"})
    status, summary = await client.call("GET", "/v1/reports/summary", tokens["supervisor"])
    assert status == 200
    assert summary["total"] == 2 and summary["backlog"] == 1
    assert summary["by_status"] == {"open": 1, "resolved": 1}
    assert summary["by_team"] == {"billing": 2}
    assert summary["first_response_median_s"] is not None
    status, csv = await client.call("GET", "/v1/reports/summary?format=csv", tokens["supervisor"])
    assert status == 200 and b"by_status,resolved,1" in csv


async def test_attachments_stream_in_and_out_with_a_size_limit(
    client: Client, tokens: dict[str, str]
) -> None:
    ref = (await new_case(client, tokens))["ref"]
    payload = bytes(range(256)) * 8
    status, info = await client.call(
        "POST", f"/v1/cases/{ref}/attachments?filename=blob.bin", tokens["resolver"],
        data=payload, headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 201 and info["size"] == len(payload)
    status, back = await client.call("GET", f"/v1/cases/{ref}/attachments/{info['id']}",
                                     tokens["resolver"])
    assert status == 200 and back == payload
    status, body = await client.call(
        "POST", f"/v1/cases/{ref}/attachments?filename=big.bin", tokens["resolver"],
        data=b"x" * 5000, headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 413 and body["error"] == "too_large"
    status, _ = await client.call(
        "POST", f"/v1/cases/{ref}/attachments?filename=../../etc/passwd", tokens["resolver"],
        data=b"x", headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 422


async def test_list_filters_search_and_cursor_pages(client: Client, tokens: dict[str, str]) -> None:
    refs = []
    for n in range(5):
        body = dict(NEW_CASE, subject=f"Parcel {n} lost" if n % 2 else f"Invoice {n}")
        _, made = await client.call("POST", "/v1/cases", tokens["supervisor"], body)
        refs.append(made["ref"])
    _, found = await client.call("GET", "/v1/cases?q=parcel", tokens["supervisor"])
    assert sorted(c["ref"] for c in found["items"]) == sorted([refs[1], refs[3]])
    _, found = await client.call("GET", "/v1/cases?q=charged", tokens["supervisor"])
    assert len(found["items"]) == 5  # the description is the first message: searchable
    seen: list[str] = []
    cursor = None
    while True:
        query = "/v1/cases?limit=2" + (f"&cursor={cursor}" if cursor else "")
        _, page = await client.call("GET", query, tokens["supervisor"])
        seen += [c["ref"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(refs))
    status, body = await client.call("GET", "/v1/cases?cursor=bogus", tokens["supervisor"])
    assert status == 400
    status, body = await client.call("GET", "/v1/cases?limit=0", tokens["supervisor"])
    assert status == 422 and "limit" in body["fields"]


async def test_openapi_document_lists_every_route(client: Client) -> None:
    status, doc = await client.call("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    assert "/v1/cases/{ref}/replies" in doc["paths"]
    assert doc["paths"]["/v1/track/{ref}"]["get"]["security"] == []
