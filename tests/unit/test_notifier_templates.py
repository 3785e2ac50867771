"""Templates per event, channel and language: the ref in the subject, customer text escaped for
each channel (HTML autoescape, Slack's &<>), the fallback language, the SMS length check and
the `casegate notify check / preview` commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from casegate_notifier.cli import check_policy, register
from casegate_notifier.domain.delivery import Medium
from casegate_notifier.domain.facts import facts_of
from casegate_notifier.domain.policy import Notification, notifications_for, templates_in_use
from casegate_notifier.domain.policy_file import load_policy, parse_policy
from casegate_notifier.domain.render import (
    TEMPLATES,
    Renderer,
    TemplateProblem,
    slack_escape,
    tracking_url,
)
from casegate_notifier.domain.samples import sample_contact, sample_event, sample_snapshot
from casegate_notifier.domain.sms import segments

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy(ROOT / "config/notify.yaml")


def customer_notification(
    event_type: str = "case.opened", language: str = "en", **snapshot: Any
) -> Notification:
    ev = sample_event(event_type, language, status="resolved")
    if snapshot:
        case = sample_snapshot(language, **{"status": ev.data.case.status, **snapshot})
        ev = ev.model_copy(update={"data": ev.data.model_copy(update={"case": case})})
    [n] = [n for n in notifications_for(POLICY, facts_of(ev)) if n.audience == "customer"]
    return n


def with_values(n: Notification, **values: str) -> Notification:
    return n.model_copy(update={"values": {**n.values, **values}})


def test_subject_carries_the_ref_in_brackets() -> None:
    n = with_values(customer_notification(), subject="Printer on fire")
    rendered = Renderer().render(n, Medium.EMAIL)
    assert rendered.subject == "[CS-7K3M9Q] We received your request: Printer on fire"


def test_html_part_escapes_customer_text_and_text_part_keeps_it() -> None:
    nasty = "<script>alert('x')</script> & \"quotes\""
    n = with_values(customer_notification(), subject=nasty, customer_name="<b>Ann</b>")
    rendered = Renderer().render(n, Medium.EMAIL)
    assert "<script>" not in rendered.html and "<b>Ann</b>" not in rendered.html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;quotes&#34;" in rendered.html
    assert "&lt;b&gt;Ann&lt;/b&gt;" in rendered.html
    assert nasty in rendered.text  # plain text is not HTML: escaping it would garble it
    assert "Hello <b>Ann</b>," in rendered.text


def test_a_template_without_its_own_html_is_wrapped_escaped() -> None:
    nasty = "<img src=x onerror=alert(1)>"
    n = with_values(customer_notification("case.status_changed"), subject=nasty)
    rendered = Renderer().render(n, Medium.EMAIL)
    assert rendered.subject.startswith("[CS-7K3M9Q] Resolved: ")
    assert "<img" not in rendered.html and "&lt;img src=x onerror=alert(1)&gt;" in rendered.html
    assert rendered.html.startswith("<!DOCTYPE html>") and '<html lang="en">' in rendered.html


def test_slack_text_escapes_mrkdwn_control_characters_in_values_only() -> None:
    escaped = slack_escape("<!channel> & <https://evil|click>")
    assert escaped == "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
    ev = sample_event("case.note_added")
    ev = ev.model_copy(update={"data": ev.data.model_copy(update={"body": "<!here> ping & <@U1>"})})
    [n] = [n for n in notifications_for(POLICY, facts_of(ev)) if n.audience == "watchers"]
    rendered = Renderer().render(n, Medium.SLACK)
    assert rendered.blocks is not None
    [block] = rendered.blocks
    mrkdwn = block["text"]["text"]
    assert block["type"] == "section" and block["text"]["type"] == "mrkdwn"
    assert "&lt;!here&gt; ping &amp; &lt;@U1&gt;" in mrkdwn and "<!here>" not in mrkdwn
    assert mrkdwn.startswith(":memo:")  # the template's own text is not escaped
    # The text beside the blocks stays plain: the Slack adapter escapes it when it sends.
    assert "<!here> ping & <@U1>" in rendered.text


def test_language_with_fallback_to_the_default() -> None:
    german = Renderer().render(customer_notification("case.status_changed", "de"), Medium.EMAIL)
    assert german.subject.startswith("[CS-7K3M9Q] Erledigt: ") and german.language == "de"
    regional = customer_notification("case.status_changed", "de")
    regional = regional.model_copy(update={"language": "de-at"})
    assert Renderer().render(regional, Medium.SMS).text.startswith("CS-7K3M9Q ist erledigt.")
    french = Renderer().render(customer_notification("case.status_changed", "fr"), Medium.EMAIL)
    assert french.subject.startswith("[CS-7K3M9Q] Resolved: ") and french.language == "en"
    ack = customer_notification().model_copy(update={"language": "de"})
    subject = Renderer().render(ack, Medium.EMAIL).subject
    assert subject.startswith("[CS-7K3M9Q] Wir haben Ihre Anfrage")
    # A template only partly translated: German where it exists, the default elsewhere.
    reopened = customer_notification("case.reopened", language="de")
    assert Renderer().render(reopened, Medium.EMAIL).language == "en"


def test_sms_text_is_short_and_names_the_ref() -> None:
    rendered = Renderer().render(customer_notification(), Medium.SMS)
    assert "CS-7K3M9Q" in rendered.text and len(rendered.text) <= 160 and "\n" not in rendered.text


def test_greeting_without_a_name() -> None:
    n = with_values(customer_notification(), customer_name="")
    assert Renderer().render(n, Medium.EMAIL).text.startswith("Hello,\n")


def test_rendered_subject_is_one_line_even_if_a_template_breaks_lines(tmp_path: Path) -> None:
    folder = tmp_path / "en" / "email"
    folder.mkdir(parents=True)
    (folder / "case_opened.subject.j2").write_text("[{{ ref }}]\r\nBcc: x@evil.test\n{{ subject }}")
    (folder / "case_opened.txt.j2").write_text("{{ ref }}")
    (folder / "case_opened.html.j2").write_text("{{ ref }}")
    n = with_values(customer_notification(), subject="Hi")
    rendered = Renderer(tmp_path).render(n, Medium.EMAIL)
    assert rendered.subject == "[CS-7K3M9Q] Bcc: x@evil.test Hi"


def test_the_shipped_policy_and_templates_check_clean() -> None:
    assert check_policy(POLICY, Renderer()) == []


def test_check_finds_missing_broken_and_too_long_templates(tmp_path: Path) -> None:
    policy = parse_policy(
        """
