"""The notification policy: each role gets exactly the notifications the policy gives it, a
customer never hears about an internal change, an agent's reply always reaches the customer,
and every rule's hit or miss is recorded with a reason."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casegate_notifier.domain.delivery import Medium, RecordUnavailable, Route
from casegate_notifier.domain.facts import (
    CUSTOMER_VISIBLE,
    KNOWN_EVENTS,
    AgentContact,
    Facts,
    facts_of,
)
from casegate_notifier.domain.policy import (
    REPLY_RULE,
    Policy,
    Rule,
    When,
    decide,
    notifications_for,
)
from casegate_notifier.domain.policy_file import PolicyError, load_policy, parse_policy
from casegate_notifier.domain.samples import sample_contact, sample_event, sample_snapshot
from casegate_notifier.handlers import with_assignee
from casegate_shared.bus import Defer
from casegate_shared.events import (
    CaseCustomer,
    CaseOpened,
    CaseUpdated,
    Channel,
    Envelope,
    Priority,
    envelope,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = load_policy(ROOT / "config/notify.yaml")

FULL = parse_policy(
    """
teams:
  billing: {slack_channel: C0BILLING}
escalation_group: {email: [duty@corp.example]}
webhooks:
  crm: {url: "https://crm.example.com/hook", events: [case.opened, case.note_added]}
rules:
  - {name: ack, events: case.opened, to: customer, template: case_opened}
  - name: pending
    events: case.status_changed
    when: {status: [pending_customer]}
    to: customer
    template: case_pending_customer
  - name: resolved
    events: case.status_changed
    when: {status: [resolved]}
    to: [customer, watchers]
    template: case_resolved
  - {name: reopened, events: case.reopened, to: [customer, owner], template: case_reopened}
  - {name: team_post, events: case.routed, to: team_channel, template: case_routed}
  - {name: assigned, events: case.assigned, to: [owner, watchers], template: case_assigned}
  - {name: notes, events: case.note_added, to: watchers, template: note_added}
  - {name: warn, events: case.sla_warning, to: owner, template: sla_warning}
  - name: breach
    events: case.sla_breached
    to: [owner, administrator, team_channel]
    template: sla_breached
  - name: escalated
    events: case.escalated
    to: [escalation_group, administrator]
    template: case_escalated
  - {name: failed, events: notification.failed, to: escalation_group, template: notification_failed}
