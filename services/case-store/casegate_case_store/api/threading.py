"""Where would this message go, and why? The threading decision for a normalized message,
made exactly as for a real one but in a transaction that is always rolled back: nothing is
created, nothing changes. intake's `POST /v1/threading/explain` parses a raw email and asks
here."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from casegate_shared.events import MessageKind, MessageReceived

from ..domain import cases as rules
from ..domain.threading import Outcome, decide
from ..inbound import KEYWORDS, candidates
from ..store.users import Role
from .routing import THREADING, Api, Call, NoInput

api = Api()


class Considered(BaseModel):
    via: str
    ref: str
    same_customer: bool
    status: str


class Explanation(BaseModel):
    outcome: str  # join, reopen, new, new_linked, or what a loop/keyword message does instead
    ref: str | None  # the case joined or reopened, or the new case's parent
    reason: str
    known_customer: bool
    considered: list[Considered]


class _Rollback(Exception):
    pass


@api.route("POST", "/v1/threading/explain", roles={Role.RESOLVER, Role.SUPERVISOR, Role.ADMIN},
           tag="threading", body=MessageReceived, response=Explanation,
           summary="Which case a message would join, and why; changes nothing")
async def explain(call: Call[NoInput, MessageReceived]) -> Explanation:
    msg = call.body
    if msg.kind is MessageKind.BOUNCE:
        return Explanation(outcome="bounce", ref=None, known_customer=False, considered=[],
                           reason="a bounce opens no case: it marks the address and the case "
                                  "whose message bounced")
    if msg.kind in KEYWORDS:
        return Explanation(outcome=msg.kind.value, ref=None, known_customer=False, considered=[],
                           reason="an SMS keyword changes the number's opt-out, opens nothing")
    result: Explanation | None = None
    try:
        async with call.pool.acquire() as conn, conn.transaction():
            customer_id = await _known_customer(conn, msg)
            found = await candidates(conn, msg, customer_id or 0, call.request.app[THREADING])
            thread = decide(found, customer_id or 0, datetime.now(UTC),
                            call.request.app[THREADING].reopen_window)
            refs = {c.case_id: c.ref for c in found}
            outcome, reason = thread.outcome.value, thread.reason
            if msg.kind is MessageKind.AUTO_REPLY and thread.outcome is not Outcome.JOIN:
                outcome, reason = "dropped", f"an auto-reply opens nothing ({thread.reason})"
            result = Explanation(
                outcome=outcome, ref=refs.get(thread.case_id or -1), reason=reason,
                known_customer=customer_id is not None,
                considered=[Considered(via=c.via.value, ref=c.ref, status=c.status.value,
                                       same_customer=c.customer_id == customer_id)
                            for c in found],
            )
            raise _Rollback  # nothing a lookup touched may stay
    except _Rollback:
        pass
    assert result is not None
    return result


async def _known_customer(conn: object, msg: MessageReceived) -> int | None:
    for identity in rules.sender_identities(msg.sender):
        found = await conn.fetchval(  # type: ignore[attr-defined]
            "SELECT customer_id FROM customer_identities WHERE kind = $1 AND value = $2",
            identity.kind.value, identity.value,
        )
        if found is not None:
            return int(found)
    return None
