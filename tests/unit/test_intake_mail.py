"""Email parsing without I/O: every message of the corpus parses into what
tests/corpus/email/expected.yaml says, damaged messages never raise, and the quote,
signature and loop rules each hold on their own."""

from __future__ import annotations

import base64
import binascii
import hashlib
import multiprocessing as mp
import random
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from casegate_intake.adapters.imap_config import (
    Marking,
    own_addresses,
    parse_mailbox,
    parse_mailboxes,
)
from casegate_intake.adapters.imap_large import _decoder
from casegate_intake.domain import loops, markup, quotes
from casegate_intake.domain.mail import (
    ParsedMail,
    dedupe_key,
    parse_mail,
    plan_attachments,
    to_message,
)
from casegate_intake.settings import Settings
from casegate_shared.events import Envelope, MessageKind, MessageReceived

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "email"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "expected.yaml").read_text())
OWN = frozenset({"support@example.test"})
MAILBOX = "support@example.test@imap.example.test:993/INBOX"


def parsed(name: str) -> ParsedMail:
    return parse_mail((CORPUS / name).read_bytes(), OWN)


def message_of(mail: ParsedMail, raw: bytes = b"") -> MessageReceived:
    return to_message(
        mail,
        dedupe_key=dedupe_key(mail.message_id, raw),
        mailbox=MAILBOX,
        received_at=datetime(2024, 3, 1, tzinfo=UTC),
        attachments=[],
    )


# --- the corpus ---------------------------------------------------------------------------


def test_the_corpus_is_complete_and_every_file_has_expectations() -> None:
    files = {p.name for p in CORPUS.glob("*.eml")}
    assert len(files) >= 40
    assert files == set(EXPECTED), "expected.yaml and the .eml files must name the same messages"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_message_parses_as_expected(name: str) -> None:
    want = EXPECTED[name]
    mail = parsed(name)
    kind = "ignored" if mail.verdict.ignored else mail.verdict.kind.value
    assert kind == want["kind"], mail.verdict.reason
    if "subject" in want:
        assert mail.subject == want["subject"]
    if "subject_contains" in want:
        assert want["subject_contains"] in mail.subject
    assert (mail.html is not None) == want["has_html"]
    assert len(mail.attachments) == want["attachments"]
    simple = {
        "sender": mail.sender_email,
        "sender_name": mail.sender_name,
        "message_id": mail.message_id,
        "in_reply_to": mail.in_reply_to,
        "references": mail.references,
        "to": mail.to,
        "cc": mail.cc,
        "case_ref": mail.case_ref,
        "body": mail.body,
        "inline": sum(a.inline for a in mail.attachments),
        "attachment_names": [a.filename for a in mail.attachments],
        "attachment_types": [a.content_type for a in mail.attachments],
        "content_ids": [a.content_id for a in mail.attachments],
        "defects": bool(mail.defects),
    }
    for key, actual in simple.items():
        if key in want:
            assert actual == want[key], key
    for text in want.get("body_contains", []):
        assert text in mail.body
    for text in want.get("body_not_contains", []):
        assert text not in mail.body
    for text in want.get("full_body_contains", []):
        assert text in mail.full_body
    for text in want.get("html_contains", []):
        assert mail.html is not None and text in mail.html
    for text in want.get("html_not_contains", []):
        assert mail.html is not None and text.lower() not in mail.html.lower()
    for text in want.get("attachment_contains", []):
        assert any(text.encode() in a.data for a in mail.attachments)
    if "reason_contains" in want:
        assert want["reason_contains"] in mail.verdict.reason
    if "bounce" in want:
        assert mail.verdict.bounce is not None
        assert mail.verdict.bounce.model_dump(include=set(want["bounce"])) == want["bounce"]
    else:
        assert mail.verdict.bounce is None
    if not mail.verdict.ignored:
        msg = message_of(mail, (CORPUS / name).read_bytes())
        if "dedupe_key" in want:
            assert msg.dedupe_key == want["dedupe_key"]
        if "dedupe_key_prefix" in want:
            assert msg.dedupe_key.startswith(want["dedupe_key_prefix"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_corpus_message_makes_a_clean_bus_event(name: str) -> None:
    mail = parsed(name)
    msg = message_of(mail)
    # What goes on the bus must round-trip through JSON and fit PostgreSQL text.
    event = Envelope[MessageReceived](source="intake", type="message.received.email",
                                      correlationid="c", data=msg)
    again = Envelope[MessageReceived].model_validate_json(event.model_dump_json())
    assert again.data == msg
    for text in (msg.subject, msg.sender.name or "", msg.sender.email or ""):
        assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in text), text
    for text in (msg.body, msg.full_body or "", msg.html or ""):
        assert "\x00" not in text and not any(unicodedata.category(c) == "Cs" for c in text)
    assert msg.channel == "email" and msg.email is not None and msg.email.mailbox == MAILBOX


def test_a_message_seen_twice_gets_the_same_key_and_one_without_an_id_its_digest() -> None:
    a, b = parsed("duplicate_message_id_a.eml"), parsed("duplicate_message_id_b.eml")
    assert message_of(a, b"one").dedupe_key == message_of(b, b"two").dedupe_key
    raw = (CORPUS / "missing_message_id.eml").read_bytes()
    bare = parse_mail(raw, OWN)
    assert bare.message_id is None
    key = message_of(bare, raw).dedupe_key
    assert key == "email:sha256:" + hashlib.sha256(raw).hexdigest()
    # Another delivery of the same text passed through another relay: another message.
    assert message_of(bare, b"Received: from relay2\r\n" + raw).dedupe_key != key
    long_id = "<" + "x" * 500 + "@example.com>"
    key = dedupe_key(long_id, b"one")
    assert key.startswith("email:mid-sha256:") and key == dedupe_key(long_id, b"two")


ADVERSARIAL_BOUNCES = {
    "addresses run together": "could not be delivered to " + "a@" * 10_000,
    "endless domain": "could not be delivered to x@" + "a." * 10_000,
    "exchange list": "Delivery has failed to these recipients or groups:\n" + "a@b" * 7_000,
    "failed list": "following recipients failed: " + "a@a." * 5_000,
}


@pytest.mark.parametrize("body", ADVERSARIAL_BOUNCES.values(), ids=ADVERSARIAL_BOUNCES.keys())
def test_a_bounce_written_to_make_the_address_patterns_backtrack_is_read_at_once(
    body: str,
) -> None:
    """Anyone can make a mail look like a bounce; reading its text must not take minutes
    (which would hold a mailbox's batch, and the explain endpoint's event loop)."""
    raw = ("From: postmaster@example.com\nTo: support@example.test\n"
           "Subject: Undeliverable: hello\nMessage-ID: <r1@x>\n\n" + body + "\n").encode()
    # In a process of its own: a regular expression holds the interpreter until it is done,
    # so only a process can be given up on (before the fix: about half an hour each).
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("fork")) as pool:
        future = pool.submit(_is_bounce, raw)
        try:
            assert future.result(timeout=10)
        except FuturesTimeout:
            for worker in pool._processes.values():  # noqa: SLF001 - stop the runaway parse
                worker.kill()
            raise AssertionError("parsing did not finish in 10 s") from None