"""
)

CUSTOMER = ("customer", "ann@example.com")
OWNER_SLACK = ("owner", "U0BOB")
ADMIN = ("administrator", "carol@corp.example")
WATCHER = ("watchers", "dave@corp.example")
TEAM = ("team_channel", "C0BILLING")
GROUP = ("escalation_group", "duty@corp.example")
CRM = ("webhook", "crm")
ASSIGNEE_BOB = ("assignee", "U0BOB")


def event(
    event_type: str, status: str | None = None, actor: str = "erin", **changes: Any
) -> Envelope[Any]:
    ev = sample_event(event_type, status=status)
    if status is not None and "case" in changes:
        changes["case"] = changes["case"].model_copy(update={"status": status})
    if isinstance(ev.data, CaseUpdated):
        ev = ev.model_copy(update={"data": ev.data.model_copy(update={"actor": actor, **changes})})
    return ev


def heard(policy: Policy, ev: Envelope[Any]) -> set[tuple[str, str]]:
    return {(n.audience, n.recipient) for n in notifications_for(policy, facts_of(ev))}


@pytest.mark.parametrize(
    ("event_type", "status", "expected"),
    [
        ("case.opened", None, {CUSTOMER, CRM}),
        ("case.reply_added", None, {CUSTOMER}),
        ("case.note_added", None, {WATCHER, CRM}),
        ("case.status_changed", "pending_customer", {CUSTOMER}),
        ("case.status_changed", "resolved", {CUSTOMER, WATCHER}),
        ("case.status_changed", "closed", set()),
        ("case.reopened", None, {CUSTOMER, OWNER_SLACK}),
        ("case.routed", None, {TEAM}),
        ("case.assigned", None, {OWNER_SLACK, WATCHER}),
        ("case.sla_warning", None, {OWNER_SLACK}),
        ("case.sla_breached", None, {OWNER_SLACK, ADMIN, TEAM}),
        ("case.escalated", None, {GROUP, ADMIN}),
        ("notification.failed", None, {GROUP}),
        ("case.message_added", None, set()),
        ("case.priority_changed", None, set()),
        ("case.merged", None, set()),
        ("case.bounced", None, set()),
    ],
)
def test_each_role_gets_exactly_what_the_policy_gives_it(
    event_type: str, status: str | None, expected: set[tuple[str, str]]
) -> None:
    assert heard(FULL, event(event_type, status)) == expected


@pytest.mark.parametrize(
    ("event_type", "status", "expected"),
    [
        ("case.opened", None, {CUSTOMER}),
        ("case.reply_added", None, {CUSTOMER}),
        ("case.note_added", None, {WATCHER}),
        ("case.status_changed", "pending_customer", {CUSTOMER, WATCHER}),
        ("case.status_changed", "resolved", {CUSTOMER, WATCHER}),
        ("case.status_changed", "closed", {WATCHER}),
        ("case.reopened", None, {CUSTOMER, OWNER_SLACK, WATCHER}),
        ("case.routed", None, set()),  # the shipped file names no team channels
        # The sample's assignee is its owner, bob: told once, by the first rule naming him.
        ("case.assigned", None, {ASSIGNEE_BOB, WATCHER}),
        ("case.sla_warning", None, {ASSIGNEE_BOB}),
        ("case.sla_breached", None, {ASSIGNEE_BOB, ADMIN}),
        ("case.escalated", None, {ASSIGNEE_BOB, ADMIN, WATCHER}),
        ("notification.failed", None, set()),
        ("case.message_added", None, {OWNER_SLACK}),
        ("case.priority_changed", None, set()),
    ],
)
def test_the_shipped_policy(
    event_type: str, status: str | None, expected: set[tuple[str, str]]
) -> None:
    assert heard(SHIPPED, event(event_type, status)) == expected


def test_internal_changes_never_reach_the_customer_even_from_a_policy_built_in_code() -> None:
    internal = [e for e in KNOWN_EVENTS if e not in CUSTOMER_VISIBLE]
    rule = Rule.model_construct(  # skips the validation the file loader would apply
        name="tell_all", events=list(KNOWN_EVENTS), when=When(), to=["customer"],
        template="case_opened", urgent=None, digest=False,
    )
    rogue = Policy.model_validate({"rules": []}).model_copy(update={"rules": [rule]})
    for event_type in internal:
        verdicts = decide(rogue, facts_of(event(event_type)))
        assert all(v.notification is None or v.audience != "customer" for v in verdicts), event_type
        [v] = [v for v in verdicts if v.rule == "tell_all"]
        assert v.reason == "internal change: never told to the customer"


def test_a_file_that_sends_an_internal_change_to_the_customer_is_refused() -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(
            "rules:\n"
            "  - name: oops\n"
            "    events: [case.opened, case.note_added]\n"
            "    to: [customer]\n"
            "    template: note_added\n",
            source="notify.yaml",
        )
    assert str(err.value) == (
        "notify.yaml:2: rules[0]: (oops): internal changes never reach a customer: case.note_added"
    )


def test_a_reply_reaches_the_customer_whatever_the_policy_says() -> None:
    empty = parse_policy("rules: []")
    [n] = notifications_for(empty, facts_of(event("case.reply_added")))
    assert (n.rule, n.audience, n.template) == (REPLY_RULE, "customer", "agent_reply")
    assert n.values["body"].startswith("We have corrected the invoice")
    assert n.urgent is False  # quiet hours apply unless the policy says replies are urgent


@settings(max_examples=200, deadline=None)
@given(
    event_type=st.sampled_from(KNOWN_EVENTS),
    roles=st.lists(
        st.sampled_from(["customer", "owner", "administrator", "watchers"]), min_size=1, max_size=4
    ),
    events=st.lists(st.sampled_from(KNOWN_EVENTS), min_size=1, max_size=5),
)
def test_any_policy_keeps_the_two_fixed_rows(
    event_type: str, roles: list[str], events: list[str]
) -> None:
    """Whatever a policy's rows are (even ones the loader would refuse), a customer hears only
    customer-visible events and always hears a reply."""
    rule = Rule.model_construct(
        name="r", events=events, when=When(), to=roles, template="case_opened", urgent=None,
        digest=False,
    )
    policy = Policy.model_validate({"rules": []}).model_copy(update={"rules": [rule]})
    audiences = [n.audience for n in notifications_for(policy, facts_of(event(event_type)))]
    if event_type not in CUSTOMER_VISIBLE:
        assert "customer" not in audiences
    if event_type == "case.reply_added":
        assert audiences.count("customer") == 1


def test_every_rule_for_the_event_is_recorded_hit_or_miss_with_reasons() -> None:
    verdicts = decide(FULL, facts_of(event("case.status_changed", "resolved")))
    assert [(v.rule, v.matched, v.audience) for v in verdicts] == [
        ("pending", False, None),
        ("resolved", True, "customer"),
        ("resolved", True, "watchers"),
    ]
    assert verdicts[0].reason == "status resolved not in pending_customer"
    assert verdicts[1].reason.startswith("customer by email")


def test_conditions_on_priority_tier_channel_and_reason_code() -> None:
    policy = parse_policy(
        """
