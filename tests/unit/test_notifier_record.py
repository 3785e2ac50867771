"""The route loop with case-store's delivery record behind the ledger, on in-memory stand-ins
for Redis and the record (the real ones are in tests/integration/test_notifier_record.py): a
claim Redis has no trace of is checked against the record before anything is sent."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from casegate_notifier.adapters.breaker import Admission, Gate
from casegate_notifier.dispatch import Delivery, Settled, Wait, deliver
from casegate_notifier.domain.delivery import (
    Claim,
    Failure,
    Medium,
    Outbound,
    Recorded,
    RecordUnavailable,
    SendResult,
    recorded_state,
)
from casegate_notifier.domain.facts import facts_of
from casegate_notifier.domain.policy import Notification, notifications_for
from casegate_notifier.domain.policy_file import load_policy
from casegate_notifier.domain.render import Renderer
from casegate_notifier.domain.retry import RetryPolicy
from casegate_notifier.domain.samples import sample_event

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy(ROOT / "config/notify.yaml")
NOW = datetime(2025, 3, 4, 10, 30, tzinfo=UTC)


class Ledger:
    """The Redis ledger's states, in a dict: a key it never saw (or forgot) is free."""

    lease_s = 60

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.why: dict[str, Failure] = {}
        self.ids: dict[str, str] = {}

    async def claim(self, key: str) -> Claim:
        if key not in self.state:
            self.state[key] = "sending"
            return Claim.CLAIMED
        return Claim(self.state[key])

    async def mark_done(self, key: str, provider_message_id: str | None = None) -> None:
        self.state[key] = "done"
        if provider_message_id is not None:
            self.ids[key] = provider_message_id

    async def sent_id(self, key: str) -> str | None:
        return self.ids.get(key)

    async def mark_failed(self, key: str, failure: Failure) -> None:
        self.state[key], self.why[key] = "failed", failure

    async def failure(self, key: str) -> Failure:
        return self.why[key]

    async def release(self, key: str) -> None:
        if self.state.get(key) == "sending":
            del self.state[key]


class Record:
    def __init__(self, rows: dict[str, Recorded] | None = None, down: bool = False) -> None:
        self.rows, self.down, self.reads = rows or {}, down, 0

    async def recorded(self, keys: Sequence[str]) -> dict[str, Recorded]:
        self.reads += 1
        if self.down:
            raise RecordUnavailable("deliveries: ConnectionRefusedError")
        return {k: self.rows[k] for k in keys if k in self.rows}


class Breaker:
    async def admit(self, circuit: str) -> Admission:
        return Admission(Gate.CLOSED)


class Provider:
    def __init__(self, name: str) -> None:
        self.name, self.sent = name, []

    async def send(self, outbound: Outbound) -> SendResult:
        self.sent.append(outbound.to)
        return SendResult.sent(f"{self.name}-1")


def setup(record: Record | None) -> tuple[Delivery, Ledger, Provider, Provider]:
    ledger, email, sms = Ledger(), Provider("smtp"), Provider("twilio")
    d = Delivery(
        policy=POLICY, renderer=Renderer(), ledger=ledger,
        providers={Medium.EMAIL: email, Medium.SMS: sms},
        breaker=Breaker(),  # type: ignore[arg-type]
        retry=RetryPolicy(), clock=lambda: NOW, sender_domain="casegate.test", record=record,
    )
    return d, ledger, email, sms


def resolved() -> Notification:
    """The customer's notice: email first, then SMS."""
    facts = facts_of(sample_event("case.status_changed", status="resolved"))
    [n] = [n for n in notifications_for(POLICY, facts) if n.audience == "customer"]
    assert [r.medium for r in n.routes] == [Medium.EMAIL, Medium.SMS]
    return n


def keys(n: Notification) -> tuple[str, str]:
    return (f"{n.event_id}/email/ann@example.com", f"{n.event_id}/sms/+14155550100")


@pytest.mark.parametrize(
    ("status", "provider_message_id", "reason", "expected"),
    [
        ("sent", "<m@x>", None, Recorded(Claim.DONE, provider_message_id="<m@x>")),
        ("sent", None, None, Recorded(Claim.DONE)),
        # a provider's later report: it was sent all the same
        ("delivered", "SM1", None, Recorded(Claim.DONE, provider_message_id="SM1")),
        ("undelivered", "SM1", "30003", Recorded(Claim.DONE, provider_message_id="SM1")),
        ("failed", "SM1", "30008", Recorded(Claim.DONE, provider_message_id="SM1")),
        # never left us: it ended there, no fallback now either
        ("failed", None, "gave up after 6.0h of temporary failures: smtp 451",
         Recorded(Claim.FAILED, Failure("gave up after 6.0h of temporary failures: smtp 451",
                                        permanent=False))),
        ("failed", None, None,
         Recorded(Claim.FAILED, Failure("failed on an earlier attempt", permanent=False))),
    ],
)
def test_a_record_row_reads_as_a_ledger_state(
    status: str, provider_message_id: str | None, reason: str | None, expected: Recorded
) -> None:
    assert recorded_state(status, provider_message_id, reason) == expected


async def test_a_delivery_the_ledger_forgot_but_the_record_knows_is_not_sent_again() -> None:
    n = resolved()
    email_key, _ = keys(n)
    d, ledger, email, sms = setup(
        Record({email_key: Recorded(Claim.DONE, provider_message_id="<first@x>")}))
    step = await deliver(d, n, NOW)
    assert isinstance(step, Settled) and step.repeated and step.result.ok
    assert step.route.medium is Medium.EMAIL
    assert email.sent == [] and sms.sent == []
    assert ledger.state == {email_key: "done"}  # Redis is told again, with the provider's id
    assert step.result.provider_message_id == "<first@x>"


