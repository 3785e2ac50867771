"""A customer's message, applied in one transaction: dedupe, thread it (join, reopen or open
a case), record why, and announce it. Bounces mark an address instead of opening a case;
auto-replies are recorded where they belong but never announced (no acknowledgement loop)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from casegate_shared.events import (
    CaseChange, CaseCustomer, CaseOpened, Envelope, MessageKind, MessageReceived,
    derived_event_id, envelope,
)

from .domain import cases as rules
from .domain import timeline
from .domain.cases import CaseStatus
from .domain.threading import Candidate, Outcome, Thread, Via, decide
from .domain.transitions import customer_returned
from .store import cases as repo
from .store import customers
from .store import inbox
from .store.changes import SOURCE, LockedCase, apply_status, record, record_contact_change
from .store.snapshot import opened_snapshot

log = logging.getLogger(__name__)

KEYWORDS = {MessageKind.OPT_OUT, MessageKind.OPT_IN, MessageKind.HELP}
KEYWORD_WORDS = {
    MessageKind.OPT_OUT: "Customer texted a stop keyword: no more SMS to this number",
    MessageKind.OPT_IN: "Customer texted a start keyword: SMS allowed again",
    MessageKind.HELP: "Customer texted a help keyword",
}

_CANDIDATE = (
    "SELECT id, ref, customer_id, status, resolved_at FROM cases WHERE {where} "
    "AND merged_into_id IS NULL ORDER BY id DESC LIMIT 1"
)


@dataclass(frozen=True, slots=True)
class ThreadingRules:
    """The configurable part of threading (the rest is fixed: headers, token, thread)."""

    reopen_window: timedelta  # a reply this soon after resolution reopens the case
    # Email without a header or token match joins the sender's open email case if that case
    # changed this recently; None: off (every such email opens a new case).
    same_sender_window: timedelta | None = None


async def candidates(
    conn: asyncpg.Connection, msg: MessageReceived, customer_id: int, threading: ThreadingRules
) -> list[Candidate]:
    found: list[Candidate] = []

    async def add(via: Via, where: str, *args: object) -> None:
        row = await conn.fetchrow(_CANDIDATE.format(where=where), *args)
        if row is not None:
            found.append(Candidate(via, row["id"], row["ref"], row["customer_id"],
                                   CaseStatus(row["status"]), row["resolved_at"]))

    if msg.email and (ids := [*msg.email.in_reply_to, *msg.email.references]):
        await add(Via.HEADER, "id IN (SELECT case_id FROM case_message_ids "
                  "WHERE message_id = ANY($1::text[]))", ids)
    if ref := rules.normalize_ref(msg.case_ref):
        await add(Via.TOKEN, "ref = $1", ref)
    if msg.thread_key:
        await add(Via.THREAD, "slack_thread = $1", msg.thread_key)
    if msg.channel.value == "email" and threading.same_sender_window is not None:
        await add(Via.SENDER, "customer_id = $1 AND channel = 'email' AND status NOT IN "
                  "('resolved', 'closed') AND updated_at >= now() - $2::interval",
                  customer_id, threading.same_sender_window)
    if msg.channel.value == "sms":
        await add(Via.SENDER, "customer_id = $1 AND channel = 'sms' AND status <> 'closed'",
                  customer_id)
    return found


async def receive(
    pool: asyncpg.Pool, event: Envelope[MessageReceived], threading: ThreadingRules
) -> None:
    msg = event.data
    async with pool.acquire() as conn, conn.transaction():
        if msg.kind is MessageKind.BOUNCE:
            if await inbox.claim(conn, "inbound", msg.dedupe_key):
                await bounced(conn, event)
            else:
                log.info("duplicate message ignored", extra={"dedupe_key": msg.dedupe_key})
            return
        identities = rules.sender_identities(msg.sender)
        # An auto-reply is no reason to create a customer or move their channel.
        touch = msg.kind is not MessageKind.AUTO_REPLY
        claim = await customers.claim_message(
            conn, "inbound", msg.dedupe_key, identities, msg.sender.name, msg.channel.value,
            touch=touch,
        )
        if not claim.fresh:
            log.info("duplicate message ignored", extra={"dedupe_key": msg.dedupe_key})
            return
        customer = claim.customer
        if customer is None:
            if not touch:
                log.info("auto-reply from an unknown sender dropped")
                return
            customer = await customers.create_customer(
                conn, identities, msg.sender.name, msg.channel.value
            )
        if msg.kind in KEYWORDS:
            await keyword(conn, event, customer.id)
            return
        found = await candidates(conn, msg, customer.id, threading)
        thread = decide(found, customer.id, datetime.now(UTC), threading.reopen_window)
        if msg.kind is MessageKind.AUTO_REPLY and thread.outcome is not Outcome.JOIN:
            # Recorded where it belongs, never a new case or a reopen: no mail loops.
            log.info("auto-reply without an open case dropped", extra={"reason": thread.reason})
            return
        if thread.outcome in (Outcome.JOIN, Outcome.REOPEN):
            await join(conn, event, thread)
        else:
            await open_new(conn, event, customer, identities, thread, claim.now)


async def _remember_message_id(conn: asyncpg.Connection, case_id: int, msg: MessageReceived) -> None:
    if msg.email and msg.email.message_id:
        await conn.execute(
            "INSERT INTO case_message_ids (message_id, case_id, direction) VALUES ($1, $2, 'in') "
            "ON CONFLICT DO NOTHING", msg.email.message_id, case_id,
        )


async def join(conn: asyncpg.Connection, event: Envelope[MessageReceived], thread: Thread) -> None:
    msg = event.data
    row = await conn.fetchrow(
        "SELECT id, ref, status, team, assignee_id, priority, pending_since, customer_id "
        "FROM cases WHERE id = $1 FOR UPDATE", thread.case_id,
    )
    case = LockedCase.of(row)
    await _remember_message_id(conn, case.id, msg)
    entry = timeline.message_in(msg, joined_by=thread.reason)
    if msg.kind is MessageKind.AUTO_REPLY:
        await repo.add_entry(conn, case.id, entry, event.correlationid)
        return
    reopened = thread.outcome is Outcome.REOPEN or case.status is CaseStatus.PENDING_CUSTOMER
    if reopened:
        stamp = customer_returned(case.status, datetime.now(UTC), case.pending_since)
        await apply_status(conn, case, stamp, None, event.correlationid)
    change = CaseChange.REOPENED if thread.outcome is Outcome.REOPEN else CaseChange.MESSAGE_ADDED
    await record(conn, case, entry, change, actor="customer", actor_user_id=None,
                 correlation_id=event.correlationid, cause=event.id, body=msg.body,
                 channel=msg.channel, previous=case.status.value, attachments=msg.attachments)
    log.info("message added to case", extra={"ref": case.ref, "why": thread.reason})


async def open_new(conn: asyncpg.Connection, event: Envelope[MessageReceived],
                   customer: customers.Customer, identities: list[rules.Identity], thread: Thread,
                   now: datetime) -> None:
    """Open the case and announce it in one statement; the snapshot is made from what that
    statement writes, so nothing is read back. `now` is the transaction's time: the case's
    created_at."""
    msg = event.data
    case = rules.new_case(msg)
    email, phone = rules.customer_contact(identities)
    who = CaseCustomer(id=customer.id, name=customer.name, email=email, phone=phone)
    message_id = msg.email.message_id if msg.email else None

    def announce(ref: str, token: str) -> Envelope[CaseOpened]:
        snapshot = opened_snapshot(ref, case, customer.profile, message_id, token)
        payload = rules.case_opened(ref, who, case, now).model_copy(update={"case": snapshot})
        return envelope(payload, source=SOURCE, subject=ref, correlation_id=event.correlationid,
                        event_id=derived_event_id("case.opened", ref))

    first = repo.FirstEntry(timeline.message_in(msg, joined_by=thread.reason),
                            event.correlationid, message_id)
    parent_id = thread.case_id if thread.outcome is Outcome.NEW_LINKED else None
    opened = await repo.open_case(conn, rules.candidate_refs(msg.new_case_ref), customer.id,
                                  case, parent_id=parent_id, first=first, announce=announce)
    log.info("case opened", extra={"ref": opened.ref, "channel": msg.channel.value,
                                   "why": thread.reason})


async def bounced(conn: asyncpg.Connection, event: Envelope[MessageReceived]) -> None:
    """A bounce names no customer of ours: it marks the address and tells the case."""
    bounce = event.data.bounce
    if bounce is None:
        return
    if bounce.recipient and bounce.permanent:
        address = rules.normalize_email(bounce.recipient)
        await conn.execute(
            "UPDATE customer_identities SET bouncing_at = now(), bounce_reason = $2 "
            "WHERE kind = 'email' AND value = $1", address, (bounce.status or "bounced")[:100],
        )
    row = await conn.fetchrow(
        "SELECT c.id, c.ref, c.status, c.team, c.assignee_id, c.priority, c.pending_since, "
        "c.customer_id FROM case_message_ids m JOIN cases c ON c.id = m.case_id "
        "WHERE m.message_id = $1 AND m.direction = 'out' FOR UPDATE OF c",
        bounce.original_message_id or "",
    )
    if row is None:
        log.info("bounce for no known message recorded on the address only")
        return
    case = LockedCase.of(row)
    await record(conn, case, timeline.bounce(bounce), CaseChange.BOUNCED, actor="mailer",
                 actor_user_id=None, correlation_id=event.correlationid, cause=event.id,
                 reply_to=bounce.recipient)


async def keyword(conn: asyncpg.Connection, event: Envelope[MessageReceived], customer_id: int) -> None:
    """STOP/START change the number's opt-out (our own suppression list: the provider's only
    covers one sending number); nothing opens and nothing is acknowledged."""
    msg = event.data
    phone = rules.normalize_phone(msg.sender.phone or "")
    entry = timeline.TimelineEntry(timeline.EntryKind.DELIVERY, "customer",
                                   timeline.Visibility.INTERNAL, KEYWORD_WORDS[msg.kind],
                                   {"keyword": msg.kind.value})
    if msg.kind is not MessageKind.HELP and phone:
        await conn.execute(
            "UPDATE customer_identities SET opted_out_at = CASE WHEN $2 THEN "
            "coalesce(opted_out_at, now()) ELSE NULL END WHERE kind = 'phone' AND value = $1",
            phone, msg.kind is MessageKind.OPT_OUT,
        )
        await record_contact_change(conn, customer_id, entry, event.correlationid)
    else:
        row = await conn.fetchrow(_CANDIDATE.format(
            where="customer_id = $1 AND status NOT IN ('resolved', 'closed')"), customer_id)
        if row is not None:
            await repo.add_entry(conn, row["id"], entry, event.correlationid)
    log.info("sms keyword applied", extra={"kind": msg.kind.value})