rules:
  - name: vip
    events: case.status_changed
    when: {priority: [P1, P2], tier: [gold], channel: [email], reason_code: [billing_error]}
    to: customer
    template: case_resolved
"""
    )
    ev = event("case.status_changed", "resolved", reason_code="billing_error")
    assert heard(policy, ev) == {CUSTOMER}
    other = ev.model_copy(update={"data": ev.data.model_copy(update={"reason_code": "other"})})
    [v] = decide(policy, facts_of(other))
    assert not v.matched and v.reason == "reason code other not in billing_error"
    lower = {"customer": sample_contact(tier="silver"), "priority": Priority.P4}
    silver = ev.data.case.model_copy(update=lower)
    low = ev.model_copy(update={"data": ev.data.model_copy(update={"case": silver})})
    [v] = decide(policy, facts_of(low))
    assert v.reason == "priority P4 not in P1, P2; tier silver not in gold"


def test_one_person_hears_one_event_once_and_the_person_who_acted_is_not_told() -> None:
    policy = parse_policy(
        """
rules:
  - {name: first, events: case.assigned, to: [owner, watchers], template: case_assigned}
  - {name: second, events: case.assigned, to: owner, template: case_assigned}
"""
    )
    verdicts = decide(policy, facts_of(event("case.assigned")))
    hits = [(v.rule, v.matched) for v in verdicts]
    assert hits == [("first", True), ("first", True), ("second", False)]
    assert verdicts[2].reason == "bob already hears this from first"
    by_bob = decide(policy, facts_of(event("case.assigned", actor="bob")))
    assert "owner bob made this change" in [v.reason for v in by_bob]


def test_customer_routes_follow_preference_fallback_opt_outs_and_bounces() -> None:
    def routes(**contact: Any) -> list[Route] | str:
        case = sample_snapshot(customer=sample_contact(**contact))
        ev = event("case.status_changed", "resolved", case=case)
        found = [n for n in notifications_for(SHIPPED, facts_of(ev)) if n.audience == "customer"]
        if not found:
            return next(v.reason for v in decide(SHIPPED, facts_of(ev)) if v.audience == "customer")
        return list(found[0].routes)

    email, sms = Route(Medium.EMAIL, "ann@example.com"), Route(Medium.SMS, "+14155550100")
    slack = Route(Medium.SLACK, "U0ANN")
    assert routes() == [email, sms]
    assert routes(preferred_channel=Channel.SMS) == [sms, email]
    assert routes(preferred_channel=Channel.SLACK, slack_user="U0ANN") == [slack, email, sms]
    assert routes(opted_out=[Channel.SMS]) == [email]
    assert routes(bouncing=["ANN@example.com"]) == [sms]
    assert routes(preferred_channel=None, fallback=[]) == [email, sms]  # wrote by email, defaults
    web_first = [Channel.WEBFORM, Channel.SMS]
    assert routes(preferred_channel=Channel.WEBFORM, fallback=web_first) == [sms]
    assert routes(email=None, opted_out=[Channel.SMS], fallback=[Channel.EMAIL, Channel.SMS]) == (
        "customer has no reachable channel (email: no usable address; sms: opted out)"
    )


def test_a_reply_goes_where_the_agent_answered_unless_opted_out() -> None:
    ev = event("case.reply_added", channel=Channel.SMS, reply_to="+14155550100")
    [n] = notifications_for(SHIPPED, facts_of(ev))
    assert list(n.routes) == [
        Route(Medium.SMS, "+14155550100"), Route(Medium.EMAIL, "ann@example.com")
    ]
    stopped = sample_snapshot(customer=sample_contact(opted_out=[Channel.SMS]))
    ev = event("case.reply_added", channel=Channel.SMS, reply_to="+14155550100", case=stopped)
    [n] = notifications_for(SHIPPED, facts_of(ev))
    assert list(n.routes) == [Route(Medium.EMAIL, "ann@example.com")]  # SMS STOP always wins


def test_the_dedupe_key_names_event_recipient_and_channel_exactly() -> None:
    ev = event("case.status_changed", "resolved")
    [n] = [n for n in notifications_for(SHIPPED, facts_of(ev)) if n.audience == "customer"]
    assert n.dedupe_key == f"{ev.id}/email/ann@example.com"
    again = notifications_for(SHIPPED, facts_of(ev))
    assert n.dedupe_key in {m.dedupe_key for m in again}  # a redelivery is the same notification


def test_the_email_domain_is_case_insensitive_for_dedupe() -> None:
    def opened(email: str) -> Envelope[CaseOpened]:
        return envelope(
            CaseOpened(ref="CS-7K3M9Q", customer=CaseCustomer(id=7, name="Ann", email=email),
                       channel=Channel.WEBFORM, subject="s", body="b", priority=Priority.P3,
                       status="new", opened_at=datetime(2025, 3, 4, tzinfo=UTC)),
            source="case-store", event_id="33333333-3333-3333-3333-333333333333",
        )

    [upper] = notifications_for(SHIPPED, facts_of(opened(" Ann@EXAMPLE.com ")))
    [lower] = notifications_for(SHIPPED, facts_of(opened("Ann@example.com")))
    assert upper.recipient == "Ann@example.com" and upper.dedupe_key == lower.dedupe_key


def test_unusable_addresses_are_skipped_with_a_reason() -> None:
    bad_ones = ("ann@example.com\r\nBcc: x@evil.test", "not-an-address", "a b@example.com", "a@b@c")
    for bad in bad_ones:
        case = sample_snapshot(customer=sample_contact(email=bad, phone=None))
        ev = event("case.status_changed", "resolved", case=case)
        [v] = [v for v in decide(SHIPPED, facts_of(ev)) if v.audience == "customer"]
        assert v.notification is None and "email: no usable address" in v.reason, bad


def test_customer_text_is_flattened_to_one_bounded_line() -> None:
    case = sample_snapshot(subject="Help\r\nBcc: x@evil.test\x00" + "x" * 500,
                           customer=sample_contact(name="Eve\nX-A: 1"))
    facts = facts_of(event("case.status_changed", "resolved", case=case))
    [n] = [n for n in notifications_for(SHIPPED, facts) if n.audience == "customer"]
    assert n.values["subject"].startswith("Help Bcc: x@evil.test x")
    assert len(n.values["subject"]) == 150
    assert n.recipient_name == "Eve X-A: 1"


def test_a_failed_failure_notice_is_not_announced_again() -> None:
    ev = sample_event("notification.failed")
    about_a_notice = ev.data.model_copy(update={"template": "notification_failed"})
    notice = ev.model_copy(update={"data": about_a_notice})
    [v] = decide(FULL, facts_of(notice))
    assert v.notification is None and v.reason == "a failure notice that failed is not announced"


def test_urgency_comes_from_the_rule_then_the_event_then_the_priority() -> None:
    facts = facts_of(event("case.sla_breached"))
    assert all(n.urgent for n in notifications_for(SHIPPED, facts))  # urgent_events
    p1 = sample_snapshot(priority=Priority.P1)
    facts = facts_of(event("case.status_changed", "resolved", case=p1))
    [n] = [n for n in notifications_for(SHIPPED, facts) if n.audience == "customer"]
    assert n.urgent  # urgent_priorities
    [ack] = notifications_for(SHIPPED, facts_of(event("case.opened")))
    assert ack.urgent  # the rule says so


def test_policy_file_problems_name_the_line_and_field() -> None:
    text = """\