async def test_without_a_record_it_is_sent_once_and_the_record_is_read_once() -> None:
    n = resolved()
    email_key, _ = keys(n)
    record = Record()
    d, ledger, email, _ = setup(record)
    step = await deliver(d, n, NOW)
    assert isinstance(step, Settled) and not step.repeated and email.sent == ["ann@example.com"]
    again = await deliver(d, n, NOW)  # a redelivery: Redis remembers, the record is not asked
    assert isinstance(again, Settled) and again.repeated
    assert email.sent == ["ann@example.com"] and record.reads == 1
    # The repeat names what the provider said the first time, not an id made up for it.
    assert again.result.provider_message_id == step.result.provider_message_id == "smtp-1"
    assert ledger.state == {email_key: "done"}


async def test_a_fallback_the_record_shows_is_not_undone() -> None:
    """Email failed for good, the SMS went out; the record holds the SMS only (the route the
    loop ended on). Redis forgot both: the email must not be tried again."""
    n = resolved()
    email_key, sms_key = keys(n)
    record = Record({sms_key: Recorded(Claim.DONE)})
    d, ledger, email, sms = setup(record)
    step = await deliver(d, n, NOW)
    assert isinstance(step, Settled) and step.repeated and step.route.medium is Medium.SMS
    assert step.fallback_from is Medium.EMAIL
    assert email.sent == [] and sms.sent == []
    assert ledger.state == {email_key: "failed", sms_key: "done"}
    assert record.reads == 1  # one read serves every route of the notification


async def test_a_recorded_failure_is_reported_again_not_retried_and_not_fallen_back() -> None:
    n = resolved()
    email_key, _ = keys(n)
    gave_up = recorded_state("failed", None, "gave up after 6.0h of temporary failures: smtp 451")
    d, ledger, email, sms = setup(Record({email_key: gave_up}))
    step = await deliver(d, n, NOW)
    assert isinstance(step, Settled) and step.repeated and not step.result.ok
    assert step.route.medium is Medium.EMAIL and email.sent == [] and sms.sent == []
    assert ledger.state == {email_key: "failed"}


async def test_while_the_record_cannot_be_read_nothing_is_sent_and_the_claim_goes_back() -> None:
    n = resolved()
    d, ledger, email, sms = setup(Record(down=True))
    step = await deliver(d, n, NOW)
    assert isinstance(step, Wait) and step.reason.startswith("delivery record unreadable")
    assert step.seconds > 0
    assert email.sent == [] and sms.sent == [] and ledger.state == {}


async def test_past_the_deadline_an_unreadable_record_still_waits_rather_than_fail() -> None:
    """Redis has no trace of it, so it may have gone out: reporting it failed could be false
    and would reach the escalation group. It waits for the record instead."""
    n = resolved()
    d, ledger, email, sms = setup(Record(down=True))
    step = await deliver(d, n, NOW - timedelta(hours=7))  # trying began 7 h ago; 6 h allowed
    assert isinstance(step, Wait) and step.reason.startswith("delivery record unreadable")
    assert email.sent == [] and sms.sent == [] and ledger.state == {}


class ForgetfulLedger(Ledger):
    """Redis resets the connection once, just as the send is to be marked done."""

    def __init__(self) -> None:
        super().__init__()
        self.resets = 1

    async def mark_done(self, key: str, provider_message_id: str | None = None) -> None:
        if self.resets:
            self.resets -= 1
            raise ConnectionError("Connection reset by peer")
        await super().mark_done(key, provider_message_id)


async def test_a_send_whose_ledger_write_fails_still_settles_and_is_never_sent_twice() -> None:
    n = resolved()
    email_key, _ = keys(n)
    record = Record()
    d, _, email, _ = setup(record)
    ledger = ForgetfulLedger()
    object.__setattr__(d, "ledger", ledger)
    step = await deliver(d, n, NOW)
    # Settled, so its outcome is published and case-store records the send ...
    assert isinstance(step, Settled) and step.result.ok and email.sent == ["ann@example.com"]
    record.rows[email_key] = Recorded(Claim.DONE)
    # ... which answers a redelivery once our claim's lease has run out.
    ledger.state.clear()
    again = await deliver(d, n, NOW)
    assert isinstance(again, Settled) and again.result.ok and again.repeated
    assert email.sent == ["ann@example.com"]


class ProbingBreaker(Breaker):
    """The provider's circuit lets a probe through, and Redis fails as it is closed."""

    async def admit(self, circuit: str) -> Admission:
        return Admission(Gate.PROBE)

    async def succeeded(self, circuit: str) -> None:
        raise ConnectionError("Connection reset by peer")


async def test_a_good_probe_is_marked_done_even_when_its_breaker_cannot_be_closed() -> None:
    n = resolved()
    email_key, _ = keys(n)
    d, ledger, email, _ = setup(Record())
    object.__setattr__(d, "breaker", ProbingBreaker())
    step = await deliver(d, n, NOW)
    assert isinstance(step, Settled) and step.result.ok and email.sent == ["ann@example.com"]
    assert ledger.state[email_key] == "done"  # so a redelivery does not send it again


async def test_without_a_record_configured_the_ledger_alone_decides() -> None:
    n = resolved()
    d, _, email, _ = setup(None)
    step = await deliver(d, n, NOW)
    assert isinstance(step, Settled) and email.sent == ["ann@example.com"]
