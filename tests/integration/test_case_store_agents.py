"""Agent actions from Slack, applied by case-store through the real bus: the Slack user is
mapped to a user, role and case visibility are checked, each action lands once, and what
cannot be applied is parked with its reason."""

from __future__ import annotations


import asyncpg
from aiohttp import web
from tests.conftest import eventually
from tests.integration.case_store_fixtures import db, observer, service, settings  # noqa: F401
from tests.integration.test_case_store_service import Observer

from casegate_case_store.store.users import Role, create_user
from casegate_shared.bus import Bus
from casegate_shared.dlq import list_parked
from casegate_shared.events import (
    AgentAction, AgentActionKind, Channel, MessageReceived, Sender, envelope, utcnow,
)


async def open_case(publisher: Bus, observer: Observer, db: asyncpg.Connection) -> str:
    msg = MessageReceived(channel=Channel.SMS, dedupe_key="twilio:SM1",
                          sender=Sender(phone="+15550001111"), subject="", body="Help",
                          received_at=utcnow())
    await publisher.publish(envelope(msg, source="intake", routing_key="message.received.sms"))
    (opened,) = await observer.take()
    ref: str = opened["data"]["ref"]
    await db.execute("UPDATE cases SET team = 'billing', slack_thread = 'C1:111.222' "
                     "WHERE ref = $1", ref)
    return ref


def action(kind: AgentActionKind, key: str, user: str = "U0REMY", **kw: object) -> object:
    payload = AgentAction(action=kind, dedupe_key=key, actor_slack_user=user, **kw)
    return envelope(payload, source="intake")


async def test_claim_reply_and_note_from_slack_apply_once(
    service: web.Application, publisher: Bus, observer: Observer, db: asyncpg.Connection
) -> None:
    await create_user(db, "remy", "Remy", [Role.RESOLVER], teams=["billing"], slack_user="U0REMY")
    ref = await open_case(publisher, observer, db)
    claim = action(AgentActionKind.CLAIM, "slack:a1", ref=ref)
    await publisher.publish(claim)
    await publisher.publish(claim.model_copy(update={"id": "another-delivery"}))
    (assigned,) = await observer.take()
    assert assigned["type"] == "case.assigned"
    assert assigned["data"]["case"]["assignee"] == "remy"
    # One at a time: two deliveries in flight together may apply in either order, and the
    # timeline below is checked in order.
    await publisher.publish(action(AgentActionKind.NOTE, "slack:e1", thread_key="C1:111.222",
                                   body="checking the ledger"))
    (note,) = await observer.take()
    await publisher.publish(action(AgentActionKind.REPLY, "slack:e2", thread_key="C1:111.222",
                                   body="Refund is on its way"))
    (reply,) = await observer.take()
    assert (note["type"], reply["type"]) == ("case.note_added", "case.reply_added")
    assert reply["data"]["body"] == "Refund is on its way"
    await observer.assert_quiet()
    rows = await db.fetch("SELECT kind, visibility, actor FROM timeline_entries t JOIN cases c "
                          "ON c.id = t.case_id WHERE c.ref = $1 ORDER BY t.id", ref)
    assert [(r["kind"], r["visibility"]) for r in rows] == [
        ("message_in", "public"), ("assignment", "internal"), ("note", "internal"),
        ("reply", "public"),
    ]
    assert rows[-1]["actor"] == "agent:remy"
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE target = $1", ref) == 3


async def test_unknown_users_and_other_teams_are_parked_with_the_reason(
    service: web.Application, publisher: Bus, observer: Observer, db: asyncpg.Connection,
) -> None:
    await create_user(db, "otto", "Otto", [Role.RESOLVER], teams=["shipping"], slack_user="U0OTTO")
    await create_user(db, "cora", "Cora", [Role.CREATOR], teams=["billing"], slack_user="U0CORA")
    ref = await open_case(publisher, observer, db)
    await publisher.publish(action(AgentActionKind.CLAIM, "slack:x1", user="U0NOBODY", ref=ref))
    await publisher.publish(action(AgentActionKind.CLAIM, "slack:x2", user="U0OTTO", ref=ref))
    await publisher.publish(action(AgentActionKind.RESOLVE, "slack:x3", user="U0CORA", ref=ref))
    async def parked() -> bool:
        return len(await list_parked(publisher, ["case-store.agents"])) == 3

    await eventually(parked, timeout=20)
    reasons = sorted(p.error or "" for p in await list_parked(publisher, ["case-store.agents"]))
    assert any("not a casegate user" in r for r in reasons)
    assert any("otto may work on" in r for r in reasons)
    assert any("cora may not resolve" in r for r in reasons)
    await observer.assert_quiet()
    assert await db.fetchval("SELECT assignee_id FROM cases WHERE ref = $1", ref) is None


async def test_a_claim_from_slack_does_not_take_a_case_from_its_assignee(
    service: web.Application, publisher: Bus, observer: Observer, db: asyncpg.Connection
) -> None:
    await create_user(db, "remy", "Remy", [Role.RESOLVER], teams=["billing"], slack_user="U0REMY")
    await create_user(db, "tina", "Tina", [Role.RESOLVER], teams=["billing"], slack_user="U0TINA")
    ref = await open_case(publisher, observer, db)
    await db.execute("UPDATE cases SET assignee_id = (SELECT id FROM users WHERE handle = "
                     "'tina') WHERE ref = $1", ref)
    await publisher.publish(action(AgentActionKind.CLAIM, "slack:t1", ref=ref))

    async def parked() -> list[str]:
        return [p.error for p in await list_parked(publisher, ["case-store.agents"])]

    async def refused() -> bool:
        return any("assigned to someone else" in e for e in await parked())

    await eventually(refused, timeout=20)
    assert await db.fetchval("SELECT u.handle FROM cases c JOIN users u ON u.id = c.assignee_id "
                             "WHERE c.ref = $1", ref) == "tina"
    await observer.assert_quiet()
