"""Who a role is on a given case, and the ordered ways to reach them.

A customer is reached on their preferred channel (by default the one they wrote from), then
on the others in their fallback order, skipping channels they opted out of, identities they
do not have and addresses that bounce. Agents (participants and the assignee) are reached in
Slack first (where they work), then by email. Each function returns the recipients, or the
reason there are none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from casegate_shared.events import Channel, Contact, Participant

from .delivery import Medium, Route
from .facts import REPLY, AgentContact, Facts
from .quiet import QuietHours, QuietHoursProblem, parse_quiet_hours

NAME_MAX = 80
# Deliberately narrower than RFC 5322: no quoted local parts, comments or controls, so a
# usable address can go on an SMTP command line and into a header unchanged.
_ADDRESS = re.compile(r'[^\x00-\x20\x7f<>()\[\]\\,;:"@]+@[^\x00-\x20\x7f<>()\[\]\\,;:"@]+')
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SLACK_ID = re.compile(r"[A-Z0-9][A-Z0-9_.-]{1,79}", re.IGNORECASE)
# Anything that could end a header line or hide in one: whitespace runs (which include
# CR, LF and the Unicode line separators) and every control character.
_BREAKS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")

DELIVERABLE = {Channel.EMAIL: Medium.EMAIL, Channel.SMS: Medium.SMS, Channel.SLACK: Medium.SLACK}


@dataclass(frozen=True, slots=True)
class Recipient:
    audience: str  # the role that made them a recipient
    name: str | None
    routes: tuple[Route, ...]
    language: str | None = None  # None: the policy's default language
    quiet: QuietHours | None = None
    note: str = ""  # what was skipped on the way, for the verdict's reason
    # The channel they would have heard on first, when it could not be used (opted out,
    # bouncing): the outcome says the message went elsewhere, and why.
    passed_over: Channel | None = None
    passed_over_reason: str | None = None


def one_line(text: str, limit: int) -> str:
    """Customer text fit for a subject or a display name: one line, no controls, bounded."""
    flat = _BREAKS.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def email_address(raw: str | None) -> str | None:
    """The address normalized (domains are case-insensitive), or None if it is not usable."""
    if raw is None:
        return None
    candidate = raw.strip()
    if not _ADDRESS.fullmatch(candidate):
        return None
    local, domain = candidate.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


def phone_number(raw: str | None) -> str | None:
    if raw is None:
        return None
    candidate = raw.strip()
    return candidate if _E164.fullmatch(candidate) else None


def slack_id(raw: str | None) -> str | None:
    if raw is None:
        return None
    candidate = raw.strip()
    return candidate if _SLACK_ID.fullmatch(candidate) else None


def _address_on(contact: Contact, channel: Channel) -> str | None:
    if channel is Channel.EMAIL:
        return email_address(contact.email)
    if channel is Channel.SMS:
        return phone_number(contact.phone)
    if channel is Channel.SLACK:
        return slack_id(contact.slack_user)
    return None


def _normal(channel: Channel, raw: str) -> str | None:
    return {Channel.EMAIL: email_address, Channel.SMS: phone_number, Channel.SLACK: slack_id}[
        channel
    ](raw)


def customer(facts: Facts, default_order: list[Channel]) -> Recipient | str:
    """The customer and their routes, in order; or why they cannot be reached."""
    contact = facts.customer
    if contact is None:
        return "the event carries no customer contact"
    preferred = contact.preferred_channel
    if preferred is None and facts.channel is not None:
        preferred = Channel(facts.channel)
    order: list[Channel] = []
    reply_route: Route | None = None
    if facts.event_type == REPLY and facts.reply_channel is not None:
        channel = Channel(facts.reply_channel)
        order.append(channel)  # a reply goes where the agent answered, opt-outs permitting
        if channel in DELIVERABLE and facts.reply_to:
            address = _normal(channel, facts.reply_to)
            if address is not None:
                reply_route = Route(DELIVERABLE[channel], address)
    for channel in [preferred, *(contact.fallback or default_order)]:
        if channel is not None and channel not in order:
            order.append(channel)
    routes: list[Route] = []
    skipped: list[str] = []
    passed_over: tuple[Channel, str] | None = None
    bouncing = {b.strip().lower() for b in contact.bouncing}
    for channel in order:
        if channel not in DELIVERABLE:
            skipped.append(f"{channel.value}: nothing to send to (the tracking page shows it)")
            continue
        if channel in contact.opted_out:
            skipped.append(f"{channel.value}: opted out")
            if not routes and passed_over is None:
                passed_over = (channel, "opted out")
            continue
        route = reply_route if reply_route and reply_route.medium.value == channel.value else None
        address = route.address if route else _address_on(contact, channel)
        if address is None:
            skipped.append(f"{channel.value}: no usable address")
            continue
        if address.lower() in bouncing:
            skipped.append(f"{channel.value}: address bounces")
            if not routes and passed_over is None:
                passed_over = (channel, "address bounces")
            continue
        routes.append(Route(DELIVERABLE[channel], address))
    if not routes:
        return "customer has no reachable channel (" + "; ".join(skipped) + ")"
    try:
        quiet = parse_quiet_hours(contact.quiet_hours, contact.timezone)
    except QuietHoursProblem as exc:
        quiet, skipped = None, [*skipped, f"quiet hours ignored: {exc}"]
    name = one_line(contact.name or "", NAME_MAX) or None
    over, why = passed_over if passed_over is not None else (None, None)
    return Recipient("customer", name, tuple(routes), contact.language, quiet, "; ".join(skipped),
                     over, why)


def agent(role: str, person: Participant | AgentContact) -> Recipient | str:
    routes = []
    if (user := slack_id(person.slack_user)) is not None:
        routes.append(Route(Medium.SLACK, user))
    if (address := email_address(person.email)) is not None:
        routes.append(Route(Medium.EMAIL, address))
    if not routes:
        return f"{role} {person.user} has no Slack user or email address"
    return Recipient(role, one_line(person.user, NAME_MAX), tuple(routes))


def participants(facts: Facts, role: str) -> list[Recipient | str]:
    """owner, administrator or watchers of the case; never the person who made the change."""
    wanted = "watcher" if role == "watchers" else role
    people = [p for p in facts.participants if p.role == wanted]
    if not people:
        return [f"case has no {wanted}"]
    return [
        f"{role} {p.user} made this change" if p.user == facts.actor else agent(role, p)
        for p in people
    ]


def assignee(facts: Facts) -> Recipient | str:
    """The agent the case is assigned to; never the person who made the change."""
    handle = facts.assignee
    if handle is None:
        return "case has no assignee"
    if handle == facts.actor:
        return f"assignee {handle} made this change"
    if facts.assignee_contact is None:
        return f"assignee {handle} has no known Slack user or email address"
    return agent("assignee", facts.assignee_contact)


def fixed(
    role: str, label: str, slack_channel: str | None, emails: list[str]
) -> list[Recipient | str]:
    """A team channel or a group from the policy file: one recipient per address."""
    found: list[Recipient | str] = []
    if slack_channel and (channel := slack_id(slack_channel)) is not None:
        found.append(Recipient(role, label, (Route(Medium.SLACK, channel),)))
    for raw in emails:
        if (address := email_address(raw)) is not None:
            found.append(Recipient(role, label, (Route(Medium.EMAIL, address),)))
    return found or [f"{label} has no usable Slack channel or email address"]