sms_max_segments: 1
rules:
  - {name: a, events: case.opened, to: customer, template: case_opened}
  - {name: b, events: case.sla_warning, to: owner, template: sla_warning}
"""
    )
    (tmp_path / "en" / "email").mkdir(parents=True)
    (tmp_path / "en" / "sms").mkdir(parents=True)
    for name in ("case_opened", "agent_reply", "digest"):
        (tmp_path / "en" / "email" / f"{name}.subject.j2").write_text("[{{ ref }}]")
        (tmp_path / "en" / "email" / f"{name}.txt.j2").write_text("{{ ref }}")
    layout = "{% for p in paragraphs %}{{ p }}{% endfor %}"
    (tmp_path / "en" / "email" / "_layout.html.j2").write_text(layout)
    (tmp_path / "en" / "sms" / "case_opened.txt.j2").write_text("{{ ref }} " + "é" * 200)  # 2 parts
    (tmp_path / "en" / "sms" / "agent_reply.txt.j2").write_text("{{ ref }}: {{ body }")  # broken
    problems = check_policy(policy, Renderer(tmp_path))
    assert "en/email/sla_warning.subject.j2: missing" in problems
    assert "en/email/sla_warning.txt.j2: missing" in problems
    assert any(p.startswith("en/sms/agent_reply.txt.j2:") for p in problems)
    assert any(p.startswith("en/sms/case_opened.txt.j2: 2 segments (GSM-7") for p in problems)
    assert len(problems) == 4, problems


def test_templates_in_use_cover_every_rule_reply_and_digest() -> None:
    used = templates_in_use(POLICY)
    assert {r.template for r in POLICY.rules} | {"agent_reply", "digest"} == set(used)
    assert Medium.SMS in used["case_opened"] and Medium.SMS not in used["sla_warning"]
    with pytest.raises(TemplateProblem):
        missing = customer_notification().model_copy(update={"template": "no_such"})
        Renderer().render(missing, Medium.EMAIL)


def test_a_missing_value_is_an_error_not_an_empty_string(tmp_path: Path) -> None:
    folder = tmp_path / "en" / "email"
    folder.mkdir(parents=True)
    for part in ("subject", "txt", "html"):
        (folder / f"case_opened.{part}.j2").write_text("{{ not_a_value }}")
    with pytest.raises(TemplateProblem):
        Renderer(tmp_path).render(customer_notification(), Medium.EMAIL)


def test_every_shipped_template_renders_with_sample_data_on_its_channels() -> None:
    renderer = Renderer()
    for template, media in templates_in_use(POLICY).items():
        n = customer_notification().model_copy(update={"template": template, "items": (
            {"ref": "CS-7K3M92", "summary": "s", "occurred_at": "t"},)})
        for medium in media:
            r = renderer.render(n, medium)
            assert r.subject and r.text, (template, medium)
    assert (TEMPLATES / "en" / "email" / "_layout.html.j2").is_file()


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="casegate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_cli_check_and_preview(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert cli("notify", "check", "config/notify.yaml") == 0
    assert capsys.readouterr().out.startswith("ok: 15 rules")
    assert cli("notify", "preview", "case.opened", "--channel", "sms", "--lang", "de") == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert shown["language"] == "de" and shown["sms"]["segments"] == 1  # with the tracking link
    assert "CS-7K3M9Q" in shown["text"] and "/track/CS-7K3M9Q?token=" in shown["text"]
    assert cli("notify", "preview", "case.status_changed", "--status", "pending_customer") == 0
    shown = json.loads(capsys.readouterr().out)
    assert [s["rule"] for s in shown] == ["customer_pending", "watchers_status"]
    assert "html" in shown[0] and shown[1]["template"] == "digest"
    bad = tmp_path / "bad.yaml"
    rule = "{name: a, events: case.note_added, to: customer, template: note_added}"
    bad.write_text(f"rules:\n  - {rule}\n")
    assert cli("notify", "check", str(bad)) == 1
    assert "internal changes never reach a customer" in capsys.readouterr().err


def test_contact_language_reaches_the_notification() -> None:
    n = customer_notification("case.status_changed", customer=sample_contact(language="DE"))
    assert n.language == "de"


PUBLIC = "https://support.example.com/"


def opened_without_token() -> Notification:
    ev = sample_event("case.opened")
    ev = ev.model_copy(update={"data": ev.data.model_copy(update={"case": None})})
    [n] = [n for n in notifications_for(POLICY, facts_of(ev)) if n.audience == "customer"]
    return n


@pytest.mark.parametrize(("language", "medium"), [
    ("en", Medium.EMAIL), ("en", Medium.SMS), ("de", Medium.EMAIL), ("de", Medium.SMS),
])
def test_the_acknowledgement_carries_the_tracking_link_only_with_a_token(
    language: str, medium: Medium
) -> None:
    renderer = Renderer(public_url=PUBLIC)
    link = "https://support.example.com/track/CS-7K3M9Q?token=q7Kx2-fT9_bLm4ZpW8rYc3Nd"
    with_token = customer_notification().model_copy(update={"language": language})
    shown = renderer.render(with_token, medium)
    assert link in shown.text
    if medium is Medium.EMAIL:
        assert link in shown.html
    else:
        assert segments(shown.text).count == 1  # the sample link still fits one SMS
    without = opened_without_token().model_copy(update={"language": language})
    bare = renderer.render(without, medium)
    assert "/track/" not in bare.text and "/track/" not in bare.html
    assert "CS-7K3M9Q" in bare.text
    no_url = Renderer().render(with_token, medium)  # no public URL configured: no link either
    assert "/track/" not in no_url.text and "/track/" not in no_url.html


def test_the_tracking_link_encodes_the_token_and_is_escaped_per_channel() -> None:
    n = with_values(customer_notification(), tracking_token='a+b/c=d&e "f"<g>')
    r = Renderer(public_url=PUBLIC).render(n, Medium.EMAIL)
    url = "https://support.example.com/track/CS-7K3M9Q?token=a%2Bb%2Fc%3Dd%26e%20%22f%22%3Cg%3E"
    assert url in r.text
    assert f'<a href="{url}">' in r.html  # nothing left for HTML to escape, no quote to break out
    assert "&e" not in r.text and '"f"' not in r.html


def test_only_the_customer_gets_a_tracking_link() -> None:
    agent = with_values(customer_notification(), tracking_token="tok").model_copy(
        update={"audience": "owner"}
    )
    assert tracking_url(PUBLIC, agent) == ""
    assert tracking_url(PUBLIC, agent.model_copy(update={"audience": "customer"})) == (
        "https://support.example.com/track/CS-7K3M9Q?token=tok"
    )


def test_a_translated_text_never_goes_with_another_languages_html() -> None:
    german = customer_notification().model_copy(update={"language": "de"})
    r = Renderer().render(german, Medium.EMAIL)
    assert r.text.startswith("Guten Tag") and '<html lang="de">' in r.html
    assert "Guten Tag" in r.html and "Thank you" not in r.html
