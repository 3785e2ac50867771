"""Routing conditions on what is known around the message: its sender, the customer's tags
and tier, the case's region and priority, and whether it arrived in business hours.

Same contract as `conditions`: prepared once at load, a verdict and a reason per message, and
reasons that name the rule's values, never the customer's address or number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from casegate_shared.events import Priority

from .business_time import BusinessCalendar, is_working
from .conditions import Check, Message, Verdict, listing

DEFAULT_REGION = "default"
# Used when no SLA file gives regions (unit tests, `rules check` of a rules file alone).
OFFICE_HOURS = BusinessCalendar("UTC", [[(9 * 60, 17 * 60)]] * 5 + [[], []], name="default")


@dataclass(frozen=True)
class Calendars:
    """The regions' calendars, and which one a case without a known region falls under."""

    by_region: Mapping[str, BusinessCalendar] = field(
        default_factory=lambda: {DEFAULT_REGION: OFFICE_HOURS}
    )
    default_region: str = DEFAULT_REGION

    def for_region(self, region: str | None) -> tuple[str, BusinessCalendar]:
        if region is not None and region in self.by_region:
            return region, self.by_region[region]
        return self.default_region, self.by_region[self.default_region]


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


def sender_address_in(addresses: Sequence[str]) -> Check:
    """The sender's email address is one of `addresses` (case does not matter)."""
    wanted = frozenset(a.strip().lower() for a in addresses)
    count = f"{len(wanted)} listed address" + ("es" if len(wanted) != 1 else "")
    hit = Verdict(True, f"sender is one of the {count}")
    miss = Verdict(False, f"sender is not one of the {count}")
    unknown = Verdict(False, "no sender email address known")

    def check(message: Message) -> Verdict:
        if not message.sender_email:
            return unknown
        return hit if message.sender_email.strip().lower() in wanted else miss

    return check


def sender_domain_in(domains: Sequence[str]) -> Check:
    """The sender's email domain is one of `domains`, or a subdomain of one."""
    wanted = [d.strip().lower().lstrip("@") for d in domains]
    miss = Verdict(False, f"sender domain is not {listing(wanted)}")
    unknown = Verdict(False, "no sender email address known")

    def check(message: Message) -> Verdict:
        if not message.sender_email:
            return unknown
        domain = _domain_of(message.sender_email)
        for want in wanted:
            if domain == want or domain.endswith("." + want):
                sub = "" if domain == want else " (a subdomain)"
                return Verdict(True, f"sender domain is {want}{sub}")
        return miss

    return check


def sender_phone_in(numbers: Sequence[str]) -> Check:
    """The sender's phone number (E.164) is one of `numbers`; an entry ending in `*` is a
    prefix (`+49*`: any German number). Entries were normalized at load."""
    exact = frozenset(n for n in numbers if not n.endswith("*"))
    prefixes = tuple(n[:-1] for n in numbers if n.endswith("*"))
    shown = [n for n in numbers if n.endswith("*")]
    count = len(exact)
    if count:
        shown.append(f"{count} listed number" + ("s" if count != 1 else ""))
    described = listing(shown)
    hit_exact = Verdict(True, "sender phone is a listed number")
    miss = Verdict(False, f"sender phone does not match {described}")
    unknown = Verdict(False, "no sender phone number known")

    def check(message: Message) -> Verdict:
        phone = message.sender_phone
        if not phone:
            return unknown
        if phone in exact:
            return hit_exact
        for prefix in prefixes:
            if phone.startswith(prefix):
                return Verdict(True, f"sender phone matches {prefix}*")
        return miss

    return check


def customer_tag_in(tags: Sequence[str]) -> Check:
    """The customer carries at least one of `tags`."""
    listed = listing(list(tags))
    miss = Verdict(False, f"customer has none of the tags {listed}")

    def check(message: Message) -> Verdict:
        for tag in tags:
            if tag in message.customer_tags:
                return Verdict(True, f"customer is tagged {tag}")
        return miss

    return check


def _one_of(what: str, values: Sequence[str], get: str) -> Check:
    wanted = frozenset(values)
    listed = listing(list(values))
    unknown = Verdict(False, f"{what} unknown")

    def check(message: Message) -> Verdict:
        value = getattr(message, get)
        if value is None:
            return unknown
        if value in wanted:
            return Verdict(True, f"{what} is {value}")
        return Verdict(False, f"{what} {value} is not {listed}")

    return check


def customer_tier_in(tiers: Sequence[str]) -> Check:
    return _one_of("customer tier", tiers, "customer_tier")


def region_in(regions: Sequence[str]) -> Check:
    return _one_of("region", regions, "region")


def priority_in(priorities: Sequence[Priority]) -> Check:
    return _one_of("priority", [p.value for p in priorities], "priority")


def in_business_hours(inside: bool, calendars: Calendars) -> Check:
    """The message arrived inside (`inside`) or outside business hours of the case's region
    (the default region when the case has none, or one the SLA file does not know)."""
    unknown = Verdict(False, "the time the message arrived is not known")

    def check(message: Message) -> Verdict:
        if message.at is None:
            return unknown
        name, calendar = calendars.for_region(message.region)
        working = is_working(calendar, message.at)
        where = "inside" if working else "outside"
        return Verdict(working is inside, f"arrived {where} business hours of region {name}")

    return check