def _is_bounce(raw: bytes) -> bool:
    return parse_mail(raw, OWN).verdict.bounce is not None


# --- damaged input never raises --------------------------------------------------------------

TOKENS = [b"=?", b"?=", b"=?utf-8?b?", b"--", b"\n\n", b"\r\n", b"boundary=", b"\x00", b"\xff",
          b";", b'"', b"<", b">", b"@", b"*0*=", b"'", b"\t", b"(", b")", b":", b"\\",
          b"Content-Type: multipart/mixed; boundary=x\n", b"Content-Transfer-Encoding: base64\n",
          b"charset=\x00", b"Content-Type: message/rfc822\n"]
SEEDS = sorted(CORPUS.glob("*.eml"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), ops=st.lists(
    st.tuples(st.integers(0, 2), st.floats(0, 1), st.integers(0, len(TOKENS) - 1),
              st.binary(min_size=1, max_size=6)),
    min_size=1, max_size=10))
def test_damaged_messages_still_parse_into_valid_events(
    seed: Path, ops: list[tuple[int, float, int, bytes]]
) -> None:
    data = bytearray(seed.read_bytes())
    for op, where, token, junk in ops:
        at = int(where * len(data))
        if op == 0:
            data[at:at] = TOKENS[token]
        elif op == 1:
            del data[at : at + len(junk) * 3]
        else:
            data[at:at] = junk
    message_of(parse_mail(bytes(data), OWN)).model_dump_json()


