"""A case as Slack Block Kit: the post agents see in their team's channel, with its buttons.

Customer text is escaped for mrkdwn (&, <, >), so nothing a customer writes can become a
link, a mention or `<!channel>`; plain_text fields need no escaping but are cut to Slack's
limits. Due times use Slack's date token, so each agent reads them in their own time zone.
The buttons' values are the case ref: intake turns a click into an `agent.action`. The Reply
button's value also says where a reply would go (`reply_value`), for the modal it opens.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from casegate_shared.events import CaseSnapshot

from .reply_route import ReplyDestination

Block = dict[str, Any]

ACTIONS_BLOCK = "case_actions"
HEADER_MAX = 150  # Slack's limit for a header's text
SECTION_MAX = 3000  # Slack's limit for a section's text
FIRST_MESSAGE_MAX = 1200  # enough to judge the case; the rest is in casegate
BUTTON_VALUE_MAX = 2000  # Slack's limit for a button's value
PROBLEM_MAX = 300
CLOSED_STATUSES = frozenset({"resolved", "closed"})
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")
BUTTONS = (  # action_id, label, style
    ("claim", "Claim", "primary"),
    ("resolve", "Resolve", None),
    ("escalate", "Escalate", "danger"),
    ("reply", "Reply", None),
)


def escape(text: str) -> str:
    """Text safe inside mrkdwn: Slack's three control characters as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def due(moment: datetime | None) -> str:
    """A due time every reader sees in their own zone; the fallback text is UTC."""
    if moment is None:
        return "—"
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def quote(text: str, limit: int = FIRST_MESSAGE_MAX) -> str:
    """The customer's words as a mrkdwn block quote, escaped, then cut to `limit` characters
    (after escaping, which can make text longer, and never inside an entity)."""
    quoted = "\n".join("> " + escape(line) for line in text.strip().splitlines() or [""])
    if len(quoted) <= limit:
        return quoted
    return _PARTIAL_ENTITY.sub("", quoted[: limit - 1]).rstrip() + "…"


def customer_line(case: CaseSnapshot) -> str:
    c = case.customer
    parts = [p for p in (c.name, c.email, c.phone) if p]
    return escape(" · ".join(parts)) if parts else f"customer #{c.customer_id}"


def assignee_line(case: CaseSnapshot) -> str:
    if case.assignee is None:
        return "unassigned"
    for p in case.participants:
        if p.user == case.assignee and p.slack_user:
            return f"<@{p.slack_user}>"  # an id we stored, never customer text
    return escape(case.assignee)


def summary_text(case: CaseSnapshot) -> str:
    """The notification and screen-reader text that goes with the blocks."""
    return escape(one_line(f"{case.ref} [{case.priority.value}] {case.subject}", HEADER_MAX))


def case_blocks(
    case: CaseSnapshot,
    first_message: str | None = None,
    reply_to: ReplyDestination | None = None,
) -> list[Block]:
    """The case's post: what it is, whose, how urgent, the first words, and the buttons;
    `reply_to` is where a reply would go now, carried by the Reply button."""
    fields = [
        ("Customer", customer_line(case)),
        ("Channel", case.channel.value),
        ("Priority", case.priority.value),
        ("Status", escape(case.status + (f" ({case.reason_code})" if case.reason_code else ""))),
        ("Team", escape(case.team or "—")),
        ("Assignee", assignee_line(case)),
        ("First response due", due(case.first_response_due)),
        ("Resolution due", due(case.resolution_due)),
    ]
    blocks: list[Block] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": one_line(f"{case.ref} · {case.subject}", HEADER_MAX),
            },
        },
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{value}"} for name, value in fields],
        },
    ]
    if first_message and first_message.strip():
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": quote(first_message)}})
    if case.tags:
        tags = ", ".join(escape(t) for t in case.tags)
        blocks.append(_context(f"Tags: {tags}"))
    if case.status in CLOSED_STATUSES:
        closed = f"Case {escape(case.status)}; no actions left."
        blocks.append(_context(closed))
    else:
        buttons = _buttons(case.ref, reply_to)
        actions = {"type": "actions", "block_id": ACTIONS_BLOCK, "elements": buttons}
        blocks.append(actions)
    return blocks


def _context(mrkdwn: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn}]}


def reply_value(ref: str, reply_to: ReplyDestination | None) -> str:
    """The Reply button's value: the ref alone when nobody worked out the destination, else
    compact JSON that intake reads back: {"ref", "via", "to", "next"} (channel, address, and
    whether another channel follows if that one fails; "quiet" when their quiet hours can
    hold the reply back) or {"ref", "unreachable": why}."""
    if reply_to is None:
        return ref
    doc: dict[str, object] = {"ref": ref}
    if reply_to.route is not None:
        doc.update(via=reply_to.route.medium.value, to=reply_to.route.address,
                   next=reply_to.has_fallback)
        if reply_to.quiet:
            doc["quiet"] = reply_to.quiet
    else:
        doc["unreachable"] = one_line(reply_to.problem or "no reachable channel", PROBLEM_MAX)
    value = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    # Addresses are bounded long before this; never let one cost the agent the button.
    return value if len(value) <= BUTTON_VALUE_MAX else ref


def _buttons(ref: str, reply_to: ReplyDestination | None = None) -> list[Block]:
    buttons = []
    for action_id, label, style in BUTTONS:
        button: Block = {
            "type": "button",
            "action_id": action_id,
            "text": {"type": "plain_text", "text": label},
            "value": reply_value(ref, reply_to) if action_id == "reply" else ref,
        }
        if style:
            button["style"] = style
        buttons.append(button)
    return buttons


def thread_reply(text: str, author: str | None = None) -> tuple[str, list[Block]]:
    """A message in the case's thread (a customer's new message, an outcome), escaped."""
    lead = f"*{escape(author)}*\n" if author else ""
    body = quote(text, SECTION_MAX - len(lead) - 100)
    return escape(one_line(text, HEADER_MAX)), [
        {"type": "section", "text": {"type": "mrkdwn", "text": lead + body}}
    ]
