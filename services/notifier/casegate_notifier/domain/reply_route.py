"""Where an agent's reply to the customer would go if it were sent now, worked out from the case
snapshot the same way the policy routes `case.reply_added`: the customer's preferred channel
(the one the case came in on unless they chose another), then their fallback order, passing
over channels they opted out of, addresses that bounce and identities they lack; and whether
their quiet hours can hold it back.

The team's Slack card carries the answer in its Reply button, so the reply modal can name the
channel and address before the agent writes. It is a forecast, refreshed whenever the card is
redrawn: the notifier decides again, from the newest snapshot, when the reply is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from casegate_shared.events import CaseSnapshot

from . import audience
from .delivery import Route
from .facts import REPLY, Facts
from .policy import Policy, urgent

# Routing a reply does not depend on the time (quiet hours only delay it), so any will do.
_TIMELESS = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ReplyDestination:
    """The first route a reply would take, and whether another follows if that one fails;
    or, with no route, why the customer cannot be reached at all. `quiet` is the customer's
    quiet window ("22:00-07:00 Europe/Berlin") when a reply written inside it waits for its
    end."""

    route: Route | None
    has_fallback: bool = False
    problem: str | None = None
    quiet: str | None = None


def reply_destination(case: CaseSnapshot, policy: Policy) -> ReplyDestination:
    # An agent's reply from Slack or the API names no channel of its own, so the facts are
    # those of the case: `audience.customer` is the one place that decides the order.
    facts = Facts(
        event_id="",
        event_type=REPLY,
        ref=case.ref,
        occurred_at=_TIMELESS,
        priority=case.priority,
        channel=case.channel.value,
        customer=case.customer,
        case=case,
    )
    found = audience.customer(facts, policy.fallback_order)
    if isinstance(found, str):
        return ReplyDestination(None, problem=found)
    quiet = None
    if found.quiet is not None and not urgent(policy, None, facts):
        q = found.quiet
        quiet = f"{q.start:%H:%M}-{q.end:%H:%M} {q.timezone}"
    return ReplyDestination(found.routes[0], has_fallback=len(found.routes) > 1, quiet=quiet)