@pytest.mark.parametrize("raw", [
    b"", b"\x00\x00", b"garbage without headers", b"Subject: only a header",
    b"Content-Type: multipart/mixed\n\nno boundary parameter",
    b"Content-Type: multipart/mixed; boundary=\"a\"\n\n" + b"--a\n" * 5000,
    b"Content-Type: text/plain; charset=\"\x00\"\n\nnul charset",
    b"From: =?x-unknown?q?=FF?= <a@b.c>\nSubject: =?utf-8?b?////?=\n\n\xff\xfe",
    b"Content-Type: message/rfc822\n\nContent-Type: message/rfc822\n\nSubject: deep\n\nx",
])
def test_hostile_messages_never_raise(raw: bytes) -> None:
    message_of(parse_mail(raw, OWN)).model_dump_json()


def test_deep_nesting_is_cut_off_not_recursed_forever() -> None:
    depth = 300
    head = "".join(
        f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n" for i in range(depth)
    )
    mail = parse_mail((head + "Content-Type: text/plain\n\ndeep text\n").encode(), OWN)
    message_of(mail).model_dump_json()


def test_random_bytes_never_raise() -> None:
    rng = random.Random(7)
    for _ in range(200):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        message_of(parse_mail(raw, OWN)).model_dump_json()


# --- quoted history and signatures ---------------------------------------------------------

QUOTES = [
    ("gmail wrapped attribution",
     "Yes please.\n\nOn Tue, 5 Mar 2024 at 10:00, Support Team <s@x.test>\nwrote:\n> Shall we?",
     "Yes please."),
    ("french attribution",
     "D'accord.\n\nLe mar. 5 mars 2024 à 10:00, Support <s@x.test> a écrit :\n> ok", "D'accord."),
    ("outlook separator", "Fine.\n\n-----Original Message-----\nFrom: a\nSent: b\n\nold", "Fine."),
    ("outlook header block", "Fine.\n\nFrom: Support <s@x.test>\nSent: Monday\nTo: me\n\nold",
     "Fine."),
    ("underscore line", "Fine.\n\n______________________________\nFrom: S\nDate: x\n\nold",
     "Fine."),
    ("signature delimiter", "Thanks!\n-- \nJane\nACME", "Thanks!"),
    ("signature without trailing space", "Thanks!\n--\nJane", "Thanks!"),
    ("mobile signature", "On my way.\n\nSent from my iPhone", "On my way."),
    ("german mobile signature", "Passt.\n\nVon meinem iPhone gesendet", "Passt."),
    ("quoted lines", "> what?\nThis.\n> and?\nThat.", "This.\nThat."),
    ("forward kept", "FYI\n\n---------- Forwarded message ---------\nFrom: a\nDate: b\n\nbody",
     "FYI\n\n---------- Forwarded message ---------\nFrom: a\nDate: b\n\nbody"),
    ("all quoted falls back to everything", "> only\n> quotes", "> only\n> quotes"),
    ("mobile line mid-text is the customer's", "Sent from my iPhone\nbut the app crashed",
     "Sent from my iPhone\nbut the app crashed"),
    ("a sentence starting with On", "On Monday I ordered a lamp.\nIt did not arrive.",
     "On Monday I ordered a lamp.\nIt did not arrive."),
    ("crlf", "Hi\r\n\r\nOn Mon, Support wrote:\r\n> x", "Hi"),
]


@pytest.mark.parametrize(("case", "text", "expected"), QUOTES, ids=[q[0] for q in QUOTES])
def test_new_text_cuts_history_and_signature(case: str, text: str, expected: str) -> None:
    assert quotes.new_text(text).text == expected


def test_trimmed_says_whether_anything_was_cut() -> None:
    assert quotes.new_text("Yes.\n\nOn Mon, S <s@x> wrote:\n> q").trimmed
    assert not quotes.new_text("Yes.\n\n").trimmed
    assert not quotes.new_text("> all quoted").trimmed


def test_html_to_text_marks_blockquotes_as_quotes() -> None:
    html = "<div>New answer</div><blockquote><p>Old question</p></blockquote><script>x()</script>"
    text = markup.to_text(html)
    assert text.splitlines()[0] == "New answer" and "> Old question" in text and "x()" not in text
    assert quotes.new_text(text).text == "New answer"


def test_sanitized_html_keeps_inline_images_and_drops_active_content() -> None:
    clean = markup.sanitize('<img src="cid:a@b" onerror="x()"><a href="javascript:y()">l</a>'
                            '<iframe src="https://e.example"></iframe><p style="x">t</p>')
    assert 'src="cid:a@b"' in clean
    for bad in ("onerror", "javascript", "iframe", "style"):
        assert bad not in clean


