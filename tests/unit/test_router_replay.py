"""Replay comparisons: stored cases decided again by a changed rules file, differences listed
and summed up; nothing here touches a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from casegate_router.domain import Message, RuleSet, parse_rules
from casegate_router.domain.replay import Routed, StoredCase, parse_since, replay, table
from casegate_shared.events import Channel, Priority

OLD = """
rules:
  - name: billing
    when: {keywords: [refund]}
    then: {team: billing, priority: P2}
default: {team: support, priority: P3, sla_policy: standard}
"""
NEW = """
rules:
  - name: refunds
    when: {keywords: [refund]}
    then: {team: refunds, priority: P2, sla_policy: premium}
  - name: sms
    when: {channel: [sms]}
    then: {team: support, priority: P2}
default: {team: support, priority: P3, sla_policy: standard}
"""
OPENED = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)


def rules(text: str) -> RuleSet:
    """As the CLI reads them: with the SLA file's default policy for rules that name none."""
    return parse_rules(text, context={"default_sla_policy": "standard"})


def stored(ref: str, channel: Channel, subject: str, routed: Routed) -> StoredCase:
    return StoredCase(ref, OPENED, Message(channel, subject, "", at=OPENED), routed)


CASES = [
    stored("CS-222222", Channel.EMAIL, "refund please", Routed("billing", Priority.P2, "standard", "billing")),
    stored("CS-333333", Channel.SMS, "hi", Routed("support", Priority.P3, None, "default")),
    stored("CS-444444", Channel.EMAIL, "hello", Routed("support", Priority.P3, "standard", "default")),
]


def test_replay_lists_each_changed_field_and_sums_them_up() -> None:
    changes, summary = replay(CASES, rules(NEW))
    assert [(c.ref, c.field, c.old, c.new, c.rule) for c in changes] == [
        ("CS-222222", "team", "billing", "refunds", "refunds"),
        ("CS-222222", "sla_policy", "standard", "premium", "refunds"),
        ("CS-333333", "priority", "P3", "P2", "sms"),
    ]
    assert summary.as_json() == {
        "rules_version": rules(NEW).version,
        "examined": 3,
        "changed_cases": 2,
        "changed": {"team": 1, "priority": 1, "sla_policy": 1},
        "moves": [
            {"field": "priority", "from": "P3", "to": "P2", "cases": 1},
            {"field": "sla_policy", "from": "standard", "to": "premium", "cases": 1},
            {"field": "team", "from": "billing", "to": "refunds", "cases": 1},
        ],
        "sla_policy_not_recorded": 1,
    }


def test_replay_against_a_baseline_file_ignores_the_record() -> None:
    changes, summary = replay(CASES, rules(NEW), baseline=rules(OLD))
    assert [(c.ref, c.field) for c in changes] == [
        ("CS-222222", "team"), ("CS-222222", "sla_policy"), ("CS-333333", "priority"),
    ]
    assert summary.unknown_sla_policy == 0


def test_the_same_rules_change_nothing() -> None:
    changes, summary = replay(CASES[:1], rules(OLD))
    assert (changes, summary.changed_cases) == ([], 0)


def test_table_lines_up() -> None:
    changes, _ = replay(CASES, rules(NEW))
    assert table(changes).splitlines() == [
        "case       opened            field       was       would be  by rule",
        "---------  ----------------  ----------  --------  --------  -------",
        "CS-222222  2025-01-06 12:00  team        billing   refunds   refunds",
        "CS-222222  2025-01-06 12:00  sla_policy  standard  premium   refunds",
        "CS-333333  2025-01-06 12:00  priority    P3        P2        sms",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("2w", timedelta(weeks=2)),
     (" 90m ", timedelta(minutes=90))],
)
def test_since(text: str, expected: timedelta) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["30", "d30", "1y", "-3d", ""])
def test_since_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="expected a period"):
        parse_since(text)
