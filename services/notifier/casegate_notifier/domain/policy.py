"""Who hears what: the notification policy (an ordered table from the policy file) and the small
interpreter that runs it over one event, recording every hit and miss with its reason.

Two rows are not the file's to change. An agent's reply (`case.reply_added`) reaches the
customer whatever the file says; and nothing internal (a note, an assignment, an SLA clock,
an escalation) ever reaches a customer: the file is refused at load if it tries, and the
interpreter refuses again should a policy be built some other way.

Each notification carries its routes (first choice, then fallbacks) and the event id, from
which every route's delivery key (event, recipient, channel) follows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from casegate_shared.events import CaseSnapshot, Channel, Priority

from . import audience
from .audience import Recipient
from .delivery import Medium, Route, delivery_key
from .facts import CUSTOMER_VISIBLE, KNOWN_EVENTS, NOTIFICATION_FAILED, REPLY, ROUTED, Facts
from .quiet import QuietHours
from .values import template_values

Role = Literal[
    "customer", "owner", "administrator", "watchers", "assignee", "team_channel",
    "escalation_group",
]
ROLES: tuple[str, ...] = Role.__args__  # type: ignore[attr-defined]
REPLY_RULE = "reply_to_customer"
LOOP_RULE = "no_failure_loop"


def _listed(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _known_event(value: str) -> str:
    if value not in KNOWN_EVENTS:
        raise ValueError(f"unknown event {value!r}; known: {', '.join(KNOWN_EVENTS)}")
    return value


EventName = Annotated[str, BeforeValidator(lambda v: _known_event(str(v)))]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
TemplateName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
WebhookName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class When(_Strict):
    """Conditions of one rule: each one listed must hold (a value the event lacks does not)."""

    status: list[Text] | None = Field(None, min_length=1)
    priority: list[Priority] | None = Field(None, min_length=1)
    channel: list[Channel] | None = Field(None, min_length=1)
    reason_code: list[Text] | None = Field(None, min_length=1)
    tier: list[Text] | None = Field(None, min_length=1)
    team: list[Text] | None = Field(None, min_length=1)


class Rule(_Strict):
    name: Name
    events: Annotated[list[EventName], BeforeValidator(_listed), Field(min_length=1)]
    when: When = When()
    to: Annotated[list[Role], BeforeValidator(_listed), Field(min_length=1)]
    template: TemplateName
    urgent: bool | None = Field(None, description="Ignore quiet hours; default: urgent_events")
    digest: bool = Field(False, description="Batch with other updates to the same recipient")


class Destination(_Strict):
    """A team's channel or a fixed group: where internal news goes that no participant owns."""

    slack_channel: str | None = None
    email: Annotated[list[str], BeforeValidator(_listed)] = Field(default_factory=list)


class Webhook(_Strict):
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/?#]+([/?#]\S*)?$")]
    events: Annotated[list[EventName], BeforeValidator(_listed), Field(min_length=1)]


class Policy(_Strict):
    default_language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")] = "en"
    reply_template: TemplateName = "agent_reply"
    digest_template: TemplateName = "digest"
    urgent_events: list[EventName] = Field(default_factory=list)
    urgent_priorities: list[Priority] = Field(default_factory=list)
    digest_window_s: int = Field(300, ge=5, le=86_400)
    sms_max_segments: int = Field(3, ge=1, le=10)
    # Acknowledgements (case.opened) to one address per hour; more are not sent (mail loops,
    # floods). 0: no cap.
    ack_limit_per_hour: int = Field(5, ge=0, le=10_000)
    fallback_order: list[Channel] = Field(
        default_factory=lambda: [Channel.EMAIL, Channel.SMS, Channel.SLACK],
        description="A customer's order when they chose none",
    )
    teams: dict[str, Destination] = Field(default_factory=dict)
    escalation_group: Destination | None = None
    webhooks: dict[WebhookName, Webhook] = Field(default_factory=dict)
    rules: list[Rule]

    @model_validator(mode="after")
    def _sound(self) -> Policy:
        seen: set[str] = set()
        for index, rule in enumerate(self.rules):
            if rule.name in seen or rule.name == REPLY_RULE:
                raise ValueError(f"rules[{index}]: rule name {rule.name!r} is used twice")
            seen.add(rule.name)
            internal = [e for e in rule.events if e not in CUSTOMER_VISIBLE]
            if "customer" in rule.to and internal:
                raise ValueError(
                    f"rules[{index}] ({rule.name}): internal changes never reach a customer: "
                    + ", ".join(internal)
                )
        return self