# --- loop and noise rules ------------------------------------------------------------------


def signals(headers: dict[str, str] | None = None, **kw: Any) -> loops.MailSignals:
    values = {k.lower(): (v,) for k, v in (headers or {}).items()}
    base: dict[str, Any] = {
        "sender": "jane@example.com", "subject": "Help", "content_type": "text/plain"
    }
    return loops.MailSignals(headers=values, **{**base, **kw})


LOOP_CASES = [
    ("person", signals(), "message", "written by a person"),
    ("auto-submitted", signals({"Auto-Submitted": "auto-replied"}), "auto_reply", "RFC 3834"),
    ("auto-submitted no", signals({"Auto-Submitted": "no"}), "message", "person"),
    ("auto-generated with params", signals({"Auto-Submitted": "auto-generated; owner=x"}),
     "auto_reply", "auto-generated"),
    ("precedence bulk", signals({"Precedence": "bulk"}), "auto_reply", "bulk"),
    ("precedence junk", signals({"Precedence": "JUNK"}), "auto_reply", "junk"),
    ("precedence list", signals({"Precedence": "list"}), "auto_reply", "list"),
    ("precedence first-class", signals({"Precedence": "first-class"}), "message", "person"),
    ("x-autoreply", signals({"X-Autoreply": "yes"}), "auto_reply", "x-autoreply"),
    ("x-autorespond", signals({"X-Autorespond": "1"}), "auto_reply", "x-autorespond"),
    ("exchange suppress", signals({"X-Auto-Response-Suppress": "All"}), "auto_reply", "Exchange"),
    ("list-id", signals({"List-Id": "<a.b.example>"}), "auto_reply", "List-Id"),
    ("vacation subject", signals(subject="Automatic reply: Help"), "auto_reply", "out-of-office"),
    ("vacation subject alone", signals(subject="Out of office"), "auto_reply", "out-of-office"),
    ("customer says out of office", signals(subject="Out of office hours support?"), "message", ""),
    ("customer says vacation", signals(subject="Vacation booking refund"), "message", ""),
    ("null return path", signals({"Return-Path": "<>"}), "auto_reply", "Return-Path"),
    ("dsn", signals(content_type="multipart/report", report_type="delivery-status"), "bounce",
     "delivery-status"),
    ("mailer-daemon", signals(sender="MAILER-DAEMON@mx.example"), "bounce", "MAILER-DAEMON"),
    ("postmaster", signals(sender="postmaster@example.com"), "bounce", "postmaster"),
    ("exchange ndr sender",
     signals(sender="MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@x.example"),
     "bounce", "MicrosoftExchange"),
    ("x-failed-recipients", signals({"X-Failed-Recipients": "a@b.example"}), "bounce", "X-Failed"),
    ("undeliverable subject", signals(subject="Undeliverable: Help"), "bounce", "non-delivery"),
    ("customer says delivery failed", signals(subject="Delivery failed? my parcel"), "message", ""),
    ("read receipt",
     signals(content_type="multipart/report", report_type="disposition-notification"),
     "auto_reply", "read receipt"),
    ("bounce wins over auto-submitted",
     signals({"Auto-Submitted": "auto-replied"}, content_type="multipart/report",
             report_type="delivery-status"), "bounce", "delivery-status"),
]


@pytest.mark.parametrize(
    ("case", "mail", "kind", "reason"), LOOP_CASES, ids=[c[0] for c in LOOP_CASES]
)
def test_loop_rules_classify_with_a_reason(
    case: str, mail: loops.MailSignals, kind: str, reason: str
) -> None:
    verdict = loops.classify(mail, OWN)
    assert verdict.kind == MessageKind(kind) and not verdict.ignored
    assert reason.lower() in verdict.reason.lower()
    assert [f.rule for f in verdict.trail] == [rule.__name__ for rule, _ in loops.RULES]
    assert sum(f.matched for f in verdict.trail) >= (kind != "message")


def test_our_own_address_is_ignored_whatever_else_it_says() -> None:
    verdict = loops.classify(signals({"Auto-Submitted": "auto-replied"},
                                     sender="support@example.test"), OWN)
    assert verdict.ignored and "own" in verdict.reason


def test_every_rule_returns_a_finding_and_never_acts() -> None:
    mail = signals()
    for rule, _ in loops.RULES:
        finding = rule(mail, OWN)
        assert isinstance(finding, loops.Finding) and finding.reason and not finding.matched


