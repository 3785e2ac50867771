"""Notifications that do not go out the moment their event arrives, and the timer task that
sends them when their time comes.

- Digested: updates to one person within the policy's window are appended to their digest
  (once per update) and go out as one message when the window ends.
- Held: a non-urgent notification to a customer inside their quiet hours waits until the
  window ends in their time zone.
- Released ones that fail temporarily wait again, with backoff, in the same sorted set.

The bus path (`accept`) acknowledges an event only once its notification is sent, settled,
appended or held in Redis. The timer task (`run`) wakes every tick, takes what is due (leased,
so replicas share the work), delivers it through the same route loop as the bus path, and
publishes the outcomes: one per update of a digest, so each case's timeline shows its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, ValidationError

from casegate_shared.bus import Bus, Defer
from casegate_shared.observability import correlated

from .adapters.acklimit import AckLimiter
from .adapters.digest import DigestStore
from .adapters.schedule import HeldNotifications
from .dispatch import NOTIFICATIONS, Delivery, Wait, deliver, mask, publish_outcome
from .domain.delivery import Medium, delivery_key
from .domain.policy import Notification
from .domain.quiet import QuietHoursProblem, held_until
from .domain.render import TemplateProblem
from .threads import echo_outcome, remember_reply

log = logging.getLogger(__name__)
DIGEST_RULE = "digest"


class Job(BaseModel):
    """A held notification, as it waits in Redis."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    notification: Notification
    correlation_id: str
    since: datetime  # when trying began: the delivery deadline counts from here