rules:
  - name: a
    on: case.opened
    to: customer
    template: case_opened
  - name: b
    events: case.nope
    to: [boss]
    template: Bad-Name
    when: {priority: [P9]}
"""
    with pytest.raises(PolicyError) as err:
        parse_policy(text, source="n.yaml")
    lines = str(err.value).splitlines()
    boolean_key = "a key YAML reads as true, false or a number (on, off, yes, no): quote it"
    assert f"n.yaml:3: rules[0].on: {boolean_key}" in lines
    assert "n.yaml:2: rules[0].events: required field is missing" in lines
    unknown = "n.yaml:7: rules[1].events[0]: unknown event 'case.nope'"
    assert any(line.startswith(unknown) for line in lines)
    assert "n.yaml:8: rules[1].to[0]: not a known role" in lines
    assert any(line.startswith("n.yaml:9: rules[1].template:") for line in lines)
    assert any(line.startswith("n.yaml:10: rules[1].when.priority[0]:") for line in lines)


def test_duplicate_keys_and_rule_names_are_refused() -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(
            "rules:\n"
            "  - {name: a, events: case.opened, to: customer, template: x, template: y}\n"
            "  - {name: a, events: case.opened, to: customer, template: x}\n",
            source="n.yaml",
        )
    text = str(err.value)
    assert "n.yaml:2: rules[0].template: duplicate key, also at line 2" in text


def test_webhook_subscribers_hear_the_events_they_name_internal_ones_too() -> None:
    found = notifications_for(FULL, facts_of(event("case.note_added")))
    [hook] = [n for n in found if n.audience == "webhook"]
    assert hook.routes == (Route(Medium.WEBHOOK, "crm"),) and hook.urgent and not hook.digest
    assert hook.dedupe_key.endswith("/webhook/crm")


@pytest.mark.parametrize(
    ("opted_out", "bouncing", "passed_over", "why"),
    [
        ([], [], None, None),  # their first channel works: no fallback to report
        ([Channel.SMS], [], Channel.SMS, "opted out"),
        ([], ["+15550001111"], Channel.SMS, "address bounces"),
    ],
)
def test_a_customer_whose_first_channel_is_unusable_is_reported_as_a_fallback(
    opted_out: list[Channel], bouncing: list[str], passed_over: Channel | None, why: str | None
) -> None:
    from casegate_notifier.domain import audience
    from casegate_notifier.domain.facts import Facts
    from casegate_shared.events import Contact

    contact = Contact(customer_id=1, email="pat@example.com", phone="+15550001111",
                      preferred_channel=Channel.SMS, opted_out=opted_out, bouncing=bouncing)
    facts = Facts(event_id="e1", event_type="case.status_changed", ref="CS-222222",
                  occurred_at=datetime.now(UTC), customer=contact)
    who = audience.customer(facts, [Channel.EMAIL, Channel.SMS])
    assert not isinstance(who, str)
    assert (who.passed_over, who.passed_over_reason) == (passed_over, why)
    first = who.routes[0].medium
    assert first is (Medium.SMS if passed_over is None else Medium.EMAIL)


FRANK = AgentContact(user="frank", email="frank@corp.example", slack_user="U0FRANK")


def assigned_to(
    event_type: str, assignee: str | None, *, actor: str = "router",
    contact: AgentContact | None = None,
) -> Facts:
    """The sample case (owner bob, administrator carol, watcher dave), assigned to `assignee`;
    `contact` as the handler's lookup would add it."""
    ev = event(event_type, actor=actor, case=sample_snapshot(assignee=assignee))
    facts = facts_of(ev)
    return facts if contact is None else dataclasses.replace(facts, assignee_contact=contact)


