"""The acknowledgement templates: the ref in the subject, customer text escaped in HTML only."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from casegate_notifier.domain.policy import TEMPLATES_IN_USE, Notification, notifications_for
from casegate_notifier.domain.render import Renderer, TemplateProblem
from casegate_shared.events import CaseCustomer, CaseOpened, Channel, Priority, envelope


def acknowledgement(subject: str, name: str | None = "Ann") -> Notification:
    event = envelope(
        CaseOpened(
            ref="CS-7K3M9Q",
            customer=CaseCustomer(id=1, name=name, email="ann@example.com"),
            channel=Channel.EMAIL,
            subject=subject,
            body="body",
            priority=Priority.P2,
            status="new",
            opened_at=datetime(2025, 1, 2, 3, 4, tzinfo=UTC),
        ),
        source="case-store",
    )
    [n] = notifications_for(event)
    return n


def test_subject_carries_the_ref_in_brackets() -> None:
    rendered = Renderer().render(acknowledgement("Printer on fire"))
    assert rendered.subject == "[CS-7K3M9Q] We received your request: Printer on fire"


def test_html_part_escapes_customer_text_and_text_part_keeps_it() -> None:
    nasty = "<script>alert('x')</script> & \"quotes\""
    rendered = Renderer().render(acknowledgement(nasty, name="<b>Ann</b>"))
    assert "<script>" not in rendered.html
    assert "<b>Ann</b>" not in rendered.html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;quotes&#34;" in rendered.html
    assert "&lt;b&gt;Ann&lt;/b&gt;" in rendered.html
    assert nasty in rendered.text  # plain text is not HTML: escaping it would garble it
    assert "Hello <b>Ann</b>," in rendered.text
    assert "CS-7K3M9Q" in rendered.text and "CS-7K3M9Q" in rendered.html


def test_greeting_without_a_name() -> None:
    rendered = Renderer().render(acknowledgement("Hi", name=None))
    assert rendered.text.startswith("Hello,\n")


def test_rendered_subject_is_one_line_even_if_a_template_breaks_lines(tmp_path: Path) -> None:
    folder = tmp_path / "email"
    folder.mkdir()
    (folder / "case_opened.subject.j2").write_text("[{{ ref }}]\r\nBcc: x@evil.test\n{{ subject }}")
    (folder / "case_opened.txt.j2").write_text("{{ ref }}")
    (folder / "case_opened.html.j2").write_text("{{ ref }}")
    rendered = Renderer(tmp_path).render(acknowledgement("Hi"))
    assert rendered.subject == "[CS-7K3M9Q] Bcc: x@evil.test Hi"


def test_templates_in_use_all_compile_and_a_missing_value_is_an_error(tmp_path: Path) -> None:
    renderer = Renderer()
    for channel, names in TEMPLATES_IN_USE.items():
        renderer.check(channel.value, list(names))
    with pytest.raises(TemplateProblem):
        renderer.check("email", ["no_such_template"])
    folder = tmp_path / "email"
    folder.mkdir()
    for part in ("subject", "txt", "html"):
        (folder / f"case_opened.{part}.j2").write_text("{{ not_a_value }}")
    with pytest.raises(TemplateProblem):
        Renderer(tmp_path).render(acknowledgement("Hi"))