class DigestItem(BaseModel):
    """One update in a digest, with its one-line summary rendered when it arrived."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    notification: Notification
    correlation_id: str
    summary: str
    queued_at: datetime


def digest_recipient(n: Notification) -> str:
    return f"{n.routes[0].medium.value}:{n.routes[0].address}"


def digest_notification(template: str, batch_id: str, items: list[DigestItem]) -> Notification:
    """The one message standing for a batch; its delivery keys derive from the batch id."""
    first = items[0].notification
    refs = {i.notification.case_ref for i in items}
    return first.model_copy(
        update={
            "rule": DIGEST_RULE,
            "event_id": f"digest-{batch_id}",
            "event_type": "digest",
            "case_ref": first.case_ref if len(refs) == 1 else "",
            "template": template,
            "digest": False,
            "urgent": True,
            "items": tuple(
                {"ref": i.notification.case_ref, "summary": i.summary,
                 "occurred_at": i.notification.values.get("occurred_at", "")}
                for i in items
            ),
            "in_reply_to": None,
            "references": (),
            "thread": None,
        }
    )


class Pending:
    def __init__(
        self,
        bus: Bus,
        delivery: Delivery,
        held: HeldNotifications,
        digests: DigestStore,
        *,
        tick_s: float,
        lease_s: float,
        batch: int = 100,
        acks: AckLimiter | None = None,
    ) -> None:
        self._bus = bus
        self._d = delivery
        self.acks = acks
        self.held = held
        self.digests = digests
        self._tick_s = tick_s
        self._lease_s = lease_s
        self._batch = batch
        self._stopped = asyncio.Event()

    # --- the bus path ---------------------------------------------------------------------

    async def accept(self, n: Notification, correlation_id: str, since: datetime) -> None:
        """Digest it, hold it, or deliver it now; raises Defer when it must come back later."""
        d, now = self._d, self._d.clock()
        if self.acks is not None and n.audience == "customer" and n.event_type == "case.opened":
            if not await self.acks.allow(n.routes[0].address, n.event_id):
                NOTIFICATIONS.labels(n.channel.value, "ack_limit", "skipped").inc()
                log.warning("acknowledgement not sent: too many to this sender this hour",
                            extra={"ref": n.case_ref, "to": mask(n.routes[0].address)})
                return
        if n.digest:
            item = DigestItem(
                notification=n,
                correlation_id=correlation_id,
                summary=d.renderer.render(n, Medium.EMAIL).subject.removeprefix(f"[{n.case_ref}] "),
                queued_at=now,
            )
            due = now + timedelta(seconds=d.policy.digest_window_s)
            recipient = digest_recipient(n)
            if await self.digests.append(recipient, n.dedupe_key, item.model_dump_json(), due):
                NOTIFICATIONS.labels(n.channel.value, "digest", "queued").inc()
                log.info("notification queued for a digest",
                         extra={"ref": n.case_ref, "rule": n.rule, "to": mask(n.recipient)})
            return
        if not n.urgent:
            try:
                until = held_until(n.quiet, now)
            except QuietHoursProblem as exc:
                until = None
                log.warning("quiet hours ignored", extra={"ref": n.case_ref, "reason": str(exc)})
            if until is not None:
                job = Job(notification=n, correlation_id=correlation_id, since=until)
                if await self.held.put_once(n.dedupe_key, job.model_dump_json(), until):
                    NOTIFICATIONS.labels(n.channel.value, "held", "held").inc()
                    log.info("notification held for quiet hours",
                             extra={"ref": n.case_ref, "rule": n.rule, "until": until.isoformat()})
                return
        step = await deliver(d, n, since)
        if isinstance(step, Wait):
            raise Defer(step.reason, step.seconds)
        await remember_reply(d, n, step)
        await publish_outcome(self._bus, n, step, correlation_id)
        await echo_outcome(d, n, step)

    # --- the timer path -------------------------------------------------------------------

    async def run(self) -> None:
        """Drain what is due, every tick, until `stop()`."""
        while not self._stopped.is_set():
            try:
                handled = await self.drain_once()
            except Exception:  # Redis or the broker away: the next tick tries again
                log.exception("draining held notifications failed")
                handled = 0
            if handled < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), self._tick_s)

    async def stop(self, task: asyncio.Task[None], grace_s: float = 5.0) -> None:
        """End `run()`: by the flag first (a cancellation can be swallowed by a client library
        deep in a Redis call, and would leave the loop running), by cancelling after."""
        self._stopped.set()
        done, _ = await asyncio.wait({task}, timeout=grace_s)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=grace_s)

    async def drain_once(self) -> int:
        now = self._d.clock()
        handled = 0
        for member, payload in await self.held.take_due(now, self._batch, self._lease_s):
            handled += 1
            await self._release(member, payload, now)
        for recipient, _ in await self.digests.due.take_due(now, self._batch, self._lease_s):
            handled += 1
            await self._flush(recipient, now)
        return handled

    async def _release(self, member: str, payload: str, now: datetime) -> None:
        try:
            job = Job.model_validate_json(payload)
        except ValidationError as exc:
            log.error(
                "unreadable held notification dropped",
                extra={"key": member, "error": str(exc)[:300]},
            )
            await self.held.remove(member)
            return
        with correlated(job.correlation_id):
            n = job.notification
            try:
                step = await deliver(self._d, n, job.since)
            except TemplateProblem as exc:  # checked at start, so a value went missing: a bug
                log.error(
                    "held notification cannot be rendered",
                    extra={"ref": n.case_ref, "error": str(exc)},
                )
                await self.held.remove(member)
                return
            if isinstance(step, Wait):
                await self.held.later(member, now + timedelta(seconds=step.seconds))
                return
            await remember_reply(self._d, n, step)
            await publish_outcome(self._bus, n, step, job.correlation_id)
            await echo_outcome(self._d, n, step)
            await self.held.remove(member)

    async def _flush(self, recipient: str, now: datetime) -> None:
        claimed = await self.digests.flush(recipient, uuid.uuid4().hex)
        if claimed is None:
            await self.digests.due.remove(recipient)
            return
        batch_id, raw = claimed
        items: list[DigestItem] = []
        for r in raw:
            try:
                items.append(DigestItem.model_validate_json(r))
            except ValidationError as exc:
                log.error("unreadable digest update dropped", extra={"error": str(exc)[:300]})
        window = timedelta(seconds=self._d.policy.digest_window_s)
        if not items:
            await self.digests.complete(recipient, batch_id, now + window)
            return
        n = digest_notification(self._d.policy.digest_template, batch_id, items)
        with correlated(items[0].correlation_id):
            step = await deliver(self._d, n, items[0].queued_at + window)
            if isinstance(step, Wait):
                await self.digests.due.later(recipient, now + timedelta(seconds=step.seconds))
                return
            reason = f"in a digest of {len(items)} update(s)"
            for item in items:
                i = item.notification
                mine = dataclasses.replace(step, key=delivery_key(i.event_id, step.route))
                await publish_outcome(
                    self._bus, i, mine, item.correlation_id,
                    reason=reason if step.result.ok else None,
                    provider_message_id=step.result.provider_message_id,
                )
        await self.digests.complete(recipient, batch_id, now + window)