@pytest.mark.parametrize(
    ("event_type", "assignee", "contact", "expected"),
    [
        # a new agent, not on the case otherwise: reached in Slack first, like every agent
        ("case.assigned", "frank", FRANK, {("assignee", "U0FRANK"), OWNER_SLACK, WATCHER}),
        ("case.sla_warning", "frank", FRANK, {("assignee", "U0FRANK"), OWNER_SLACK}),
        ("case.sla_breached", "frank", FRANK, {("assignee", "U0FRANK"), OWNER_SLACK, ADMIN}),
        ("case.escalated", "frank", FRANK,
         {("assignee", "U0FRANK"), OWNER_SLACK, ADMIN, WATCHER}),
        # the assignee is also the owner, or a watcher: one notification, not two
        ("case.escalated", "bob", None, {ASSIGNEE_BOB, ADMIN, WATCHER}),
        ("case.escalated", "dave", None, {("assignee", "dave@corp.example"), OWNER_SLACK, ADMIN}),
        ("case.assigned", "dave", None, {("assignee", "dave@corp.example"), OWNER_SLACK}),
        # nobody to find, or no addresses known: the others still hear it
        ("case.escalated", None, None, {OWNER_SLACK, ADMIN, WATCHER}),
        ("case.escalated", "frank", None, {OWNER_SLACK, ADMIN, WATCHER}),
        # only where a rule names the assignee
        ("case.status_changed", "frank", FRANK, {WATCHER}),
    ],
)
def test_the_assignee_hears_what_is_theirs_once(
    event_type: str, assignee: str | None, contact: AgentContact | None,
    expected: set[tuple[str, str]],
) -> None:
    facts = assigned_to(event_type, assignee, contact=contact)
    found = notifications_for(SHIPPED, facts)
    assert {(n.audience, n.recipient) for n in found} == expected
    people = [n.recipient for n in found]
    assert len(people) == len(set(people))  # one notification per person per event


