"""Sample events with plausible data, for `casegate notify preview`, the SMS length check and
the benchmark: one for every event type the notifier binds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from casegate_shared.events import (
    CaseChange,
    CaseCustomer,
    CaseOpened,
    CaseRouted,
    CaseSnapshot,
    CaseUpdated,
    Channel,
    Contact,
    Envelope,
    NotificationOutcome,
    Participant,
    Priority,
    envelope,
)

from .facts import NOTIFICATION_FAILED, OPENED, ROUTED

SAMPLE_REF = "CS-7K3M9Q"
SAMPLE_SUBJECT = "Invoice 2024-113 shows the wrong amount"
SAMPLE_TIME = datetime(2025, 3, 4, 10, 30, tzinfo=UTC)
SAMPLE_TOKEN = "q7Kx2-fT9_bLm4ZpW8rYc3Nd"  # as long as case-store's (18 random bytes)
# Where the tracking link points when no public URL is given: as long as a plausible one, so
# the SMS length check counts the link.
SAMPLE_PUBLIC_URL = "https://support.example.com"


def sample_contact(language: str = "en", **changes: Any) -> Contact:
    base: dict[str, Any] = {
        "customer_id": 7,
        "name": "Ann Lee",
        "email": "ann@example.com",
        "phone": "+14155550100",
        "preferred_channel": Channel.EMAIL,
        "fallback": [Channel.EMAIL, Channel.SMS],
        "language": language,
        "timezone": "Europe/Berlin",
        "tier": "gold",
    }
    return Contact(**{**base, **changes})


def sample_snapshot(language: str = "en", **changes: Any) -> CaseSnapshot:
    base: dict[str, Any] = {
        "ref": SAMPLE_REF,
        "subject": SAMPLE_SUBJECT,
        "channel": Channel.EMAIL,
        "status": "open",
        "priority": Priority.P2,
        "team": "billing",
        "assignee": "bob",
        "customer": sample_contact(language),
        "participants": [
            Participant(role="owner", user="bob", email="bob@corp.example", slack_user="U0BOB"),
            Participant(role="administrator", user="carol", email="carol@corp.example"),
            Participant(role="watcher", user="dave", email="dave@corp.example"),
        ],
        "resolution_due": SAMPLE_TIME + timedelta(hours=8),
        "last_customer_message_id": "<m1@mail.example.com>",
        "references": ["<m1@mail.example.com>"],
    }
    return CaseSnapshot(**{**base, **changes})


def sample_event(event_type: str, language: str = "en", status: str | None = None) -> Envelope[Any]:
    """A plausible event of `event_type` (`case.status_changed` with `status`, default resolved)."""
    if event_type == OPENED:
        payload: Any = CaseOpened(
            ref=SAMPLE_REF,
            customer=CaseCustomer(
                id=7, name="Ann Lee", email="ann@example.com", phone="+14155550100"
            ),
            channel=Channel.EMAIL,
            subject=SAMPLE_SUBJECT,
            body="The amount is twice what we agreed.",
            priority=Priority.P2,
            status="new",
            opened_at=SAMPLE_TIME,
            case=sample_snapshot(language, status="new", tracking_token=SAMPLE_TOKEN),
        )
    elif event_type == ROUTED:
        payload = CaseRouted(
            ref=SAMPLE_REF, team="billing", priority=Priority.P2, rule="billing",
            case=sample_snapshot(language),
        )
    elif event_type == NOTIFICATION_FAILED:
        payload = NotificationOutcome(
            ref=SAMPLE_REF, notification_key="sample/email/ann@example.com", channel=Channel.EMAIL,
            recipient="ann@example.com", template="case_resolved", provider="smtp",
            outcome="failed", reason="smtp 550: no such user", permanent=True,
        )
    else:
        change = CaseChange(event_type.removeprefix("case."))
        new_status = status or "resolved"
        details: dict[str, Any] = {}
        if change is CaseChange.REPLY_ADDED:
            details = {"body": "We have corrected the invoice; the new one is attached.",
                       "channel": Channel.EMAIL, "reply_to": "ann@example.com", "actor": "bob"}
        elif change is CaseChange.NOTE_ADDED:
            details = {"body": "Customer called, confirmed the amount.", "actor": "bob"}
        elif change in (CaseChange.SLA_WARNING, CaseChange.SLA_BREACHED):
            details = {"clock": "resolution", "due_at": SAMPLE_TIME + timedelta(hours=8)}
        elif change is CaseChange.ESCALATED:
            details = {"escalated_to": "billing-leads"}
        elif change is CaseChange.STATUS_CHANGED:
            details = {"previous": "open"}
        payload = CaseUpdated(
            change=change,
            ref=SAMPLE_REF,
            actor=details.pop("actor", "bob"),
            case=sample_snapshot(
                language, status=new_status if change is CaseChange.STATUS_CHANGED else "open"
            ),
            **details,
        )
    return envelope(payload, source="sample", subject=SAMPLE_REF, routing_key=event_type)
