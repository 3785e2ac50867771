"""Building the SMTP message: CR, LF and NUL are refused in every header value we build,
the Message-ID is stable per notification, and SMTP errors are sorted temporary/permanent."""

from __future__ import annotations

import dataclasses
from typing import Any
from email import message_from_bytes, policy

import aiosmtplib
import pytest

from casegate_notifier.adapters.smtp import (
    SmtpSender,
    UnsafeHeader,
    classify,
    build_message,
    parse_smtp_url,
)
from casegate_notifier.domain.delivery import OutboundEmail, message_id_for
from tests.conftest import free_port

SENDER = "Support <support@casegate.localhost>"


def outbound(**changes: Any) -> OutboundEmail:
    base = OutboundEmail(
        to="ann@example.com",
        to_name="Ann Lee",
        subject="[CS-7K3M9Q] We received your request: Hi",
        text="Hello\n",
        html="<p>Hello</p>",
        message_id=message_id_for("event/email/ann@example.com", "CS-7K3M9Q", "casegate.localhost"),
        case_ref="CS-7K3M9Q",
        dedupe_key="event/email/ann@example.com",
    )
    return dataclasses.replace(base, **changes)


def test_a_clean_message_has_the_headers_we_mean() -> None:
    mail = message_from_bytes(build_message(outbound(), SENDER).as_bytes(), policy=policy.default)
    assert mail["To"] == "Ann Lee <ann@example.com>"
    assert mail["From"] == SENDER
    assert mail["Subject"] == "[CS-7K3M9Q] We received your request: Hi"
    assert mail["Message-ID"] == outbound().message_id
    assert mail["X-Casegate-Ref"] == "CS-7K3M9Q"


def test_reply_to_names_the_intake_mailbox_and_defaults_to_the_sender() -> None:
    inbox = "Support <inbox@casegate.localhost>"
    routed = build_message(outbound(), SENDER, reply_to=inbox).as_bytes()
    assert message_from_bytes(routed, policy=policy.default)["Reply-To"] == inbox
    default = build_message(outbound(), SENDER).as_bytes()
    assert message_from_bytes(default, policy=policy.default)["Reply-To"] == SENDER
    with pytest.raises(UnsafeHeader):
        build_message(outbound(), SENDER, reply_to=inbox + "\r\nBcc: x@evil.test")


def test_a_non_ascii_name_and_subject_are_encoded_not_broken() -> None:
    mime = build_message(outbound(to_name="Zoë Ångström", subject="[CS-7K3M9Q] Grüße"), SENDER)
    raw = mime.as_bytes()
    raw.decode("ascii")  # policy.SMTP encodes words, so the wire form stays 7-bit
    mail = message_from_bytes(raw, policy=policy.default)
    assert mail["To"].addresses[0].display_name == "Zoë Ångström"
    assert mail["Subject"] == "[CS-7K3M9Q] Grüße"


@pytest.mark.parametrize("bad", ["\r\nBcc: x@evil.test", "\nBcc: x@evil.test", "\rX: y", "\0"])
@pytest.mark.parametrize("field", ["subject", "to_name", "to", "message_id", "case_ref"])
def test_line_breaks_and_nul_are_refused_in_every_header(field: str, bad: str) -> None:
    value = getattr(outbound(), field) + bad
    with pytest.raises(UnsafeHeader):
        build_message(outbound(**{field: value}), SENDER)


def test_the_sender_is_checked_too() -> None:
    with pytest.raises(UnsafeHeader):
        build_message(outbound(), "Support <support@casegate.localhost>\r\nBcc: x@evil.test")


async def test_an_unsafe_message_is_a_permanent_failure_and_never_dialled() -> None:
    # Nothing listens on this port: had the sender dialled, the result would be temporary.
    sender = SmtpSender(f"smtp://127.0.0.1:{free_port()}", SENDER, timeout_s=2)
    result = await sender.send(outbound(subject="Hi\r\nBcc: x@evil.test"))
    assert not result.ok and result.temporary is False
    assert result.reason is not None and "unsafe header" in result.reason
    refused = await sender.send(outbound())
    assert not refused.ok and refused.temporary is True


def test_message_id_is_stable_per_dedupe_key_and_differs_between_keys() -> None:
    a = message_id_for("k1", "CS-7K3M9Q", "casegate.localhost")
    assert a == message_id_for("k1", "CS-7K3M9Q", "casegate.localhost")
    assert a != message_id_for("k2", "CS-7K3M9Q", "casegate.localhost")
    assert a.startswith("<CS-7K3M9Q.") and a.endswith("@casegate.localhost>")


def test_smtp_urls() -> None:
    plain = parse_smtp_url("smtp://127.0.0.1:2525")
    assert (plain.host, plain.port, plain.implicit_tls) == ("127.0.0.1", 2525, False)
    assert plain.username is None and plain.password is None
    auth = parse_smtp_url("smtp://user%40corp:p%2Fss@mail.example.com:587")
    assert (auth.username, auth.password, auth.port) == ("user@corp", "p/ss", 587)
    tls = parse_smtp_url("smtps://mail.example.com")
    assert (tls.port, tls.implicit_tls) == (465, True)
    with pytest.raises(ValueError):
        parse_smtp_url("http://mail.example.com")


def test_4xx_timeouts_and_connection_errors_are_temporary_5xx_permanent() -> None:
    assert classify(aiosmtplib.SMTPResponseException(451, "try later")).temporary
    assert not classify(aiosmtplib.SMTPResponseException(554, "rejected")).temporary
    assert classify(aiosmtplib.SMTPConnectError("refused")).temporary
    assert classify(aiosmtplib.SMTPTimeoutError("slow")).temporary
    assert classify(ConnectionResetError()).temporary
    refused_4xx = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(450, "mailbox busy", "a@example.com")]
    )
    refused_5xx = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@example.com")]
    )
    assert classify(refused_4xx).temporary
    assert not classify(refused_5xx).temporary


def test_answers_to_the_customer_carry_threading_headers() -> None:
    mime = build_message(
        outbound(
            in_reply_to="<m2@mail.example.com>",
            references=("<m1@mail.example.com>", "<m2@mail.example.com>"),
        ),
        SENDER,
    )
    mail = message_from_bytes(mime.as_bytes(), policy=policy.default)
    assert mail["In-Reply-To"] == "<m2@mail.example.com>"
    assert mail["References"] == "<m1@mail.example.com> <m2@mail.example.com>"
    plain = message_from_bytes(build_message(outbound(), SENDER).as_bytes(), policy=policy.default)
    assert plain["In-Reply-To"] is None and plain["References"] is None


@pytest.mark.parametrize("field", ["in_reply_to", "references"])
def test_line_breaks_in_threading_headers_are_refused(field: str) -> None:
    bad = "<m1@mail.example.com>\r\nBcc: x@evil.test"
    with pytest.raises(UnsafeHeader):
        value: Any = bad if field == "in_reply_to" else (bad,)
        build_message(outbound(**{field: value}), SENDER)


def test_a_message_without_html_is_plain_text() -> None:
    mime = build_message(outbound(html=""), SENDER)
    assert mime.get_content_type() == "text/plain"
