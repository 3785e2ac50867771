"""The values a template sees: every one a string, one-line where it may end up in a header,
bounded where a customer could make it huge. Escaping for HTML or Slack is the renderer's job,
per channel; these are plain text.
"""

from __future__ import annotations

from .audience import one_line
from .facts import Facts

SUBJECT_MAX = 150
BODY_MAX = 20_000
STATUS_WORDS = {
    "new": "new",
    "open": "open",
    "pending_customer": "waiting for your answer",
    "resolved": "resolved",
    "closed": "closed",
}


def template_values(facts: Facts, recipient_name: str | None) -> dict[str, str]:
    values: dict[str, str] = {
        "ref": facts.ref,
        "event": facts.event_type,
        "subject": one_line(facts.subject, SUBJECT_MAX) or "(no subject)",
        "customer_name": one_line(facts.customer.name or "", 80) if facts.customer else "",
        "recipient_name": recipient_name or "",
        "status": facts.status or "",
        "status_text": STATUS_WORDS.get(facts.status or "", (facts.status or "").replace("_", " ")),
        "previous": facts.previous or "",
        "priority": facts.priority.value if facts.priority else "",
        "channel": facts.channel or "",
        "reason_code": facts.reason_code or "",
        "team": facts.team or "",
        "assignee": facts.assignee or "",
        "actor": one_line(facts.actor or "", 80),
        "body": (facts.body or "")[:BODY_MAX],
        "occurred_at": facts.occurred_at.strftime("%Y-%m-%d %H:%M UTC"),
        "tracking_token": facts.tracking_token or "",
    }
    if facts.failed is not None:
        values.update(
            failed_channel=facts.failed.channel.value,
            failed_recipient=facts.failed.recipient,
            failed_template=facts.failed.template,
        )
    for name, value in facts.details.items():
        values.setdefault(name, one_line(value, 300))
    values.setdefault("opened_at", "")
    return values
