"""The notification policy: who is told about a new case, and the key that makes it unique."""

from __future__ import annotations

from datetime import UTC, datetime

from casegate_notifier.domain.policy import decide, notifications_for, one_line
from casegate_shared.events import CaseCustomer, CaseOpened, Channel, Envelope, Priority, envelope


def opened(
    email: str | None = "ann@example.com",
    name: str | None = "Ann Lee",
    subject: str = "Invoice is wrong",
    ref: str = "CS-7K3M9Q",
    event_id: str | None = None,
) -> Envelope[CaseOpened]:
    return envelope(
        CaseOpened(
            ref=ref,
            customer=CaseCustomer(id=7, name=name, email=email),
            channel=Channel.WEBFORM,
            subject=subject,
            body="My invoice shows the wrong amount.",
            priority=Priority.P3,
            status="new",
            opened_at=datetime(2025, 3, 4, 10, 30, tzinfo=UTC),
        ),
        source="case-store",
        subject=ref,
        event_id=event_id,
    )


def test_a_customer_with_an_email_gets_one_acknowledgement_by_email() -> None:
    event = opened()
    [n] = notifications_for(event)
    assert n.channel is Channel.EMAIL
    assert n.recipient == "ann@example.com"
    assert n.recipient_name == "Ann Lee"
    assert n.template == "case_opened"
    assert n.case_ref == "CS-7K3M9Q"
    assert n.values["ref"] == "CS-7K3M9Q"
    assert n.values["subject"] == "Invoice is wrong"
    assert n.values["opened_at"] == "2025-03-04 10:30 UTC"


def test_the_dedupe_key_names_event_recipient_and_channel_exactly() -> None:
    first = opened(event_id="11111111-1111-1111-1111-111111111111")
    again = opened(event_id="11111111-1111-1111-1111-111111111111")
    other_event = opened(event_id="22222222-2222-2222-2222-222222222222")
    other_person = opened(
        email="bob@example.com", event_id="11111111-1111-1111-1111-111111111111"
    )
    key = notifications_for(first)[0].dedupe_key
    assert key == notifications_for(again)[0].dedupe_key  # a redelivery is the same notification
    assert key != notifications_for(other_event)[0].dedupe_key
    assert key != notifications_for(other_person)[0].dedupe_key
    assert "11111111-1111-1111-1111-111111111111" in key and "email" in key


def test_the_email_domain_is_case_insensitive_for_dedupe() -> None:
    eid = "33333333-3333-3333-3333-333333333333"
    upper = notifications_for(opened(email=" Ann@EXAMPLE.com ", event_id=eid))[0]
    lower = notifications_for(opened(email="Ann@example.com", event_id=eid))[0]
    assert upper.recipient == "Ann@example.com"
    assert upper.dedupe_key == lower.dedupe_key


def test_no_email_means_nobody_is_told_with_a_reason() -> None:
    event = opened(email=None)
    assert notifications_for(event) == []
    [verdict] = decide(event)
    assert verdict.notification is None
    assert verdict.reason == "customer gave no email address"


def test_an_unusable_email_is_skipped_not_sent() -> None:
    bad_ones = ("ann@example.com\r\nBcc: x@evil.test", "not-an-address", "a b@example.com", "a@b@c")
    for bad in bad_ones:
        [verdict] = decide(opened(email=bad))
        assert verdict.notification is None, bad
        assert verdict.reason == "customer email address is not usable"


def test_customer_text_is_flattened_to_one_bounded_line() -> None:
    [n] = notifications_for(opened(subject="Help\r\nBcc: x@evil.test\x00", name="Eve\nX-A: 1"))
    assert n.values["subject"] == "Help Bcc: x@evil.test"
    assert n.recipient_name == "Eve X-A: 1"
    assert len(one_line("x" * 1000, 150)) == 150
    [blank] = notifications_for(opened(subject=" \r\n ", name="  "))
    assert blank.values["subject"] == "(no subject)"
    assert blank.recipient_name is None


def test_events_without_rules_notify_nobody() -> None:
    event = opened().model_copy(update={"type": "case.something_else"})
    assert decide(event) == []
