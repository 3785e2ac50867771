"""Rendering a notification with its Jinja2 templates: subject, plain text and HTML.

Templates are files (`templates/<channel>/<name>.{subject,txt,html}.j2`), compiled once and
checked at start. Autoescape is on for the HTML part only; every value is customer text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from .policy import Notification, one_line

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
PARTS = ("subject", "txt", "html")
SUBJECT_LIMIT = 250


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


class TemplateProblem(Exception):
    """A template is missing or broken: a deployment bug, never the customer's fault."""


class Renderer:
    def __init__(self, root: Path = TEMPLATES) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(root),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty string
            keep_trailing_newline=False,
        )

    def check(self, channel: str, names: list[str]) -> None:
        """Compile every part of every named template now, so a bad one fails the start."""
        for name in names:
            for part in PARTS:
                self._template(channel, name, part)

    def render(self, notification: Notification) -> Rendered:
        channel, name = notification.channel.value, notification.template
        values = notification.values
        try:
            subject = self._template(channel, name, "subject").render(values)
            text = self._template(channel, name, "txt").render(values)
            html = self._template(channel, name, "html").render(values)
        except jinja2.UndefinedError as exc:
            raise TemplateProblem(f"{channel}/{name}: {exc}") from exc
        # The subject becomes a header: whatever a template does, it stays one line.
        return Rendered(one_line(subject, SUBJECT_LIMIT), text.rstrip() + "\n", html)

    def _template(self, channel: str, name: str, part: str) -> jinja2.Template:
        try:
            return self._env.get_template(f"{channel}/{name}.{part}.j2")
        except jinja2.TemplateError as exc:
            raise TemplateProblem(f"{channel}/{name}.{part}.j2: {exc}") from exc
