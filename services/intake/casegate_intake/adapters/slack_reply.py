"""The Slack reply modal: what it says, and where the reply goes as the Reply button tells it.

Intake knows no customer. The notifier does, and when it draws a case's card it puts in the
Reply button's value, as JSON, where a reply would go then: the channel and address (and
whether another channel follows if that one fails, and the customer's quiet hours when they
can hold it back), or why the customer cannot be reached.
The modal names that, escaped for mrkdwn, and says it is as of the card's last update: the
notifier decides again when it sends.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..domain.sms import readable
from . import Invalid

REPLY_CALLBACK = "casegate_reply"
REPLY_BLOCK, REPLY_INPUT = "reply", "text"
# What a reply can travel on, as the modal names it.
REPLY_CHANNELS = {"email": "email", "sms": "SMS", "slack": "Slack"}
ADDRESS_MAX = 320
PROBLEM_MAX = 300
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
# "22:00-07:00 Europe/Berlin": the notifier's wording, checked so only that can be shown.
_QUIET = re.compile(r"[0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9] [A-Za-z0-9_+\-/]{1,64}")


@dataclass(frozen=True, slots=True)
class ReplyDestination:
    """Where a reply would go, as the notifier worked it out when it last drew the card:
    a channel and address (and whether another channel follows if that one fails), or why
    the customer cannot be reached."""

    channel: str | None = None  # a key of REPLY_CHANNELS
    address: str | None = None
    has_fallback: bool = False
    unreachable: str | None = None
    quiet: str | None = None  # "22:00-07:00 Europe/Berlin": a reply inside it waits


def reply_value(value: str) -> tuple[str, ReplyDestination | None]:
    """The Reply button's value -> the case ref, and where a reply would go when the card
    was drawn. A bare ref (a card drawn before destinations were shown) has no destination;
    so has a destination that does not read as one, rather than the agent losing the modal."""
    if not value.startswith("{"):
        return value, None
    try:
        doc = json.loads(value)
    except ValueError:
        raise Invalid({"actions.value": "is not a case reference"}) from None
    ref = doc.get("ref") if isinstance(doc, dict) else None
    if not isinstance(ref, str):
        raise Invalid({"actions.value": "is not a case reference"})
    channel, address, why = doc.get("via"), doc.get("to"), doc.get("unreachable")
    if (channel in REPLY_CHANNELS and isinstance(address, str)
            and 0 < len(address) <= ADDRESS_MAX and not _CONTROLS.search(address)):
        quiet = doc.get("quiet")
        quiet = quiet if isinstance(quiet, str) and _QUIET.fullmatch(quiet) else None
        return ref, ReplyDestination(channel, address, doc.get("next") is True, quiet=quiet)
    if isinstance(why, str) and why.strip():
        return ref, ReplyDestination(unreachable=" ".join(why.split())[:PROBLEM_MAX])
    return ref, None


def escape(text: str) -> str:
    """Text safe inside mrkdwn: Slack's three control characters as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def destination_text(ref: str, to: ReplyDestination | None) -> str:
    """The modal's first words: the case, and where the reply will go (escaped for mrkdwn)."""
    if to is not None and to.channel is not None and to.address is not None:
        address = readable(to.address) if to.channel == "sms" else to.address
        # As code, so * _ ~ in an address stay characters instead of becoming formatting.
        shown = f"`{escape(address)}`" if "`" not in address else escape(address)
        then = ("(or the next channel if that fails)" if to.has_fallback
                else "(no other channel to fall back to)")
        text = (f"Case *{ref}*: this reply goes by *{REPLY_CHANNELS[to.channel]}* to {shown} "
                f"{then}. It is also added to the case's timeline.")
        if to.quiet:
            window, _, zone = to.quiet.partition(" ")
            # As code: zone names such as America/Port_of_Spain would turn italic otherwise.
            text += (f" They have quiet hours (`{window.replace('-', '–')} {zone}`): written "
                     "inside them, it waits until they end.")
        return text
    if to is not None and to.unreachable:
        return (f"Case *{ref}*: the customer cannot be reached now ({escape(to.unreachable)}). "
                "The reply is added to the case's timeline but not sent.")
    return (f"Case *{ref}*: this reply goes to the customer on their preferred channel (the "
            "one they wrote from unless they chose another), at their address on file. It is "
            "also added to the case's timeline.")


def reply_modal(
    ref: str, thread_key: str | None, destination: ReplyDestination | None = None
) -> dict[str, Any]:
    """The Reply modal: where the reply goes, and one text box. Intake does not know the
    customer: where it goes is what the notifier said when it last drew the card, and the
    notifier decides again when it sends."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": destination_text(ref, destination)}}
    ]
    if destination is not None:
        note = "As of the card's last update; casegate checks again when it sends."
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    return {
        "type": "modal",
        "callback_id": REPLY_CALLBACK,
        "private_metadata": json.dumps({"ref": ref, "thread_key": thread_key}),
        "title": {"type": "plain_text", "text": "Reply to customer"},
        "submit": {"type": "plain_text", "text": "Send reply"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            *blocks,
            {
                "type": "input",
                "block_id": REPLY_BLOCK,
                "label": {"type": "plain_text", "text": "Reply"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REPLY_INPUT,
                    "multiline": True,
                    "max_length": 3000,
                },
            },
        ],
    }
