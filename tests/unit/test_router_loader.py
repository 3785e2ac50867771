"""Reading rules files: a bad file is refused with the file, line and field named; the shipped
example loads; `casegate rules check` reports the same."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from casegate_router import cli
from casegate_router.domain import RulesError, load_rules, parse_rules
from tests.conftest import ROOT

GOOD = """\
rules:
  - name: billing
    when:
      keywords: [refund]
    then: {team: billing, priority: P2}
default: {team: support, priority: P3}
"""

BAD: list[tuple[str, str, list[str]]] = [
    # (case, file text, expected problems, each line a prefix; "F" stands for the file name)
    (
        "unknown field",
        """\
        rules:
          - name: a
            when:
              keywrds: [refund]
            then: {team: b, priority: P2}
        default: {team: s, priority: P3}
        """,
        ["F:4: rules[0].when.keywrds: unknown field"],
    ),
    (
        "wrong type",
        """\
        rules:
          - name: a
            when:
              channel: sms
            then: {team: b, priority: P2}
        default: {team: s, priority: P3}
        """,
        ["F:4: rules[0].when.channel: expected a list"],
    ),
    (
        "bad priority",
        """\
        rules: []
        default:
          team: s
          priority: P7
        """,
        ["F:4: default.priority: Input should be 'P1', 'P2', 'P3' or 'P4'"],
    ),
    (
        "bad regex, deep in a combinator",
        """\
        rules:
          - name: a
            when:
              any:
                - channel: [sms]
                - not:
                    subject_regex: '(unclosed'
            then: {team: b, priority: P2}
        default: {team: s, priority: P3}
        """,
        [
            "F:7: rules[0].when.any[1].not.subject_regex: not a valid regular expression: "
            "missing ), unterminated subpattern at position 0"
        ],
    ),
    (
        "missing field names the enclosing line",
        """\
        rules:
          - name: a
            when: {keywords: [x]}
          - name: b
            then: {team: b, priority: P2}
        default: {team: s, priority: P3}
        """,
        ["F:2: rules[0].then: required field is missing"],
    ),
    (
        "rule-level problem names the rule's line",
        """\
        rules:
          - name: a
            then: {team: b, priority: P2}
          - name: c
            then: {priority: P1}
        default: {team: s, priority: P3}
        """,
        ["F:4: rules[1]: a rule that stops must name a team and a priority (or set stop: false)"],
    ),
    (
        "several problems, in line order",
        """\
        rules:
          - name: a
            when: {colour: red}
            then: {team: b, priority: P9}
        defualt: {team: s, priority: P3}
        """,
        [
            "F:1: default: required field is missing",
            "F:3: rules[0].when.colour: unknown field",
            "F:4: rules[0].then.priority: Input should be 'P1', 'P2', 'P3' or 'P4'",
            "F:5: defualt: unknown field",
        ],
    ),
    (
        "duplicate rule name",
        """\
        rules:
          - name: a
            then: {team: b, priority: P2}

          - name: a
            then: {team: c, priority: P2}
        default: {team: s, priority: P3}
        """,
        ["F:5: rules[1].name: rule name 'a' is already used by rules[0]"],
    ),
    (
        "duplicate key",
        """\
        rules: []
        default:
          team: s
          priority: P3
          team: t
        """,
        ["F:5: default.team: duplicate key, also set at line 3"],
    ),
    (
        "YAML syntax",
        """\
        rules:
          - name: [a
          - b
        default: {}
        """,
        ["F:4: not valid YAML: "],
    ),
    ("empty file", "# nothing yet\n", ["F:1: the file is empty; it needs `rules:` and `default:`"]),
    ("not a mapping", "- a\n- b\n", ["F:1: expected fields"]),
    (
        "a word YAML reads as a boolean, where text belongs",
        """\
        rules: []
        default:
          team: no
          priority: P3
        """,
        ["F:3: default.team: expected text (YAML reads yes, no, on, off and numbers otherwise"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(t, e, id=c) for c, t, e in BAD])
def test_bad_file_names_file_line_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == len(expected), lines
    for line, want in zip(lines, expected, strict=True):
        assert line.startswith(want.replace("F", str(path), 1)), line


CROSS = """\
rules:
  - name: a
    when:
      region: [emea, mars]
    then: {team: b, priority: P2, sla_policy: gold}
  - name: c
    when: {sender_phone: ["030 1234567"], language: [xx], sender_domain: [localhost]}
    then: {team: b, priority: P2, assignment: random}
default: {team: s, priority: P3, sla_policy: standard}
"""


def test_names_from_the_sla_file_are_checked_with_lines() -> None:
    context = {"regions": {"emea", "apac"}, "sla_policies": {"standard", "premium"}}
    with pytest.raises(RulesError) as caught:
        parse_rules(CROSS, source="r.yaml", context=context)
    lines = str(caught.value).splitlines()
    assert lines[0] == "r.yaml:4: rules[0].when.region: unknown region mars (the SLA file has apac, emea)"
    assert lines[1] == (
        "r.yaml:5: rules[0].then.sla_policy: unknown SLA policy 'gold' (the SLA file has premium, standard)"
    )
    assert lines[2] == "r.yaml:7: rules[1].when.sender_domain[0]: expected a domain such as example.com"
    assert lines[3] == (
        "r.yaml:7: rules[1].when.sender_phone[0]: expected a number in international form, "
        "such as +49 30 1234567"
    )
    assert lines[4].startswith("r.yaml:7: rules[1].when.language[0]: unknown language 'xx' (known: af, ar")
    assert lines[5].startswith("r.yaml:8: rules[1].then.assignment: Input should be 'round_robin'")
    assert len(lines) == 6


def test_without_an_sla_file_names_are_not_checked() -> None:
    fixed = CROSS.replace('"030 1234567"', '"+49 30 1234567"').replace("[xx]", "[de]").replace(
        "localhost", "example.com").replace("random", "capacity")
    assert len(parse_rules(fixed).rules) == 2


def test_a_pattern_only_compiling_can_refuse_is_refused_with_its_line() -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules("rules:\n  - name: a\n    when: {subject_regex: '(?<=a+)b'}\n"
                    "    then: {team: b, priority: P2}\ndefault: {team: s, priority: P3}\n",
                    source="r.yaml")
    assert str(caught.value) == (
        "r.yaml:3: rules[0].when.subject_regex: not a valid regular expression: "
        "look-behind requires fixed-width pattern"
    )


def test_a_runaway_pattern_is_refused_with_its_line() -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules("rules:\n  - name: a\n    when: {body_regex: '(x+)+y'}\n"
                    "    then: {team: b, priority: P2}\ndefault: {team: s, priority: P3}\n",
                    source="r.yaml")
    assert str(caught.value).startswith(
        "r.yaml:3: rules[0].when.body_regex: refused regular expression: a repeat inside a repeat"
    )


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"missing\.yaml: cannot read the file: No such file"):
        load_rules(tmp_path / "missing.yaml")


def test_problems_are_structured() -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules("rules: []\ndefault: {team: s, priority: P0}\n", source="x.yaml")
    [problem] = caught.value.problems
    assert (problem.line, problem.field) == (2, "default.priority")
    assert caught.value.source == "x.yaml"


def test_shipped_example_loads_and_routes_as_its_comments_say() -> None:
    from casegate_router.domain import Message, decide
    from casegate_shared.events import Channel

    rules = load_rules(ROOT / "config/rules.yaml")

    def team(channel: str, subject: str, body: str = "") -> tuple[str, str]:
        d = decide(rules, Message(Channel(channel), subject, body))
        return d.team, d.priority.value

    assert team("email", "The site is down") == ("incident", "P1")
    assert team("webform", "Question", "Where is my refund?") == ("billing", "P2")
    assert team("email", "Re: Newsletter", "cancel the payment reminders") == ("support", "P3")
    assert team("sms", "", "hello, are you open today?") == ("mobile", "P3")
    assert team("chat", "Hi", "how do I change my address") == ("support", "P3")
    vip = decide(rules, Message(Channel.CHAT, "Hi", "", customer_tags=frozenset({"vip"})))
    assert (vip.team, vip.priority.value, vip.tags, vip.sla_policy) == (
        "support", "P2", ["vip"], "premium"
    )


def run_check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="casegate")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["rules", "check", str(path)])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    assert run_check(path, capsys) == (0, "ok: 1 rules\n", "")


def test_cli_check_error_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD.replace("keywords", "keyword"))
    code, out, err = run_check(path, capsys)
    assert (code, out) == (1, "")
    assert err == f"{path}:4: rules[0].when.keyword: unknown field\n"


def test_installed_command_checks_the_shipped_examples() -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "casegate"), "rules", "check", "config/rules.yaml",
            "--sla", "config/sla.yaml", "--teams", "config/teams.yaml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (
        0, "ok: 4 rules\nok: 2 SLA policies, 4 regions\nok: 4 teams\n"
    ), done.stderr
