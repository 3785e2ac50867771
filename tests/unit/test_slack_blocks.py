"""The case's Slack post as Block Kit: what it shows, its buttons, Slack's size limits, and that
customer text can never become markup (links, mentions, `<!channel>`)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from casegate_notifier.domain.delivery import Medium, Route
from casegate_notifier.domain.facts import facts_of
from casegate_notifier.domain.policy import Policy, notifications_for
from casegate_notifier.domain.reply_route import ReplyDestination, reply_destination
from casegate_notifier.domain.slack_blocks import (
    ACTIONS_BLOCK,
    BUTTON_VALUE_MAX,
    case_blocks,
    escape,
    quote,
    reply_value,
    summary_text,
    thread_reply,
)
from casegate_shared.events import (
    CaseChange,
    CaseSnapshot,
    CaseUpdated,
    Channel,
    Contact,
    Participant,
    Priority,
    envelope,
)

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


# --- where a reply would go (the Reply button's value) ----------------------------------

# A reply reaches the customer whatever the rules say; P1 is urgent, as in the shipped policy.
EMPTY_POLICY = Policy(rules=[], urgent_priorities=[Priority.P1])


def reply_button(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    [actions] = [b for b in blocks if b.get("block_id") == ACTIONS_BLOCK]
    [button] = [e for e in actions["elements"] if e["action_id"] == "reply"]
    return button


def destination_of(case: CaseSnapshot) -> dict[str, Any]:
    to = reply_destination(case, EMPTY_POLICY)
    value = reply_button(case_blocks(case, reply_to=to))["value"]
    doc: dict[str, Any] = json.loads(value)
    return doc


def test_a_reply_goes_where_the_case_came_from_with_the_next_channel_behind_it() -> None:
    case = snapshot(customer=Contact(customer_id=7, phone="+447700900123", email="ana@example.com"))
    assert destination_of(case) == {"ref": "CS-7K3M9Q", "via": "sms", "to": "+447700900123",
                                    "next": True}


def test_a_chosen_channel_comes_first_and_a_lone_one_has_nothing_behind_it() -> None:
    contact = Contact(customer_id=7, phone="+447700900123", email="ana@example.com",
                      preferred_channel=Channel.EMAIL, fallback=[Channel.EMAIL])
    assert destination_of(snapshot(customer=contact)) == {
        "ref": "CS-7K3M9Q", "via": "email", "to": "ana@example.com", "next": False}


def test_an_opted_out_or_bouncing_channel_is_passed_over_as_the_notifier_would() -> None:
    both = {"customer_id": 7, "phone": "+447700900123", "email": "ana@example.com"}
    stopped = snapshot(customer=Contact(**both, opted_out=[Channel.SMS]))
    assert destination_of(stopped)["via"] == "email"
    bounced = Contact(**both, bouncing=["ana@example.com"])
    bouncing = snapshot(channel=Channel.EMAIL, customer=bounced)
    assert destination_of(bouncing)["via"] == "sms"


def test_quiet_hours_that_can_hold_a_reply_are_on_the_button_unless_it_is_urgent() -> None:
    contact = Contact(customer_id=7, phone="+447700900123", quiet_hours=("22:00", "07:00"),
                      timezone="Europe/Berlin")
    assert destination_of(snapshot(customer=contact))["quiet"] == "22:00-07:00 Europe/Berlin"
    assert "quiet" not in destination_of(snapshot(customer=contact, priority=Priority.P1))


def test_a_customer_nobody_can_reach_is_said_so_on_the_button() -> None:
    case = snapshot(customer=Contact(customer_id=7, phone="+447700900123", opted_out=[Channel.SMS]))
    doc = destination_of(case)
    assert set(doc) == {"ref", "unreachable"} and "sms: opted out" in doc["unreachable"]


def test_only_the_reply_button_carries_the_destination() -> None:
    case = snapshot()
    to = reply_destination(case, EMPTY_POLICY)
    [actions] = [b for b in case_blocks(case, reply_to=to) if b.get("block_id") == ACTIONS_BLOCK]
    values = {e["action_id"]: e["value"] for e in actions["elements"]}
    assert values["claim"] == values["resolve"] == values["escalate"] == "CS-7K3M9Q"
    assert values["reply"].startswith("{") and len(values["reply"]) <= BUTTON_VALUE_MAX
    assert reply_button(case_blocks(case))["value"] == "CS-7K3M9Q"  # nothing worked out: the ref


def test_a_destination_too_long_for_slack_leaves_the_bare_ref() -> None:
    problem = ReplyDestination(None, problem="x" * 5000)
    assert len(reply_value("CS-7K3M9Q", problem)) <= BUTTON_VALUE_MAX
    far = ReplyDestination(Route(Medium.EMAIL, "a" * 3000 + "@example.com"))
    assert reply_value("CS-7K3M9Q", far) == "CS-7K3M9Q"


CHANNELS = [Channel.EMAIL, Channel.SMS, Channel.SLACK, Channel.WEBFORM]


# The everyday case: they texted, and have an email too.
@example(origin=Channel.SMS, preferred=None, fallback=[], opted_out=[], bounces=False,
         has={"email", "phone"}, quiet=None, priority=Priority.P3)
@given(
    origin=st.sampled_from([Channel.EMAIL, Channel.SMS, Channel.WEBFORM]),
    preferred=st.sampled_from([None, *CHANNELS]),
    fallback=st.lists(st.sampled_from(CHANNELS), max_size=3, unique=True),
    opted_out=st.lists(st.sampled_from(CHANNELS[:3]), max_size=3, unique=True),
    bounces=st.booleans(),
    has=st.sets(st.sampled_from(["email", "phone", "slack_user"])),
    quiet=st.sampled_from([None, ("22:00", "07:00")]),
    priority=st.sampled_from([Priority.P1, Priority.P3]),
)
def test_the_button_names_the_route_the_reply_will_take(
    origin: Channel, preferred: Channel | None, fallback: list[Channel],
    opted_out: list[Channel], bounces: bool, has: set[str], quiet: tuple[str, str] | None,
    priority: Priority,
) -> None:
    """Whatever the customer's preferences, the destination on the card is the first route of
    the notification the policy makes for an agent's reply to that case, and its quiet hours
    are named exactly when they can hold that notification back."""
    addresses = {"email": "ana@example.com", "phone": "+447700900123", "slack_user": "U0ANA"}
    contact = Contact(customer_id=7, preferred_channel=preferred, fallback=fallback,
                      opted_out=opted_out, bouncing=["ana@example.com"] if bounces else [],
                      quiet_hours=quiet, timezone="Europe/Berlin",
                      **{k: v for k, v in addresses.items() if k in has})
    case = snapshot(channel=origin, customer=contact, priority=priority)
    policy = EMPTY_POLICY
    reply = CaseUpdated(change=CaseChange.REPLY_ADDED, ref=case.ref, actor="bob", case=case,
                        body="On its way.")
    event = envelope(reply, source="case-store", subject=case.ref, routing_key="case.reply_added")
    sent = [n for n in notifications_for(policy, facts_of(event)) if n.audience == "customer"]
    told = reply_destination(case, policy)
    if not sent:
        assert told.route is None and told.problem
        return
    [n] = sent
    assert told.route == n.routes[0] and told.has_fallback == (len(n.routes) > 1)
    assert (told.quiet is not None) == (n.quiet is not None and not n.urgent)