class Notification(BaseModel):
    """One recipient's notification about one event, with every route to try, in order."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rule: str
    event_id: str
    event_type: str
    case_ref: str
    audience: str
    recipient_name: str | None
    routes: tuple[Route, ...] = Field(min_length=1)
    template: str
    language: str
    values: dict[str, str]
    urgent: bool = False
    digest: bool = False
    quiet: QuietHours | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    thread: str | None = None
    items: tuple[dict[str, str], ...] = ()  # a digest's updates, oldest first
    card: CaseSnapshot | None = None  # a new case for a team's Slack channel: posted as its card
    case_thread: str | None = None  # the case's Slack card (channel:ts), for outcome echoes
    passed_over: Channel | None = None  # their first channel, unusable (opted out, bouncing)
    passed_over_reason: str | None = None

    @property
    def channel(self) -> Medium:
        return self.routes[0].medium

    @property
    def recipient(self) -> str:
        return self.routes[0].address

    @property
    def dedupe_key(self) -> str:
        return delivery_key(self.event_id, self.routes[0])


@dataclass(frozen=True, slots=True)
class Verdict:
    rule: str
    matched: bool
    reason: str
    audience: str | None = None
    notification: Notification | None = None


Check = Callable[[Facts], tuple[bool, str]]


def _condition(label: str, read: Callable[[Facts], str | None], allowed: list[str]) -> Check:
    def check(facts: Facts) -> tuple[bool, str]:
        value = read(facts)
        if value is None:
            return False, f"{label} unknown, needs one of {', '.join(allowed)}"
        if value in allowed:
            return True, f"{label} {value}"
        return False, f"{label} {value} not in {', '.join(allowed)}"

    return check


def conditions(when: When) -> list[Check]:
    found: list[Check] = []
    for label, read, allowed in (
        ("status", lambda f: f.status, when.status),
        ("priority", lambda f: f.priority.value if f.priority else None, when.priority),
        ("channel", lambda f: f.channel, when.channel),
        ("reason code", lambda f: f.reason_code, when.reason_code),
        ("tier", lambda f: f.tier, when.tier),
        ("team", lambda f: f.team, when.team),
    ):
        if allowed is not None:
            found.append(_condition(label, read, [str(a) for a in allowed]))
    return found


def urgent(policy: Policy, rule: Rule | None, facts: Facts) -> bool:
    if rule is not None and rule.urgent is not None:
        return rule.urgent
    return facts.event_type in policy.urgent_events or (
        facts.priority is not None and facts.priority in policy.urgent_priorities
    )


def recipients(policy: Policy, role: str, facts: Facts) -> list[Recipient | str]:
    if role == "customer":
        return [audience.customer(facts, policy.fallback_order)]
    if role in ("owner", "administrator", "watchers"):
        return audience.participants(facts, role)
    if role == "assignee":
        return [audience.assignee(facts)]
    if role == "team_channel":
        team = policy.teams.get(facts.team or "")
        if team is None:
            return [f"team {facts.team or '(none)'} has no channel in the policy"]
        return audience.fixed(role, f"team {facts.team}", team.slack_channel, team.email)
    group = policy.escalation_group
    if group is None:
        return ["the policy names no escalation group"]
    return audience.fixed(role, "escalation group", group.slack_channel, group.email)


def _notification(
    policy: Policy,
    facts: Facts,
    rule_name: str,
    template: str,
    who: Recipient,
    *,
    is_urgent: bool,
    digest: bool,
) -> Notification:
    case = facts.case
    return Notification(
        rule=rule_name,
        event_id=facts.event_id,
        event_type=facts.event_type,
        case_ref=facts.ref,
        audience=who.audience,
        recipient_name=who.name,
        routes=who.routes,
        template=template,
        language=(who.language or policy.default_language).lower(),
        values=template_values(facts, who.name),
        urgent=is_urgent,
        digest=digest,
        quiet=who.quiet,
        in_reply_to=case.last_customer_message_id if case and who.audience == "customer" else None,
        references=tuple(case.references) if case and who.audience == "customer" else (),
        thread=case.slack_thread if case and who.audience != "customer" else None,
        card=case if who.audience == "team_channel" and facts.event_type == ROUTED else None,
        case_thread=case.slack_thread if case else None,
        passed_over=who.passed_over,
        passed_over_reason=who.passed_over_reason,
    )


def decide(policy: Policy, facts: Facts) -> list[Verdict]:
    """Every row for this event, in order, each with its verdict and reason."""
    verdicts: list[Verdict] = []
    taken: dict[Route, str] = {}  # first route -> rule: one notification per person per event

    def give(rule_name: str, role: str, template: str, is_urgent: bool, digest: bool) -> None:
        if role == "customer" and not facts.customer_visible:
            reason = "internal change: never told to the customer"
            verdicts.append(Verdict(rule_name, False, reason, role))
            return
        for found in recipients(policy, role, facts):
            if isinstance(found, str):
                verdicts.append(Verdict(rule_name, False, found, role))
                continue
            if (earlier := taken.get(found.routes[0])) is not None:
                reason = f"{found.name or role} already hears this from {earlier}"
                verdicts.append(Verdict(rule_name, False, reason, role))
                continue
            taken[found.routes[0]] = rule_name
            n = _notification(
                policy, facts, rule_name, template, found, is_urgent=is_urgent, digest=digest
            )
            reason = f"{role} by {found.routes[0].medium.value}"
            reason += f" ({found.note})" if found.note else ""
            verdicts.append(Verdict(rule_name, True, reason, role, n))

    if facts.failed is not None:
        notices = {r.template for r in policy.rules if NOTIFICATION_FAILED in r.events}
        if facts.failed.template in notices:  # a failed notice about a failure: no loop
            return [Verdict(LOOP_RULE, False, "a failure notice that failed is not announced")]
    if facts.event_type == REPLY:
        give(REPLY_RULE, "customer", policy.reply_template, urgent(policy, None, facts), False)
    for rule in policy.rules:
        if facts.event_type not in rule.events:
            continue
        results = [check(facts) for check in conditions(rule.when)]
        failed = [reason for ok, reason in results if not ok]
        if failed:
            verdicts.append(Verdict(rule.name, False, "; ".join(failed)))
            continue
        for role in rule.to:
            give(rule.name, role, rule.template, urgent(policy, rule, facts), rule.digest)
    for name, hook in policy.webhooks.items():
        if facts.event_type in hook.events:
            # Our own integrations: they hear internal changes too, at once, never batched.
            who = Recipient("webhook", name, (Route(Medium.WEBHOOK, name),))
            n = _notification(
                policy, facts, f"webhook:{name}", "webhook", who, is_urgent=True, digest=False
            )
            verdicts.append(Verdict(n.rule, True, f"subscriber {name}", "webhook", n))
    return verdicts


def names_role(policy: Policy, event_type: str, role: str) -> bool:
    """Whether any rule for this event may notify `role` (so its addresses are worth finding)."""
    return any(event_type in r.events and role in r.to for r in policy.rules)


def notifications_for(policy: Policy, facts: Facts) -> list[Notification]:
    return [v.notification for v in decide(policy, facts) if v.notification is not None]


def templates_in_use(policy: Policy) -> dict[str, set[Medium]]:
    """Every template a notification may use, with the media it may go out on."""
    media_of = {
        "customer": {Medium.EMAIL, Medium.SMS, Medium.SLACK},
        "team_channel": {Medium.EMAIL, Medium.SLACK},
        "escalation_group": {Medium.EMAIL, Medium.SLACK},
    }
    internal = {Medium.EMAIL, Medium.SLACK}
    used: dict[str, set[Medium]] = {
        policy.reply_template: set(media_of["customer"]),
        policy.digest_template: {Medium.EMAIL},
    }
    for rule in policy.rules:
        for role in rule.to:
            media = media_of.get(role, internal)
            used.setdefault(rule.template, set()).update(media)
            if rule.digest:
                used[policy.digest_template].update(media)
    return used