def test_bounce_details_fall_back_to_headers_and_text() -> None:
    text = "Your message to gone@example.org couldn't be delivered.\nStatus: 4.2.2 mailbox full"
    bounce = loops.bounce_details(signals(text=text))
    assert bounce.recipient == "gone@example.org" and bounce.status == "4.2.2"
    assert bounce.permanent is False
    bounce = loops.bounce_details(signals({"X-Failed-Recipients": "x@y.example, z@y.example"}))
    assert bounce.recipient == "x@y.example" and bounce.permanent is True


# --- attachment limits -----------------------------------------------------------------------


def test_attachments_over_a_limit_are_omitted_with_a_reason() -> None:
    plan = plan_attachments([100, 300, 100, 100], per_attachment=200, per_message=250)
    assert plan[0] is None and plan[2] is None
    assert plan[1] is not None and "200-byte" in plan[1]
    assert plan[3] is not None and "250-byte" in plan[3]


# --- mailbox configuration --------------------------------------------------------------------


def test_mailbox_urls_parse_with_encoded_credentials_and_defaults() -> None:
    box = parse_mailbox("imaps://support%40example.com:p%40ss%3Aw@mail.example.com/Support%20Inbox")
    assert (box.user, box.password, box.host, box.port) == (
        "support@example.com", "p@ss:w", "mail.example.com", 993)
    assert box.folder == "Support Inbox" and box.tls and box.address == "support@example.com"
    assert "p@ss" not in repr(box) and "p@ss" not in box.name
    plain = parse_mailbox("imap://u:p@127.0.0.1:1143?starttls=off")
    assert (plain.port, plain.folder, plain.tls, plain.starttls) == (1143, "INBOX", False, False)
    assert len(parse_mailboxes(" imap://a:b@h/INBOX , imaps://c:d@h/Other ,")) == 2
    bad_urls = ("pop3://a:b@h", "imap://h/INBOX", "imap://a:b@h/x%0Ay", "imap://a:b@h,imap://a:b@h")
    for bad in bad_urls:
        with pytest.raises(ValueError):
            parse_mailboxes(bad)


def test_pending_search_never_depends_on_time_or_count() -> None:
    flags = Marking("$CasegateProcessed", None, "$CasegateFailed", None)
    assert flags.pending_criteria() == [
        "NOT", "DELETED",
        "NOT", "KEYWORD", "$CasegateProcessed",
        "NOT", "KEYWORD", "$CasegateFailed",
    ]
    seen = Marking("\\Seen", None, "$Failed", "Failed")
    assert seen.pending_criteria() == ["NOT", "DELETED", "UNSEEN"]
    moved = Marking("$P", "Done", "$F", None)
    assert moved.pending_criteria() == ["NOT", "DELETED", "NOT", "KEYWORD", "$F"]
    assert moved.folders() == ["Done"]


def test_bad_flags_and_own_addresses_from_settings() -> None:
    with pytest.raises(ValueError):
        Marking.from_settings(Settings(imap_processed_flag="bad flag"))
    with pytest.raises(ValueError):
        Marking.from_settings(Settings(imap_failed_folder="a\r\nb"))
    boxes = parse_mailboxes("imap://Support%40Example.com:x@h,imap://robot:x@h")
    assert own_addresses(Settings(), boxes) == frozenset({"support@example.com"})
    configured = Settings(imap_own_addresses="A@x.example, b@x.example",
                          imap_mailboxes=SecretStr("imap://u:p@h"))
    assert own_addresses(configured, boxes) == frozenset({"a@x.example", "b@x.example"})


# --- streamed attachment parts ----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 5000), max_size=8),
       encoding=st.sampled_from(["base64", "quoted-printable", "8bit"]))
def test_transfer_encodings_are_undone_across_any_chunk_boundaries(
    data: bytes, cuts: list[int], encoding: str
) -> None:
    if encoding == "base64":
        wire = base64.encodebytes(data).replace(b"\n", b"\r\n")
    elif encoding == "quoted-printable":
        wire = binascii.b2a_qp(data, istext=False).replace(b"\n", b"\r\n")
    else:
        wire = data
    bounds = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    chunks = [wire[a:b] for a, b in zip(bounds, bounds[1:])] or [b""]
    decode = _decoder(encoding)
    out = b"".join(decode(chunk, i == len(chunks) - 1) for i, chunk in enumerate(chunks))
    assert out == data
