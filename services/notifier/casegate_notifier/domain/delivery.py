"""The provider contract: what every adapter is given (`Outbound`), what it answers
(`SendResult`), and the ledger that keeps a send to at most once.

Every adapter has the same shape, `async def send(outbound) -> SendResult`, and never raises
for a delivery problem: it says whether the failure is temporary (try again later, perhaps
not before `retry_after_s`) or permanent (trying again cannot help: the next channel in the
customer's fallback order is tried instead), so retry policy stays in one place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from casegate_shared.events import Channel


class Medium(StrEnum):
    """What a notification travels on. Equal, as text, to the bus's `Channel` where one exists;
    a webhook is ours alone (no customer writes in by webhook)."""

    EMAIL = "email"
    SMS = "sms"
    SLACK = "slack"
    WEBHOOK = "webhook"

    @property
    def channel(self) -> Channel | None:
        """The bus channel for outcome events, or None where the contract has none."""
        try:
            return Channel(self.value)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outbound:
    """One message for one provider, fully rendered; adapters only transport it.

    `to` is the provider's address: an email address, an E.164 number, a Slack channel or
    user id, or a webhook URL. `message_id` is the same on every attempt of one notification
    (the email Message-ID; other providers may use it as an idempotency key)."""

    to: str
    subject: str
    text: str
    message_id: str
    case_ref: str
    dedupe_key: str
    channel: Medium = Medium.EMAIL
    to_name: str | None = None
    html: str = ""
    blocks: list[dict[str, Any]] | None = None  # Slack Block Kit
    data: dict[str, Any] | None = None  # the JSON document of a webhook
    event_type: str = ""
    in_reply_to: str | None = None  # threading: the customer's last message
    references: tuple[str, ...] = ()
    thread: str | None = None  # Slack "channel:ts" of the case's post, to answer in its thread


OutboundEmail = Outbound  # the name the email adapters were written against


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    provider_message_id: str | None = None
    temporary: bool = False
    reason: str | None = None
    retry_after_s: float | None = None  # the provider asked for a pause (HTTP Retry-After)

    @classmethod
    def sent(cls, provider_message_id: str | None) -> SendResult:
        return cls(ok=True, provider_message_id=provider_message_id)

    @classmethod
    def failed(
        cls, reason: str, *, temporary: bool, retry_after_s: float | None = None
    ) -> SendResult:
        return cls(ok=False, temporary=temporary, reason=reason[:500], retry_after_s=retry_after_s)


class Provider(Protocol):
    """An adapter: `name` labels metrics, outcomes and the circuit breaker."""

    name: str

    async def send(self, outbound: Outbound) -> SendResult: ...


EmailSender = Provider


class Claim(StrEnum):
    CLAIMED = "claimed"  # ours: send now
    DONE = "done"  # already delivered: only repeat the outcome
    FAILED = "failed"  # already failed for good: only repeat the outcome (or fall back)
    BUSY = "sending"  # someone else holds the lease: come back after it


@dataclass(frozen=True, slots=True)
class Failure:
    """What the ledger remembers of a failed delivery."""

    reason: str
    permanent: bool = True


class Ledger(Protocol):
    """At most one send per key, across replicas: claim before sending, settle after.

    Redis holds it (fast, shared, but it can forget); a fresh claim is checked against the
    `DeliveryRecord` before anything is sent (see dispatch)."""

    @property
    def lease_s(self) -> int: ...

    async def claim(self, key: str) -> Claim: ...

    async def mark_done(self, key: str, provider_message_id: str | None = None) -> None: ...

    async def sent_id(self, key: str) -> str | None:
        """The provider's id for a delivery marked done, when it was given."""
        ...

    async def mark_failed(self, key: str, failure: Failure) -> None: ...

    async def failure(self, key: str) -> Failure: ...

    async def release(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Recorded:
    """What case-store's delivery record says became of one delivery key."""

    claim: Claim  # DONE or FAILED
    failure: Failure | None = None
    provider_message_id: str | None = None  # DONE: the provider's id, when it gave one


def recorded_state(status: str, provider_message_id: str | None, reason: str | None) -> Recorded:
    """One row of case-store's `deliveries` table, read as a ledger state.

    A provider message id means the provider took the message: whatever it reported later
    (delivered, undelivered, bounced, failed), it was sent and is never sent again. A failure
    without one never left us. The record holds the route a notification ended on, so such a
    failure ended it there (a permanent failure with a route after it would have moved on, and
    that route would hold the record): not a reason to fall back now either.
    """
    if status == "failed" and not provider_message_id:
        why = reason or "failed on an earlier attempt"
        return Recorded(Claim.FAILED, Failure(why, permanent=False))
    return Recorded(Claim.DONE, provider_message_id=provider_message_id)


class RecordUnavailable(Exception):
    """The delivery record could not be read (its database is away): ask again later."""


class DeliveryRecord(Protocol):
    """The durable record behind the ledger (case-store's `deliveries` table, filled from the
    outcome events). Read when the ledger finds no trace of a key, which a Redis restart
    without persistence, an eviction or a redelivery after the TTL can cause; raises
    RecordUnavailable."""

    async def recorded(self, keys: Sequence[str]) -> dict[str, Recorded]: ...


@dataclass(frozen=True, slots=True)
class Route:
    """One way to reach a recipient: a medium and the address on it."""

    medium: Medium
    address: str


def delivery_key(event_id: str, route: Route) -> str:
    """Exactly one key per (event, recipient, channel): the unit of 'sent at most once'."""
    return f"{event_id}/{route.medium.value}/{route.address}"


def message_id_for(dedupe_key: str, case_ref: str, domain: str) -> str:
    """A Message-ID that is the same on every attempt, so a resend is recognisably the same mail
    and replies can be threaded back to the case (the ref is in it, too)."""
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]
    return f"<{case_ref}.{digest}@{domain}>"
