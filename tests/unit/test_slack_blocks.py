"""The case's Slack post as Block Kit: what it shows, its buttons, Slack's size limits, and that
customer text can never become markup (links, mentions, `<!channel>`)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from casegate_notifier.domain.slack_blocks import (
    ACTIONS_BLOCK,
    case_blocks,
    escape,
    quote,
    summary_text,
    thread_reply,
)
from casegate_shared.events import CaseSnapshot, Channel, Contact, Participant, Priority

DUE = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
# The only markup we write ourselves: Slack's date token and a mention of an id we stored.
OURS = re.compile(r"<!date\^\d+\^\{date_short_pretty\} \{time\}\|[^<>]*>|<@U[A-Z0-9]+>")


def snapshot(**over: Any) -> CaseSnapshot:
    base: dict[str, Any] = {
        "ref": "CS-7K3M9Q",
        "subject": "Parcel never arrived",
        "channel": Channel.SMS,
        "status": "open",
        "priority": Priority.P2,
        "team": "logistics",
        "customer": Contact(customer_id=7, name="Ada Lovelace", phone="+14155550100"),
        "first_response_due": DUE,
        "resolution_due": None,
        "tags": ["vip"],
    }
    return CaseSnapshot(**{**base, **over})


def mrkdwn_texts(blocks: list[dict[str, Any]]) -> list[str]:
    """Every mrkdwn string in the blocks, wherever it sits."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return found


def assert_no_customer_markup(text: str) -> None:
    rest = OURS.sub("", text)
    rest = re.sub(r"(?m)^> ", "", rest)  # our block-quote marks
    assert "<" not in rest and ">" not in rest, rest
    assert not re.search(r"&(?!amp;|lt;|gt;)", rest), rest


def test_the_post_shows_the_case_and_its_buttons() -> None:
    blocks = case_blocks(snapshot(), "It was due on Monday.")
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "CS-7K3M9Q · Parcel never arrived"},
    }
    fields = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1] for f in blocks[1]["fields"]}
    assert fields["*Customer*"] == "Ada Lovelace · +14155550100"
    assert (fields["*Channel*"], fields["*Priority*"], fields["*Status*"]) == ("sms", "P2", "open")
    assert (fields["*Team*"], fields["*Assignee*"], fields["*Resolution due*"]) == (
        "logistics", "unassigned", "—")
    assert fields["*First response due*"].startswith(f"<!date^{int(DUE.timestamp())}^")
    assert "> It was due on Monday." in mrkdwn_texts(blocks)
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert actions["block_id"] == ACTIONS_BLOCK
    assert [(b["action_id"], b["value"]) for b in actions["elements"]] == [
        ("claim", "CS-7K3M9Q"), ("resolve", "CS-7K3M9Q"), ("escalate", "CS-7K3M9Q"),
        ("reply", "CS-7K3M9Q"),
    ]


def test_customer_text_is_escaped_everywhere_it_appears() -> None:
    evil = "<!channel> <https://evil.example|Your refund> & <@U0BOSS>"
    case = snapshot(
        subject=evil,
        customer=Contact(customer_id=7, name=evil, email="a<b>@example.com"),
        tags=[evil],
        team=evil,
        status="open",
        reason_code="<!here>",
    )
    blocks = case_blocks(case, evil + "\nsecond line > third")
    texts = mrkdwn_texts(blocks)
    for text in texts:
        assert_no_customer_markup(text)
    joined = "\n".join(texts)
    escaped = "&lt;!channel&gt; &lt;https://evil.example|Your refund&gt; &amp; &lt;@U0BOSS&gt;"
    assert escaped in joined
    assert "> second line &gt; third" in joined
    assert_no_customer_markup(summary_text(case))
    # plain_text is not parsed by Slack: the header shows the subject as written, on one line
    assert blocks[0]["text"]["type"] == "plain_text" and evil in blocks[0]["text"]["text"]


def test_an_assignee_with_a_slack_id_is_mentioned_and_other_names_escaped() -> None:
    owner = Participant(role="owner", user="grace", slack_user="U0GRACE01")
    fields = case_blocks(snapshot(assignee="grace", participants=[owner]))[1]["fields"]
    assert "*Assignee*\n<@U0GRACE01>" in [f["text"] for f in fields]
    fields = case_blocks(snapshot(assignee="<b>ob"))[1]["fields"]
    assert "*Assignee*\n&lt;b&gt;ob" in [f["text"] for f in fields]


def test_a_resolved_case_has_no_buttons() -> None:
    blocks = case_blocks(snapshot(status="resolved"))
    assert not [b for b in blocks if b["type"] == "actions"]
    assert "no actions left" in json.dumps(blocks)


def test_slack_limits_hold_for_huge_and_hostile_text() -> None:
    huge = "<&>" * 5000
    blocks = case_blocks(snapshot(subject="x" * 500), huge)
    assert len(blocks[0]["text"]["text"]) <= 150
    for text in mrkdwn_texts(blocks):
        assert len(text) <= 3000
        assert_no_customer_markup(text)
    _, reply = thread_reply(huge, author="Customer <via SMS>")
    [text] = mrkdwn_texts(reply)
    assert len(text) <= 3000 and text.startswith("*Customer &lt;via SMS&gt;*\n")
    assert_no_customer_markup(text)


def test_quote_never_cuts_inside_an_entity() -> None:
    for limit in range(10, 40):
        text = quote("a<b&c>d" * 20, limit)
        assert len(text) <= limit and text.endswith("…")
        assert not re.search(r"&[a-z]*…$", text)


def test_escape_is_exactly_slacks_three() -> None:
    assert escape("a & b < c > d *bold* _it_") == "a &amp; b &lt; c &gt; d *bold* _it_"


@given(name=st.text(max_size=200), message=st.text(max_size=400), tag=st.text(max_size=40))
def test_no_customer_text_becomes_markup(name: str, message: str, tag: str) -> None:
    customer = Contact(customer_id=1, name=name or None)
    case = snapshot(customer=customer, tags=[tag], subject=name or "s")
    for text in mrkdwn_texts(case_blocks(case, message)):
        assert_no_customer_markup(text)
