"""The case's Slack card stays live, and its thread reads as the whole conversation.

When a case that has a card (case-store keeps its `channel:ts` as the case's Slack thread)
changes, the card is redrawn in place: assignee, status, priority, due times, buttons, and
where a reply would go now (carried by the Reply button for its modal). Changes arrive out of
order (handled concurrently, retried later), so a redraw from a snapshot older than the one
the card shows is skipped (`adapters/card_versions.py`, by the change's timeline entry id).
A customer's new message is posted into the thread, and so is what became of an agent's reply
to the customer: sent, or failed and why, and on which channel; later the provider's own
report (delivered, undelivered), and a bounce of any email the case sent. Each step is
claimed in the delivery ledger under a key derived from the event or report, so a redelivery
does not post twice (Slack has no idempotency key of its own).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from casegate_shared.bus import Retry
from casegate_shared.events import CaseChange, CaseUpdated, DeliveryUpdated, Envelope

from .adapters.dedupe import Claim
from .adapters.sent_replies import SentReply
from .adapters.slack import SlackPoster
from .dispatch import Delivery, Settled, mask
from .domain.delivery import Medium, SendResult
from .domain.policy import Notification
from .domain.reply_route import reply_destination

log = logging.getLogger(__name__)

# Changes that alter what the card shows, or that belong in the thread.
CARD_CHANGES = [
    CaseChange.ASSIGNED, CaseChange.STATUS_CHANGED, CaseChange.PRIORITY_CHANGED,
    CaseChange.SLA_BREACHED, CaseChange.ESCALATED, CaseChange.MESSAGE_ADDED,
    CaseChange.REOPENED, CaseChange.MERGED, CaseChange.BOUNCED, CaseChange.CONTACT_CHANGED,
]
THREAD_KEYS = [f"case.{c.value}" for c in CARD_CHANGES]
DELIVERY_REPORTS = ["notification.delivery_updated"]
CUSTOMER_WROTE = {CaseChange.MESSAGE_ADDED, CaseChange.REOPENED}
EXCERPT = 1500  # the whole message is on the case; the thread shows enough to act on
# A provider's last word on a message; queued and sent only repeat what the echo said.
FINAL_REPORTS = {
    "delivered": "delivered", "undelivered": "not delivered", "failed": "not delivered",
}
MEDIUM_WORDS = {Medium.SMS: "SMS", Medium.EMAIL: "email", Medium.SLACK: "Slack"}


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
        if change.change is CaseChange.BOUNCED:
            to = f" to {mask(change.reply_to)}" if change.reply_to else ""
            await self._once(f"thread:{event.id}:bounce", case.ref, self.slack.reply_in_thread(
                case.slack_thread, case.ref, f"Email{to} bounced", author="casegate"))
        if not await self._newest_for_card(change):
            # A retry or a slower peer with an older snapshot: the card already shows newer.
            log.debug("older card redraw skipped",
                      extra={"ref": case.ref, "event": event.type, "entry_id": change.entry_id})
            return
        # The redrawn card also says where a reply would go now (a bounce, a stop keyword or
        # new preferences can change that).
        reply_to = reply_destination(case, self.delivery.policy)
        await self._once(f"thread:{event.id}:card", case.ref,
                         self.slack.update_case(case, case.slack_thread, reply_to=reply_to))

    async def _newest_for_card(self, change: CaseUpdated) -> bool:
        """Whether this change's snapshot may be drawn: not older than what the card shows.
        A change without its timeline entry id cannot be ordered, so it draws."""
        versions = self.delivery.card_versions
        if versions is None or change.entry_id is None:
            return True
        return await versions.advance(change.ref, change.entry_id)

    async def on_delivery_report(self, event: Envelope[DeliveryUpdated]) -> None:
        """A provider's report on a message, said in the case's thread when the message was an
        agent's reply sent from there (remembered by `remember_reply`); anything else is the
        timeline's alone."""
        report, replies = event.data, self.delivery.sent_replies
        verdict = FINAL_REPORTS.get(report.status)
        if self.slack is None or replies is None or verdict is None:
            return
        if not report.notification_key:
            return
        sent = await replies.find(report.notification_key)
        if sent is None or sent.ref != report.ref:
            return  # not a reply, its case has no thread, or forgotten
        text = f"Reply {verdict} by {MEDIUM_WORDS.get(sent.medium, sent.medium.value)} to {sent.to}"
        if verdict != "delivered":
            code = f" (error {report.error_code})" if report.error_code else ""
            text += f": {report.provider} reports it {report.status}{code}"
        # One post per report state, however often the provider or the bus repeats it.
        key = f"thread:{report.notification_key}:report:{report.status}"
        await self._once(key, sent.ref, self.slack.reply_in_thread(
            sent.thread, sent.ref, text, author="casegate"))

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


def _reply_from_thread(d: Delivery, n: Notification) -> SlackPoster | None:
    """Slack, when `n` is an agent's reply to the customer on a case with a thread."""
    slack = d.providers.get(Medium.SLACK)
    if (not isinstance(slack, SlackPoster) or not n.case_thread
            or n.audience != "customer" or n.event_type != "case.reply_added"):
        return None
    return slack


async def remember_reply(d: Delivery, n: Notification, s: Settled) -> None:
    """Where the provider's later report on a reply sent by SMS is to be said: called as soon
    as it is settled, before its outcome is published, so the report cannot come first."""
    if (_reply_from_thread(d, n) is not None and n.case_thread and s.result.ok
            and s.route.medium is Medium.SMS):
        await _remember(d, n.case_ref, n.case_thread, s)


async def echo_outcome(d: Delivery, n: Notification, s: Settled) -> None:
    """What became of an agent's reply to the customer, said in the case's thread, where
    the agent wrote it. Never raises: the reply itself is settled either way."""
    slack = _reply_from_thread(d, n)
    if slack is None or not n.case_thread or s.repeated:
        return
    channel = MEDIUM_WORDS.get(s.route.medium, s.route.medium.value)
    outcome = "sent" if s.result.ok else "not delivered"
    text = f"Reply {outcome} by {channel} to {mask(s.route.address)}"
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


async def _remember(d: Delivery, ref: str, thread: str, s: Settled) -> None:
    """Where the provider's later report on this reply belongs (see `on_delivery_report`).
    Also on a repeat: the first attempt may have ended before it got here."""
    if d.sent_replies is None:
        return
    try:
        await d.sent_replies.remember(s.key, SentReply(ref, thread, s.route.medium,
                                                       mask(s.route.address)))
    except Exception as exc:  # noqa: BLE001 - a lost echo must never undo a settled delivery
        log.warning("reply not remembered for its delivery report",
                    extra={"ref": ref, "error": repr(exc)[:200]})
