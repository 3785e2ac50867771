"""case-store's pure rules: identities, references, subjects, status moves, timeline text."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from itertools import islice

import pytest

from casegate_case_store.domain import cases, timeline
from casegate_case_store.domain.cases import CaseStatus, Identity, IdentityKind
from casegate_shared.events import (
    CASE_REF_PATTERN,
    CaseCustomer,
    Channel,
    MessageReceived,
    NotificationOutcome,
    Priority,
    RouteDecided,
    RuleVerdict,
    Sender,
)


def msg(**overrides: object) -> MessageReceived:
    fields: dict[str, object] = {
        "channel": Channel.WEBFORM,
        "dedupe_key": "webform:1",
        "sender": Sender(name="Jane", email="Jane@Example.com"),
        "subject": "Printer on fire",
        "body": "It is on fire.\nPlease help.",
        "received_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    fields.update(overrides)
    return MessageReceived(**fields)  # type: ignore[arg-type]


def outcome(**overrides: object) -> NotificationOutcome:
    fields: dict[str, object] = {
        "ref": "CS-7K3M9Q",
        "notification_key": "k1",
        "channel": Channel.EMAIL,
        "recipient": "jane.doe@example.com",
        "template": "acknowledgement",
        "provider": "smtp",
        "outcome": "sent",
    }
    fields.update(overrides)
    return NotificationOutcome(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("no-at-sign", None),
        ("@example.com", None),
        ("jane@", None),
        ("jane doe@example.com", None),
    ],
)
def test_normalize_email(raw: str, expected: str | None) -> None:
    assert cases.normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+44 7700 900-123", "+447700900123"),
        ("(415) 555.0100", "4155550100"),
        ("call me", None),
        ("+1", None),
    ],
)
def test_normalize_phone(raw: str, expected: str | None) -> None:
    assert cases.normalize_phone(raw) == expected


def test_sender_identities_put_email_first_and_skip_unusable_values() -> None:
    sender = Sender(name="Jane", email="JANE@example.com", phone="+44 7700 900123")
    assert cases.sender_identities(sender) == [
        Identity(IdentityKind.EMAIL, "jane@example.com"),
        Identity(IdentityKind.PHONE, "+447700900123"),
    ]
    assert cases.sender_identities(Sender(email="nonsense", phone="+1 555 0100")) == [
        Identity(IdentityKind.PHONE, "+15550100")
    ]
    assert cases.sender_identities(Sender(name="Anonymous")) == []


def test_customer_contact_reads_identities_by_kind() -> None:
    ids = [Identity(IdentityKind.PHONE, "+15550100")]
    assert cases.customer_contact(ids) == (None, "+15550100")


def test_normalize_ref_accepts_what_customers_type_and_nothing_else() -> None:
    assert cases.normalize_ref(" cs-7k3m9q ") == "CS-7K3M9Q"
    assert cases.normalize_ref("CS-7K3M9O") is None  # O is not in the alphabet
    assert cases.normalize_ref("CS-7K3M9Q1") is None
    assert cases.normalize_ref("") is None
    assert cases.normalize_ref(None) is None


def test_candidate_refs_offer_the_promised_ref_first_then_fresh_ones() -> None:
    refs = list(islice(cases.candidate_refs("CS-7K3M9Q"), 4))
    assert refs[0] == "CS-7K3M9Q"
    assert all(re.fullmatch(CASE_REF_PATTERN, r) for r in refs)
    assert len(set(refs)) == 4


def test_candidate_refs_ignore_a_promised_value_that_is_not_a_ref() -> None:
    first = next(cases.candidate_refs("DROP TABLE cases"))
    assert first != "DROP TABLE cases"
    assert re.fullmatch(CASE_REF_PATTERN, first)
    assert re.fullmatch(CASE_REF_PATTERN, next(cases.candidate_refs(None)))


def test_case_subject_is_one_line_and_falls_back_to_the_body() -> None:
    assert cases.case_subject("  Printer\n on   fire ", "x") == "Printer on fire"
    assert cases.case_subject("", "\n\n  Where is my   parcel?\nThanks") == "Where is my parcel?"
    assert cases.case_subject(" ", "  ") == cases.NO_SUBJECT
    long = cases.case_subject("x" * 500, "")
    assert len(long) == cases.SUBJECT_MAX and long.endswith("\u2026")


def test_new_case_opens_as_new_with_the_default_priority() -> None:
    case = cases.new_case(msg(subject="", body="Hello\nworld"))
    assert case.status is CaseStatus.NEW
    assert case.priority is Priority.P3
    assert case.subject == "Hello"
    assert case.description == "Hello\nworld"
    assert case.channel is Channel.WEBFORM


def test_case_opened_carries_the_case_and_customer() -> None:
    case = cases.new_case(msg())
    opened_at = datetime(2025, 1, 2, tzinfo=UTC)
    customer = CaseCustomer(id=7, name="Jane", email="jane@example.com")
    event = cases.case_opened("CS-7K3M9Q", customer, case, opened_at)
    assert (event.ref, event.customer, event.status, event.priority) == (
        "CS-7K3M9Q",
        customer,
        "new",
        Priority.P3,
    )
    assert event.body == case.description and event.opened_at == opened_at


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (CaseStatus.NEW, CaseStatus.OPEN),
        (CaseStatus.OPEN, CaseStatus.OPEN),
        (CaseStatus.PENDING_CUSTOMER, CaseStatus.PENDING_CUSTOMER),
        (CaseStatus.RESOLVED, CaseStatus.RESOLVED),
    ],
)
def test_status_after_routing(before: CaseStatus, after: CaseStatus) -> None:
    assert cases.status_after_routing(before) is after


def test_message_in_entry_is_public_and_keeps_the_body() -> None:
    entry = timeline.message_in(msg())
    assert entry.kind is timeline.EntryKind.MESSAGE_IN
    assert entry.visibility is timeline.Visibility.PUBLIC
    assert entry.actor == "customer"
    assert entry.body == "It is on fire.\nPlease help."
    assert entry.data["dedupe_key"] == "webform:1"
    assert entry.data["received_at"] == "2025-01-02T03:04:05+00:00"


def test_routed_entry_is_internal_with_the_explanation() -> None:
    decision = RouteDecided(
        ref="CS-7K3M9Q",
        team="billing",
        priority=Priority.P2,
        rule="invoice-words",
        explanation=[
            RuleVerdict(rule="vip", matched=False, reason="sender is not a VIP"),
            RuleVerdict(rule="invoice-words", matched=True, reason="subject mentions 'invoice'"),
        ],
    )
    entry = timeline.routed(decision)
    assert entry.visibility is timeline.Visibility.INTERNAL
    assert entry.body == "Routed to team billing at priority P2 by rule 'invoice-words'"
    assert entry.data["explanation"][1] == {
        "rule": "invoice-words",
        "matched": True,
        "reason": "subject mentions 'invoice'",
    }


@pytest.mark.parametrize(
    ("recipient", "masked"),
    [
        ("jane.doe@example.com", "j***@example.com"),
        ("+447700900123", "+44***123"),
        ("4155550100", "41***100"),
        ("12345", "1***"),
        ("U024BE7LH", "U***"),
        ("", "***"),
    ],
)
def test_mask_recipient(recipient: str, masked: str) -> None:
    assert timeline.mask_recipient(recipient) == masked


def test_notification_summary_masks_the_address() -> None:
    assert (
        timeline.notification_summary(outcome())
        == "acknowledgement sent by email to j***@example.com"
    )


def test_failed_notification_says_why_on_one_short_line() -> None:
    entry = timeline.notification(
        outcome(
            outcome="failed",
            channel=Channel.SMS,
            recipient="+447700900123",
            reason="carrier said:\n" + "no " * 200,
        )
    )
    assert entry.body.startswith("acknowledgement failed by SMS to +44***123: carrier said: no no")
    assert "\n" not in entry.body
    assert len(entry.body) < 300
    assert entry.visibility is timeline.Visibility.INTERNAL
    assert "+447700900123" not in str(entry.data)
