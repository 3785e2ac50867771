"""Changing a case through the API. Each view is one transaction: lock the case the caller
may see, let the domain decide, write the change, its timeline entry, its audit row and its
`case.*` event together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
from pydantic_core import to_jsonable_python

from casegate_shared.events import CaseChange

from ..domain import cases as rules
from ..domain.cases import CaseStatus
from ..domain.timeline import EntryKind, TimelineEntry, Visibility
from ..domain.transitions import TransitionRefused, change_status
from ..store.changes import (
    LockedCase, apply_status, audit, describe_assignment, lock_visible, record,
)
from ..store.users import Role
from .models import (
    AssignmentIn, Done, MergeIn, ParentIn, ParticipantsIn, PriorityIn, ReplyIn, StatusIn,
)
from .routing import Api, ApiError, Call, NoInput, not_found

api = Api()
WRITERS = {Role.CREATOR, Role.RESOLVER, Role.SUPERVISOR, Role.ADMIN}
WORKERS = {Role.RESOLVER, Role.SUPERVISOR, Role.ADMIN}
LEADS = {Role.SUPERVISOR, Role.ADMIN}


@asynccontextmanager
async def case_for(call: Call[NoInput, object]) -> AsyncIterator[tuple[asyncpg.Connection, LockedCase]]:
    ref = rules.normalize_ref(call.params["ref"]) or ""
    async with call.pool.acquire() as conn, conn.transaction():
        case = await lock_visible(conn, ref, call.who)
        if case is None:
            raise not_found("case")
        yield conn, case


def entry(kind: EntryKind, call: Call[NoInput, object], body: str, internal: bool = True,
          **data: object) -> TimelineEntry:
    visibility = Visibility.INTERNAL if internal else Visibility.PUBLIC
    return TimelineEntry(kind, f"agent:{call.who.handle}", visibility, body, dict(data))


async def _record(conn: asyncpg.Connection, case: LockedCase, call: Call[NoInput, object],
                  item: TimelineEntry, change: CaseChange, action: str, **detail: object) -> Done:
    entry_id = await record(
        conn, case, item, change, actor=call.who.handle, actor_user_id=call.who.user_id,
        correlation_id=call.correlation_id, **detail,
    )
    # Bodies stay on the timeline; the audit log says who did what, not what they wrote.
    audit_detail = to_jsonable_python({k: v for k, v in detail.items() if k != "body"})
    await audit(conn, call.who, action, case.ref, audit_detail, call.correlation_id)
    return Done(ref=case.ref, entry_id=entry_id)


@api.route("POST", "/v1/cases/{ref}/replies", roles=WRITERS, tag="actions", body=ReplyIn,
           response=Done, status=201,
           summary="A public reply: delivered to the customer on their channel")
async def reply(call: Call[NoInput, ReplyIn]) -> Done:
    async with case_for(call) as (conn, case):
        if case.status is CaseStatus.CLOSED:
            raise ApiError(409, "closed", "a closed case takes no replies")
        await conn.execute(
            "UPDATE cases SET first_response_at = coalesce(first_response_at, now()) "
            "WHERE id = $1", case.id,
        )
        item = entry(EntryKind.REPLY, call, call.body.body, internal=False)
        return await _record(conn, case, call, item, CaseChange.REPLY_ADDED, "case.reply",
                             body=call.body.body)


@api.route("POST", "/v1/cases/{ref}/notes", roles=WRITERS, tag="actions", body=ReplyIn,
           response=Done, status=201, summary="An internal note: never shown to the customer")
async def note(call: Call[NoInput, ReplyIn]) -> Done:
    async with case_for(call) as (conn, case):
        item = entry(EntryKind.NOTE, call, call.body.body)
        return await _record(conn, case, call, item, CaseChange.NOTE_ADDED, "case.note",
                             body=call.body.body)


@api.route("POST", "/v1/cases/{ref}/status", roles=WORKERS, tag="actions", body=StatusIn,
           response=Done, summary="Change the status, naming a reason code")
async def status(call: Call[NoInput, StatusIn]) -> Done:
    async with case_for(call) as (conn, case):
        active = await conn.fetchval(
            "SELECT active FROM reason_codes WHERE code = $1", call.body.reason_code
        )
        if not active:
            raise ApiError(422, "invalid", f"no active reason code {call.body.reason_code!r}")
        try:
            stamp = change_status(case.status, CaseStatus(call.body.status),
                                  datetime.now(UTC), case.pending_since)
        except TransitionRefused as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        await apply_status(conn, case, stamp, call.body.reason_code, call.correlation_id)
        text = f"Status changed from {case.status.value} to {stamp.status.value}"
        item = entry(EntryKind.STATUS, call, f"{text} ({call.body.reason_code})",
                     internal=False, previous=case.status.value, status=stamp.status.value,
                     reason_code=call.body.reason_code)
        return await _record(conn, case, call, item, CaseChange.STATUS_CHANGED, "case.status",
                             previous=case.status.value, reason_code=call.body.reason_code)


@api.route("POST", "/v1/cases/{ref}/assignment", roles=WORKERS, tag="actions",
           body=AssignmentIn, response=Done,
           summary="Move the case to a team and/or agent; the history stays with it")
async def assignment(call: Call[NoInput, AssignmentIn]) -> Done:
    want = call.body
    if want.team is None and want.assignee is None and not want.unassign:
        raise ApiError(422, "invalid", "name a team, an assignee, or unassign")
    steers = call.who.sees_everything  # supervisors and admins move cases between people
    if not steers and (want.team is not None or want.assignee not in (None, call.who.handle)):
        raise ApiError(403, "forbidden", "a resolver may only claim a case for themselves")
    async with case_for(call) as (conn, case):
        # A resolver takes what nobody holds and gives back what they hold; moving a case
        # between people is a supervisor's.
        held_by_other = case.assignee_id not in (None, call.who.user_id)
        if not steers and held_by_other:
            raise ApiError(403, "forbidden", "the case is assigned to someone else; "
                           "a supervisor can move it")
        if want.unassign and not steers and case.assignee_id != call.who.user_id:
            raise ApiError(403, "forbidden",
                           "a resolver may only give back a case assigned to themselves")
        assignee_id = None
        if want.assignee is not None:
            assignee_id = await conn.fetchval(
                "SELECT id FROM users WHERE handle = $1 AND active", want.assignee
            )
            if assignee_id is None:
                raise ApiError(422, "invalid", f"no active user {want.assignee!r}")
        before = await describe_assignment(conn, case)
        await conn.execute(
            "UPDATE cases SET team = coalesce($2, team), "
            # A move to another team without a named agent leaves the old team's agent:
            # the case waits in the new team's queue, where the router assigns it.
            "assignee_id = CASE WHEN $4 OR ($3::bigint IS NULL AND $2::text IS DISTINCT FROM "
            "team AND $2::text IS NOT NULL) THEN NULL ELSE coalesce($3, assignee_id) END, "
            "status = CASE WHEN status = 'new' THEN 'open' ELSE status END WHERE id = $1",
            case.id, want.team, assignee_id, want.unassign,
        )
        after = await describe_assignment(conn, case)
        item = entry(EntryKind.ASSIGNMENT, call, f"Assigned: {before} -> {after}",
                     previous=before, current=after)
        return await _record(conn, case, call, item, CaseChange.ASSIGNED, "case.assign",
                             previous=before)


@api.route("POST", "/v1/cases/{ref}/priority", roles=WORKERS, tag="actions", body=PriorityIn,
           response=Done, summary="Change the priority")
async def priority(call: Call[NoInput, PriorityIn]) -> Done:
    async with case_for(call) as (conn, case):
        new = call.body.priority.value
        if new == case.priority:
            raise ApiError(409, "conflict", f"the priority is already {new}")
        await conn.execute("UPDATE cases SET priority = $2 WHERE id = $1", case.id, new)
        item = entry(EntryKind.PRIORITY, call, f"Priority {case.priority} -> {new}")
        return await _record(conn, case, call, item, CaseChange.PRIORITY_CHANGED,
                             "case.priority", previous=case.priority)


@api.route("POST", "/v1/cases/{ref}/parent", roles=WORKERS, tag="actions", body=ParentIn,
           response=Done, summary="Set or clear the parent case")
async def parent(call: Call[NoInput, ParentIn]) -> Done:
    async with case_for(call) as (conn, case):
        parent_id = None
        if call.body.parent is not None:
            parent_id = await conn.fetchval(
                # The chain upwards from the parent must not reach this case (no cycles).
                "WITH RECURSIVE up(id) AS (SELECT id FROM cases WHERE ref = $1 UNION "
                "SELECT c.parent_id FROM cases c JOIN up ON c.id = up.id "
                "WHERE c.parent_id IS NOT NULL) "
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM up WHERE id = $2) THEN -1 "
                "ELSE (SELECT id FROM cases WHERE ref = $1) END", call.body.parent, case.id,
            )
            if parent_id is None:
                raise not_found("parent case")
            if parent_id == -1:
                raise ApiError(409, "conflict", "that would make the case its own ancestor")
        await conn.execute("UPDATE cases SET parent_id = $2 WHERE id = $1", case.id, parent_id)
        text = f"Parent set to {call.body.parent}" if call.body.parent else "Parent cleared"
        item = entry(EntryKind.LINK, call, text, parent=call.body.parent)
        return await _record(conn, case, call, item, CaseChange.LINKED, "case.parent")


@api.route("POST", "/v1/cases/{ref}/merge", roles=LEADS, tag="actions", body=MergeIn,
           response=Done, summary="Close this duplicate into another case; its history moves")
async def merge(call: Call[NoInput, MergeIn]) -> Done:
    ref = rules.normalize_ref(call.params["ref"]) or ""
    async with call.pool.acquire() as conn, conn.transaction():
        # Both in id order, as everything that locks several cases does (a STOP locking the
        # customer's open cases): two such transactions never wait on each other in a circle.
        await conn.execute("SELECT 1 FROM cases WHERE ref = ANY($1::text[]) ORDER BY id "
                           "FOR UPDATE", [ref, call.body.into])
        case = await lock_visible(conn, ref, call.who)
        if case is None:
            raise not_found("case")
        target = await lock_visible(conn, call.body.into, call.who)
        if target is None:
            raise not_found("target case")
        if target.id == case.id or target.status is CaseStatus.CLOSED:
            raise ApiError(409, "conflict", "merge into another case that is not closed")
        await merge_into(conn, case, target)
        item = entry(EntryKind.LINK, call, f"Merged into {target.ref}", into=target.ref)
        await _record(conn, target, call,
                      entry(EntryKind.LINK, call, f"{case.ref} merged into this case",
                            merged=case.ref), CaseChange.LINKED, "case.merge.target")
        return await _record(conn, case, call, item, CaseChange.MERGED, "case.merge",
                             merged_into=target.ref)


async def merge_into(conn: asyncpg.Connection, dup: LockedCase, target: LockedCase) -> None:
    """The duplicate closes; its messages, ids and watchers follow the target, so replies to
    either thread land in the one case that stays open."""
    await conn.execute(
        "UPDATE cases SET status = 'closed', closed_at = now(), merged_into_id = $2 "
        "WHERE id = $1", dup.id, target.id,
    )
    await conn.execute(
        "INSERT INTO case_message_ids (message_id, case_id, direction) "
        "SELECT message_id, $2, direction FROM case_message_ids WHERE case_id = $1 "
        "ON CONFLICT DO NOTHING", dup.id, target.id,
    )
    await conn.execute(
        "INSERT INTO case_participants (case_id, user_id, role) "
        "SELECT $2, user_id, role FROM case_participants WHERE case_id = $1 "
        "ON CONFLICT DO NOTHING", dup.id, target.id,
    )
    await conn.execute(
        "UPDATE cases SET search = search || (SELECT search FROM cases WHERE id = $1) "
        "WHERE id = $2", dup.id, target.id,
    )


@api.route("POST", "/v1/cases/{ref}/participants", roles=WRITERS, tag="actions",
           body=ParticipantsIn, response=Done, summary="Add watchers (or owners, admins)")
async def participants(call: Call[NoInput, ParticipantsIn]) -> Done:
    if call.body.role != "watcher" and not call.who.sees_everything:
        # Owners and administrators hear what only those responsible should: set by the
        # supervisors, not by whoever can write on the case.
        raise ApiError(403, "forbidden", f"only supervisors and admins add {call.body.role}s")
    async with case_for(call) as (conn, case):
        found = await conn.fetch(
            "SELECT id, handle FROM users WHERE handle = ANY($1::text[]) AND active",
            call.body.users,
        )
        missing = sorted(set(call.body.users) - {r["handle"] for r in found})
        if missing:
            raise ApiError(422, "invalid", f"no active users: {', '.join(missing)}")
        await conn.execute(
            "INSERT INTO case_participants (case_id, user_id, role) "
            "SELECT $1, unnest($2::bigint[]), $3 ON CONFLICT DO NOTHING",
            case.id, [r["id"] for r in found], call.body.role,
        )
        names = ", ".join(sorted(r["handle"] for r in found))
        item = entry(EntryKind.PARTICIPANT, call, f"Added {call.body.role}s: {names}")
        return await _record(conn, case, call, item, CaseChange.PARTICIPANTS_CHANGED,
                             "case.participants")
