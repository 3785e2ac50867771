"""Reading cases and registering one on a customer's behalf."""

from __future__ import annotations

import dataclasses

from casegate_shared.events import CaseCustomer, Channel, MessageReceived, Sender, envelope, utcnow

from ..domain import cases as rules
from ..domain import timeline
from ..store import cases as repo
from ..store.changes import SOURCE, audit
from ..store.outbox import write_event
from ..store.queries import BadCursor, case_detail, find_visible_id, list_cases
from ..store.snapshot import load_snapshot
from ..store.users import Role
from .models import CaseDetail, CaseList, CaseQuery, CaseSummary, Created, NewCase
from .routing import Api, ApiError, Call, NoInput, not_found

api = Api()
EVERYONE = {Role.CREATOR, Role.RESOLVER, Role.SUPERVISOR, Role.ADMIN}


@api.route(
    "GET", "/v1/cases", roles=EVERYONE, tag="cases", query=CaseQuery, response=CaseList,
    summary="Cases the caller may see, filtered, searched and cursor-paged",
)
async def cases_list(call: Call[CaseQuery, NoInput]) -> CaseList:
    try:
        rows, cursor = await list_cases(call.pool, call.who, call.query)
    except BadCursor as exc:
        raise ApiError(400, "bad_cursor", str(exc)) from None
    return CaseList(items=[CaseSummary.model_validate(dict(r)) for r in rows], next_cursor=cursor)


@api.route(
    "GET", "/v1/cases/{ref}", roles=EVERYONE, tag="cases", response=CaseDetail,
    summary="One case with its participants, attachments and whole timeline",
)
async def case_get(call: Call[NoInput, NoInput]) -> CaseDetail:
    ref = rules.normalize_ref(call.params["ref"]) or ""
    async with call.pool.acquire() as conn:
        case_id = await find_visible_id(conn, ref, call.who)
        if case_id is None:
            raise not_found("case")
        return CaseDetail.model_validate(await case_detail(conn, case_id))


@api.route(
    "POST", "/v1/cases", roles={Role.CREATOR, Role.SUPERVISOR, Role.ADMIN}, tag="cases",
    body=NewCase, response=Created, status=201,
    summary="Register a case for a customer (phone call, walk-in); the caller administers it",
)
async def case_create(call: Call[NoInput, NewCase]) -> Created:
    new = call.body
    sender = Sender(name=new.customer.name, email=new.customer.email, phone=new.customer.phone)
    identities = rules.sender_identities(sender)
    if not identities:
        raise ApiError(422, "invalid", "the customer needs a valid email or phone")
    message = MessageReceived(
        channel=new.channel, dedupe_key=f"api:{call.correlation_id}", sender=sender,
        subject=new.subject, body=new.description, received_at=utcnow(),
    )
    async with call.pool.acquire() as conn, conn.transaction():
        customer = await repo.find_or_create_customer(conn, identities, sender.name)
        case = dataclasses.replace(rules.new_case(message), priority=new.priority)
        opened = await repo.open_case(conn, rules.candidate_refs(None), customer.id, case)
        token = opened.tracking_token
        entry = timeline.registered(message, call.who.handle)
        await repo.add_entry(conn, opened.id, entry, call.correlation_id, call.who.user_id)
        await conn.execute(
            "INSERT INTO case_participants (case_id, user_id, role) VALUES ($1, $2, "
            "'administrator')", opened.id, call.who.user_id,
        )
        snapshot = (await load_snapshot(conn, opened.id)).model_copy(
            update={"tracking_token": token}
        )
        email, phone = rules.customer_contact(identities)
        payload = rules.case_opened(
            opened.ref,
            CaseCustomer(id=customer.id, name=customer.name, email=email, phone=phone),
            case, opened.created_at,
        ).model_copy(update={"case": snapshot})
        await write_event(
            conn, envelope(payload, source=SOURCE, subject=opened.ref,
                           correlation_id=call.correlation_id),
        )
        await audit(conn, call.who, "case.create", opened.ref,
                    {"channel": Channel(new.channel).value}, call.correlation_id)
    return Created(ref=opened.ref, tracking_token=token)
