"""End to end by email, four real processes, a real Dovecot mailbox and a real SMTP server: a
customer's mail opens a case and is acknowledged; their reply to the acknowledgement (subject
changed, no case token) joins the same case through its headers; a stranger's mail naming the
same thread does not; an auto-reply is recorded without another acknowledgement; a bounce of
our mail marks the address and lands on the case."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from email import message_from_string
from email.message import EmailMessage, Message
from email.utils import make_msgid

import aiohttp
import asyncpg
import pytest

from casegate_case_store.store.users import Role, create_token, create_user
from tests.support.dovecot import Dovecot, dovecot  # noqa: F401 - fixture

from .conftest import Inbox, Stack, stack_env, start_stack, stop_stack, wait_for

SUPPORT = "support@casegate.localhost"


@pytest.fixture(scope="module")
def folder(dovecot: Dovecot) -> str:  # noqa: F811
    name = f"e2e{int(time.time() * 1000) % 10**9}"
    with dovecot.client() as client:
        client.create_folder(name)
    return name


@pytest.fixture(scope="module")
def stack(
    amqp_url: str, database_url: str, smtp_server: tuple[Inbox, int], dovecot: Dovecot,  # noqa: F811
    folder: str, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    inbox, port = smtp_server
    tmp = tmp_path_factory.mktemp("email")
    env = stack_env(amqp_url, database_url, port, tmp)
    env.update({
        "CASEGATE_IMAP_MAILBOXES": dovecot.url(folder),
        "CASEGATE_IMAP_OWN_ADDRESSES": SUPPORT,
        "CASEGATE_BLOB_DIR": str(tmp / "blobs"),
    })
    s = start_stack(env, inbox)
    yield s
    if s.proc.poll() is None:
        stop_stack(s)


def mail(sender: str, subject: str, body: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, SUPPORT, subject
    msg["Message-ID"] = make_msgid(domain="customer.example")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def append(server: Dovecot, folder: str, msg: Message) -> None:
    with server.client() as client:
        client.append(folder, msg.as_bytes())


async def case_of(db: asyncpg.Connection, message_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT c.id, c.ref, c.parent_id, t.data FROM timeline_entries t "
        "JOIN cases c ON c.id = t.case_id WHERE t.kind = 'message_in' "
        "AND t.data->>'message_id' = $1", message_id,
    )
    return row


async def test_email_round_trip_threading_loops_and_bounces(
    stack: Stack, dovecot: Dovecot, folder: str, database_url: str  # noqa: F811
) -> None:
    db = await asyncpg.connect(database_url)
    try:
        first = mail("Pat Doe <pat@customer.example>", "Printer jams on page two",
                     "Every print job jams on the second page.\n\nPat")
        append(dovecot, folder, first)
        opened = await wait_for(lambda: case_of(db, first["Message-ID"]))
        ref = opened["ref"]

        def acks_to_pat() -> list[Message]:
            return [m for m in stack.smtp.messages
                    if "pat@customer.example" in str(m["To"]) and ref in str(m["Subject"])]

        async def acknowledged() -> list[Message]:
            return acks_to_pat()

        (ack,) = await wait_for(acknowledged)
        assert ack["Auto-Submitted"] in ("auto-replied", "auto-generated")
        assert SUPPORT in str(ack["Reply-To"])  # the customer's answer comes to our mailbox

        # Pat answers the acknowledgement; their client changes the subject and drops the
        # token: the headers still say which case it is.
        references = f"{ack.get('References', '')} {ack['Message-ID']}".strip()
        reply = mail("Pat Doe <pat@customer.example>", "new toner did not help",
                     "Tried new toner, same thing.\n\nOn Monday support wrote:\n> We got it",
                     In_Reply_To=ack["Message-ID"], References=references)
        append(dovecot, folder, reply)
        joined = await wait_for(lambda: case_of(db, reply["Message-ID"]))
        assert joined["id"] == opened["id"]
        assert "header" in str(joined["data"])

        # A stranger's mail naming the same thread never joins Pat's case.
        stranger = mail("Eve <eve@elsewhere.example>", "Re: Printer jams on page two",
                        "Is this about my printer too?", In_Reply_To=ack["Message-ID"])
        append(dovecot, folder, stranger)
        linked = await wait_for(lambda: case_of(db, stranger["Message-ID"]))
        assert linked["id"] != opened["id"] and linked["parent_id"] == opened["id"]

        # Where would these go? The explain endpoint says so, changing nothing.
        cases_now = await db.fetchval("SELECT count(*) FROM cases")
        user = await create_user(db, "lead", "Lead", [Role.SUPERVISOR])
        _, token = await create_token(db, user, "e2e")
        for probe, outcome, named in ((reply, "join", ref), (stranger, "new_linked", ref)):
            answer = await explain(stack, token, probe.as_bytes())
            assert (answer["outcome"], answer["ref"]) == (outcome, named), answer
        assert (await explain(stack, "cg_wrong", reply.as_bytes())).get("error")
        assert await db.fetchval("SELECT count(*) FROM cases") == cases_now

        # Pat's vacation responder: on the case, and no acknowledgement goes back to it.
        away = mail("Pat Doe <pat@customer.example>", "Out of office", "Back on Monday.",
                    Auto_Submitted="auto-replied", In_Reply_To=ack["Message-ID"])
        append(dovecot, folder, away)
        recorded = await wait_for(lambda: case_of(db, away["Message-ID"]))
        assert recorded["id"] == opened["id"]
        await asyncio.sleep(2.0)
        assert len(acks_to_pat()) == 1

        # Our acknowledgement bounces: the address is marked, the case says so, no new case.
        cases_before = await db.fetchval("SELECT count(*) FROM cases")
        append(dovecot, folder, dsn(ack["Message-ID"], "pat@customer.example"))

        async def bounced() -> bool:
            return bool(await db.fetchval(
                "SELECT bouncing_at IS NOT NULL FROM customer_identities "
                "WHERE value = 'pat@customer.example'"))

        await wait_for(bounced)
        note = await db.fetchval("SELECT body FROM timeline_entries WHERE case_id = $1 "
                                 "AND kind = 'delivery'", opened["id"])
        assert note and "bounced" in note
        assert await db.fetchval("SELECT count(*) FROM cases") == cases_before
    finally:
        await db.close()


async def explain(stack: Stack, token: str, raw: bytes) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "message/rfc822"}
    async with aiohttp.ClientSession() as http:
        url = stack.url("intake", "/v1/threading/explain")
        async with http.post(url, data=raw, headers=headers) as resp:
            answer: dict[str, object] = await resp.json()
            return answer


def dsn(original_id: str, recipient: str) -> Message:
    """An RFC 3464 delivery status notification about one of our messages."""
    raw = f"""From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>
To: {SUPPORT}
Subject: Undelivered Mail Returned to Sender
Message-ID: {make_msgid(domain="mx.customer.example")}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

This is the mail system. Your message could not be delivered.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.customer.example

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 no such user

--b1
Content-Type: text/rfc822-headers

From: {SUPPORT}
To: {recipient}
Message-ID: {original_id}
Subject: acknowledgement

--b1--
"""
    return message_from_string(raw.replace("\n", "\r\n"))
