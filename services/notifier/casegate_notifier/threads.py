"""The case's Slack card stays live, and its thread reads as the whole conversation.

When a case that has a card (case-store keeps its `channel:ts` as the case's Slack thread)
changes, the card is redrawn in place: assignee, status, priority, due times and buttons.
A customer's new message is posted into the thread, and so is what became of an agent's reply
to the customer (sent, or failed and why, and on which channel). Each step is claimed in the delivery ledger under a key
derived from the event, so a redelivered event does not post twice (Slack has no idempotency
key of its own).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from casegate_shared.bus import Retry
from casegate_shared.events import CaseChange, CaseUpdated, Envelope

from .adapters.dedupe import Claim
from .adapters.slack import SlackPoster
from .dispatch import Delivery, Settled, mask
from .domain.delivery import Medium, SendResult
from .domain.policy import Notification

log = logging.getLogger(__name__)

# Changes that alter what the card shows, or that belong in the thread.
CARD_CHANGES = [
    CaseChange.ASSIGNED, CaseChange.STATUS_CHANGED, CaseChange.PRIORITY_CHANGED,
    CaseChange.SLA_BREACHED, CaseChange.ESCALATED, CaseChange.MESSAGE_ADDED,
    CaseChange.REOPENED, CaseChange.MERGED,
]
THREAD_KEYS = [f"case.{c.value}" for c in CARD_CHANGES]
CUSTOMER_WROTE = {CaseChange.MESSAGE_ADDED, CaseChange.REOPENED}
EXCERPT = 1500  # the whole message is on the case; the thread shows enough to act on


@dataclass(frozen=True, slots=True)
class ThreadSync:
    delivery: Delivery

    @property
    def slack(self) -> SlackPoster | None:
        provider = self.delivery.providers.get(Medium.SLACK)
        return provider if isinstance(provider, SlackPoster) else None

    async def on_change(self, event: Envelope[CaseUpdated]) -> None:
        change, case = event.data, event.data.case
        if self.slack is None or not case.slack_thread:
            return  # no Slack, or the case has no card (yet)
        if change.change in CUSTOMER_WROTE and change.body:
            await self._once(f"thread:{event.id}:message", case.ref, self.slack.reply_in_thread(
                case.slack_thread, case.ref, change.body[:EXCERPT], author="Customer"))
        await self._once(f"thread:{event.id}:card", case.ref,
                         self.slack.update_case(case, case.slack_thread))

    async def _once(self, key: str, ref: str, call: object) -> None:
        ledger = self.delivery.ledger
        claim = await ledger.claim(key)
        if claim is not Claim.CLAIMED:
            if hasattr(call, "close"):
                call.close()  # type: ignore[attr-defined]  # never awaited: no post
            if claim is Claim.BUSY:
                raise Retry(f"{key} is being posted by another attempt")
            return
        result: SendResult = await call  # type: ignore[misc]
        if result.ok:
            await ledger.mark_done(key)
            return
        await ledger.release(key)
        if result.temporary:
            raise Retry(f"Slack: {result.reason}")
        # A card that cannot be updated (deleted, archived channel) is not worth parking the
        # event for: the case itself is fine.
        log.warning("Slack thread not updated", extra={"ref": ref, "reason": result.reason})


async def echo_outcome(d: Delivery, n: Notification, s: Settled) -> None:
    """What became of an agent's reply to the customer, said in the case's thread, where
    the agent wrote it. Never raises: the reply itself is settled either way."""
    slack = d.providers.get(Medium.SLACK)
    if (not isinstance(slack, SlackPoster) or s.repeated or not n.case_thread
            or n.audience != "customer" or n.event_type != "case.reply_added"):
        return
    channel = s.route.medium.value.upper() if s.route.medium is Medium.SMS else s.route.medium.value
    text = f"Reply {'sent' if s.result.ok else 'not delivered'} by {channel} to {mask(s.route.address)}"
    if s.fallback_from is not None or n.passed_over is not None:
        text += f" (instead of {(s.fallback_from.value if s.fallback_from else n.passed_over)})"
    if not s.result.ok and s.result.reason:
        text += f": {s.result.reason[:300]}"
    key = f"thread:{s.key}:outcome"
    try:
        if await d.ledger.claim(key) is not Claim.CLAIMED:
            return
        posted = await slack.reply_in_thread(n.case_thread, n.case_ref, text, author="casegate")
        if posted.ok:
            await d.ledger.mark_done(key)
        else:
            await d.ledger.release(key)
            log.warning("reply outcome not echoed to Slack", extra={"ref": n.case_ref,
                                                                    "reason": posted.reason})
    except Exception as exc:  # noqa: BLE001 - an echo must never undo a settled delivery
        log.warning("reply outcome not echoed to Slack", extra={"ref": n.case_ref,
                                                                "error": repr(exc)[:200]})