def test_why_an_assignee_is_not_told() -> None:
    def reason(facts: Facts) -> str:
        [v] = [v for v in decide(SHIPPED, facts) if v.audience == "assignee"]
        assert v.notification is None
        return v.reason

    assert reason(assigned_to("case.escalated", None)) == "case has no assignee"
    assert reason(assigned_to("case.escalated", "frank")) == (
        "assignee frank has no known Slack user or email address"
    )
    assert reason(assigned_to("case.assigned", "frank", actor="frank", contact=FRANK)) == (
        "assignee frank made this change"  # they took it themselves
    )
    [owner] = [v for v in decide(SHIPPED, assigned_to("case.escalated", "bob"))
               if v.audience == "owner"]
    assert owner.notification is None and owner.reason == "bob already hears this from escalated"


def test_the_assignee_reached_by_email_when_they_have_no_slack_user() -> None:
    mail_only = AgentContact(user="frank", email="frank@corp.example")
    [n] = [n for n in notifications_for(SHIPPED, assigned_to("case.assigned", "frank",
                                                             contact=mail_only))
           if n.audience == "assignee"]
    assert n.routes == (Route(Medium.EMAIL, "frank@corp.example"),) and not n.digest


class Directory:
    def __init__(self, found: AgentContact | None = None, down: bool = False) -> None:
        self.found, self.down, self.asked = found, down, []

    async def agent(self, handle: str) -> AgentContact | None:
        self.asked.append(handle)
        if self.down:
            raise RecordUnavailable("users: ConnectionRefusedError")
        return self.found


async def test_the_handler_looks_the_assignee_up_only_when_a_rule_needs_them() -> None:
    directory = Directory(FRANK)
    facts = await with_assignee(SHIPPED, directory, assigned_to("case.escalated", "frank"))
    assert facts.assignee_contact == FRANK and directory.asked == ["frank"]
    for needless in (
        assigned_to("case.note_added", "frank"),  # no rule for notes names the assignee
        assigned_to("case.escalated", "bob"),  # a participant: the case carries his addresses
        assigned_to("case.assigned", "frank", actor="frank"),  # took it themselves
        assigned_to("case.escalated", None),
    ):
        assert await with_assignee(SHIPPED, directory, needless) is needless
    assert directory.asked == ["frank"]
    unknown = assigned_to("case.escalated", "frank")
    assert (await with_assignee(SHIPPED, Directory(None), unknown)).assignee_contact is None
    with pytest.raises(Defer):  # the database is away: wait, do not drop the assignee
        await with_assignee(SHIPPED, Directory(down=True), unknown)
