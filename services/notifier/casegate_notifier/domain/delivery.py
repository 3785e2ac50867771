"""The provider contract: what an email adapter is given, and what it answers.

Every adapter has the same shape, `async def send(message) -> SendResult`, and never raises
for a delivery problem: it says whether the failure is temporary (try again later) or
permanent (trying again cannot help), so the retry policy stays in one place, the handler.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutboundEmail:
    to: str
    to_name: str | None
    subject: str
    text: str
    html: str
    message_id: str
    case_ref: str
    dedupe_key: str


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    provider_message_id: str | None = None
    temporary: bool = False
    reason: str | None = None

    @classmethod
    def sent(cls, provider_message_id: str) -> SendResult:
        return cls(ok=True, provider_message_id=provider_message_id)

    @classmethod
    def failed(cls, reason: str, *, temporary: bool) -> SendResult:
        return cls(ok=False, temporary=temporary, reason=reason[:500])


class EmailSender(Protocol):
    name: str

    async def send(self, message: OutboundEmail) -> SendResult: ...


def message_id_for(dedupe_key: str, case_ref: str, domain: str) -> str:
    """A Message-ID that is the same on every attempt, so a resend is recognisably the same mail
    and replies can be threaded back to the case (the ref is in it, too)."""
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]
    return f"<{case_ref}.{digest}@{domain}>"
