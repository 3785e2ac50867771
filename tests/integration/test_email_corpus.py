"""The email corpus end to end: every message of tests/corpus/email is appended to a real
Dovecot folder, taken in by the real mailbox watcher, carried over the real bus and applied
by the real case-store to the real database, where each must be what the `outcome:` of
expected.yaml says (new case, joins a case, linked new case, auto-reply recorded or dropped,
bounce recorded, ignored, duplicate). The cases the corpus writes about are seeded first
(cases.yaml) through case-store's own repositories, as if they had been opened and answered
earlier. One mailbox and one pair of services serve the whole corpus."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from casegate_case_store.domain.cases import CaseStatus, Identity, IdentityKind, NewCase
from casegate_case_store.settings import Settings as CaseStoreSettings
from casegate_case_store.store import cases as repo
from casegate_intake.adapters.imap import MailboxWatcher
from casegate_intake.domain.mail import dedupe_key, parse_mail
from casegate_intake.settings import Settings as IntakeSettings
from casegate_shared.bus import Bus
from casegate_shared.events import Channel, NotificationOutcome, Priority, derived_event_id
from casegate_shared.settings import BusSettings
from tests.conftest import eventually, free_port
from tests.support.bus_events import published
from tests.integration.test_case_store_service import running
from tests.support.dovecot import Dovecot, dovecot, imap_folder  # noqa: F401 - fixtures

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "email"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "expected.yaml").read_text())
SEEDED: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "cases.yaml").read_text())
PROCESSED = "$CasegateProcessed"
FAILED = "$CasegateFailed"

_REF = r"CS-[0-9A-Z]{6}"
_OUTCOME = re.compile(
    rf"(?P<new>new case)"
    rf"|new case linked to (?P<linked>{_REF}) by (?P<linked_via>header|token)"
    rf"|joins (?P<joins>{_REF}) by (?P<joins_via>header|token)"
    rf"|auto-reply on (?P<auto>{_REF}) by (?P<auto_via>header|token)"
    rf"|(?P<dropped>auto-reply dropped)"
    rf"|bounce on (?P<bounce>{_REF}), (?P<address>\S+) (?P<mark>bouncing|not bouncing|unknown)"
    rf"|(?P<ignored>ignored)"
    rf"|same as (?P<same>\S+\.eml)"
)


@dataclass(frozen=True)
class Expect:
    """One `outcome:` of expected.yaml, parsed."""

    kind: str  # new, linked, joins, auto, dropped, bounce, ignored, same
    ref: str | None = None  # the case it joins, links to or bounces on
    via: str | None = None  # header or token
    address: str | None = None
    mark: str | None = None
    same: str | None = None


def expect(text: str) -> Expect:
    found = _OUTCOME.fullmatch(text)
    if found is None:
        raise AssertionError(f"not an outcome: {text!r}")
    kind = next(k for k in ("new", "linked", "joins", "auto", "dropped", "bounce", "ignored",
                            "same") if found[k])
    return Expect(kind, ref=found[kind] if kind in ("linked", "joins", "auto", "bounce") else None,
                  via=found[f"{kind}_via"] if kind in ("linked", "joins", "auto") else None,
                  address=found["address"], mark=found["mark"], same=found["same"])


OUTCOMES = {name: expect(want["outcome"]) for name, want in EXPECTED.items()}


@dataclass(frozen=True)
class Arrival:
    """A corpus message as it sits in the mailbox, and the dedupe key intake gives it."""

    name: str
    uid: int
    key: str


def test_every_corpus_message_has_an_outcome_naming_a_seeded_case() -> None:
    for name, outcome in OUTCOMES.items():
        if outcome.ref is not None:
            assert outcome.ref in SEEDED, name
        if outcome.same is not None:
            assert outcome.same in EXPECTED, name
    kinds = {o.kind for o in OUTCOMES.values()}
    assert kinds == {"new", "linked", "joins", "auto", "dropped", "bounce", "ignored", "same"}


async def seed(conn: asyncpg.Connection) -> None:
    """The cases of cases.yaml with their customers, and our sent mail recorded the way a
    `notification.sent` outcome records it (so replies and bounces can name it)."""
    async with conn.transaction():
        for ref, case in SEEDED.items():
            identities = [Identity(IdentityKind.EMAIL, a) for a in case["addresses"]]
            customer = await repo.find_or_create_customer(
                conn, identities, case["customer"], "email"
            )
            opened = await repo.open_case(conn, iter([ref]), customer.id, NewCase(
                Channel.EMAIL, case["subject"], case["subject"], CaseStatus.NEW, Priority.P3,
            ))
            for message_id in case["sent"]:
                await repo.record_delivery(conn, opened.id, NotificationOutcome(
                    ref=ref, notification_key=f"seed/{message_id}", channel=Channel.EMAIL,
                    recipient=case["addresses"][0], template="seed", provider="smtp",
                    outcome="sent", provider_message_id=message_id,
                ))


def append_corpus(server: Dovecot, folder: str, mailbox: str) -> list[Arrival]:
    """Append every corpus file; the server's APPENDUID gives each its UID, and the bytes it
    stored give the key intake will use for a message without a Message-ID."""
    arrivals = []
    with server.client() as client:
        for name in sorted(EXPECTED):
            raw = (CORPUS / name).read_bytes()
            answer = client.append(folder, raw)
            found = re.search(rb"APPENDUID (\d+) (\d+)", answer)
            assert found, answer
            uid = int(found[2])
            client.select_folder(folder, readonly=True)
            stored = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
            message_id = parse_mail(raw, frozenset()).message_id
            arrivals.append(Arrival(name, uid, dedupe_key(message_id, stored)))
    return arrivals


def left_in_mailbox(server: Dovecot, folder: str) -> tuple[list[int], list[int]]:
    """(UIDs not yet processed, UIDs set aside as unusable)."""
    with server.client() as client:
        client.select_folder(folder, readonly=True)
        return (list(client.search(["NOT", "KEYWORD", PROCESSED])),
                list(client.search(["KEYWORD", FAILED])))


def case_events(bus_settings: BusSettings) -> AbstractAsyncContextManager[list[dict[str, Any]]]:
    """Every `case.*` event case-store published, as it arrives."""
    return published(bus_settings, "case.#")

@asynccontextmanager
async def watching(settings: IntakeSettings) -> AsyncIterator[None]:
    bus = Bus(settings, source="intake")
    await bus.connect()
    watcher = MailboxWatcher(settings, bus)
    await watcher.start()
    try:
        yield
    finally:
        await watcher.stop()
        await bus.close()


def off_loop(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await asyncio.to_thread(predicate)

    return check


async def test_every_corpus_message_lands_where_expected_yaml_says(
    bus_settings: BusSettings, clean_db: str, dovecot: Dovecot, imap_folder: str,  # noqa: F811
    redis_url: str, key_prefix: str, tmp_path: Path,
) -> None:
    mailbox = dovecot.mailbox_name(imap_folder)
    intake = IntakeSettings(
        **bus_settings.model_dump(), imap_mailboxes=dovecot.url(imap_folder),
        redis_url=redis_url, redis_prefix=key_prefix, blob_dir=str(tmp_path / "blobs"),
    )
    store = CaseStoreSettings(**bus_settings.model_dump(), database_url=clean_db,
                              case_store_port=free_port(), blob_dir=str(tmp_path / "blobs"))
    db = await asyncpg.connect(clean_db)
    try:
        await seed(db)
        arrivals = await asyncio.to_thread(append_corpus, dovecot, imap_folder, mailbox)
        published = {a.key for a in arrivals if OUTCOMES[a.name].kind != "ignored"}

        async def all_applied() -> bool:
            applied = await db.fetchval(
                "SELECT count(*) FROM inbox WHERE consumer = 'inbound' AND key = ANY($1)",
                list(published))
            return applied == len(published) and not await db.fetchval(
                "SELECT count(*) FROM outbox")

        async with case_events(bus_settings) as events, running(store), watching(intake):
            await eventually(off_loop(lambda: not left_in_mailbox(dovecot, imap_folder)[0]),
                             timeout=20)
            await eventually(all_applied, timeout=20)
            announcing = sum(o.kind in ("new", "linked", "joins", "bounce")
                             for o in OUTCOMES.values())

            async def all_announced() -> bool:
                return len(events) >= announcing

            await eventually(all_announced, timeout=10)
        assert left_in_mailbox(dovecot, imap_folder) == ([], [])
        by_name = {a.name: a for a in arrivals}
        for arrival in arrivals:
            await check_outcome(db, arrival, by_name, events)
        new_cases = sum(o.kind in ("new", "linked") for o in OUTCOMES.values())
        assert await db.fetchval("SELECT count(*) FROM cases") == len(SEEDED) + new_cases
    finally:
        await db.close()


async def check_outcome(
    db: asyncpg.Connection, arrival: Arrival, by_name: dict[str, Arrival],
    events: list[dict[str, Any]],
) -> None:
    name, want = arrival.name, EXPECTED[arrival.name]
    outcome = OUTCOMES[name]
    entries = await db.fetch(
        "SELECT c.ref, p.ref AS parent, t.data, "
        "(SELECT count(*) FROM timeline_entries o WHERE o.case_id = c.id "
        " AND o.kind = 'message_in') AS messages "
        "FROM timeline_entries t JOIN cases c ON c.id = t.case_id "
        "LEFT JOIN cases p ON p.id = c.parent_id "
        "WHERE t.kind = 'message_in' AND t.data->>'dedupe_key' = $1", arrival.key,
    )
    correlation = derived_event_id("correlation", arrival.key)
    announced = sorted(e["type"] for e in events if e.get("correlationid") == correlation)
    applied = await db.fetchval(
        "SELECT count(*) FROM inbox WHERE consumer = 'inbound' AND key = $1", arrival.key)
    where = f"{name}: {want['outcome']}"

    if outcome.kind == "ignored":
        assert (len(entries), applied, announced) == (0, 0, []), where
        return
    if outcome.kind == "same":
        assert arrival.key == by_name[outcome.same].key, where
        assert len(entries) == 1, where  # the first of the two to arrive; the other is a repeat
        return
    assert applied == 1, where
    if outcome.kind in ("dropped", "bounce"):
        assert entries == [], where
    else:
        [entry] = entries
        data = json.loads(entry["data"]) if isinstance(entry["data"], str) else entry["data"]
        stored = data.get("attachments", [])
        assert len(stored) == want["attachments"], where
        assert all(a["blob_key"] for a in stored), where
        joined_by = data.get("joined_by", "")
    if outcome.kind == "new":
        assert entry["ref"] not in SEEDED and entry["parent"] is None, where
        assert entry["messages"] == 1, where
        assert announced == ["case.opened"], where
    elif outcome.kind == "linked":
        assert entry["ref"] not in SEEDED and entry["parent"] == outcome.ref, where
        assert joined_by.startswith(f"{outcome.via} matched {outcome.ref}"), (where, joined_by)
        assert announced == ["case.opened"], where
    elif outcome.kind == "joins":
        assert entry["ref"] == outcome.ref, where
        assert joined_by.startswith(f"{outcome.via} matched {outcome.ref}"), (where, joined_by)
        assert data["kind"] == "message" and announced == ["case.message_added"], where
    elif outcome.kind == "auto":
        assert entry["ref"] == outcome.ref, where
        assert joined_by.startswith(f"{outcome.via} matched {outcome.ref}"), (where, joined_by)
        # Recorded, but nothing announced: no acknowledgement can answer a robot.
        assert data["kind"] == "auto_reply" and announced == [], where
    elif outcome.kind == "dropped":
        assert announced == [], where
    elif outcome.kind == "bounce":
        await check_bounce(db, outcome, want, where)
        assert announced == ["case.bounced"], where


async def check_bounce(
    db: asyncpg.Connection, outcome: Expect, want: dict[str, Any], where: str
) -> None:
    notes = await db.fetchval(
        "SELECT count(*) FROM timeline_entries t JOIN cases c ON c.id = t.case_id "
        "WHERE c.ref = $1 AND t.kind = 'delivery' AND t.data->>'status' = $2",
        outcome.ref, want["bounce"]["status"],
    )
    assert notes == 1, where
    identity = await db.fetchrow(
        "SELECT bouncing_at FROM customer_identities WHERE kind = 'email' AND value = $1",
        outcome.address,
    )
    if outcome.mark == "unknown":
        assert identity is None, where  # a bounce never invents a customer
    else:
        assert identity is not None, where
        assert (identity["bouncing_at"] is not None) == (outcome.mark == "bouncing"), where

