"""Rendering a notification for one medium with its Jinja2 templates, in the recipient's language
or the fallback language.

Files: `templates/<language>/<medium>/<name>.<part>.j2`. Email has a subject, a text and an
HTML part (without its own HTML part, the text is wrapped by `email/_layout.html.j2`); SMS a
short text; Slack a mrkdwn text (without one, the email text). The email subject names every
notification, so it is required for every template.

Values are customer text and are escaped for the medium they land in: HTML autoescape for the
HTML part, Slack's three mrkdwn characters (&, <, >) for Slack, nothing for plain text (where
escaping would garble it).

`tracking_url` is added here, not with the other values, because it needs the deployment's
public URL: the customer's tracking page with their token, only in notifications to the
customer (the page lets its holder change their preferences), and "" when there is no URL or no
token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from .audience import one_line
from .delivery import Medium
from .policy import Notification

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
SUBJECT_LIMIT = 250
SLACK_TEXT_LIMIT = 3000  # a section block's text
LAYOUT = "email/_layout.html.j2"


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str = ""
    blocks: list[dict[str, Any]] | None = None
    language: str = ""
    notes: list[str] = field(default_factory=list)


class TemplateProblem(Exception):
    """A template is missing or broken: a deployment bug, never the customer's fault."""


def slack_escape(value: object) -> str:
    """Slack's mrkdwn control characters; anything else in text is shown as typed."""
    text = "" if value is None else str(value)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def tracking_url(public_url: str | None, n: Notification) -> str:
    """`<public_url>/track/<ref>?token=<token>`, each part percent-encoded, or ""."""
    token = n.values.get("tracking_token", "")
    if not public_url or not token or not n.case_ref or n.audience != "customer":
        return ""
    ref = quote(n.case_ref, safe="")
    return f"{public_url.rstrip('/')}/track/{ref}?token={quote(token, safe='')}"


def _environment(root: Path, *, html: bool = False, slack: bool = False) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(root),
        autoescape=html,
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty string
        keep_trailing_newline=False,
        finalize=slack_escape if slack else None,
    )


class Renderer:
    def __init__(
        self, root: Path = TEMPLATES, default_language: str = "en", public_url: str | None = None
    ) -> None:
        self.root = root
        self.default_language = default_language
        self.public_url = public_url
        self._plain = _environment(root)
        self._html = _environment(root, html=True)
        self._slack = _environment(root, slack=True)
        # Templates are files shipped with the service: list them once, not per send.
        self._files = {p.relative_to(root).as_posix() for p in root.rglob("*.j2")}

    def languages(self, wanted: str) -> list[str]:
        """"pt-BR" -> ["pt-br", "pt", default]: the most specific that exists wins."""
        wanted = wanted.lower().replace("_", "-")
        found = [wanted, wanted.split("-", 1)[0], self.default_language]
        return list(dict.fromkeys(found))

    def exists(self, language: str, medium: Medium, name: str, part: str) -> bool:
        return f"{language}/{medium.value}/{name}.{part}.j2" in self._files

    def _find(self, langs: list[str], medium: Medium, name: str, part: str) -> str | None:
        for lang in langs:
            if self.exists(lang, medium, name, part):
                return lang
        return None

    def _load(self, env: jinja2.Environment, path: str) -> jinja2.Template:
        try:
            return env.get_template(path)
        except jinja2.TemplateError as exc:
            raise TemplateProblem(f"{path}: {exc}") from exc

    def _part(
        self, env: jinja2.Environment, langs: list[str], medium: Medium, name: str, part: str
    ) -> jinja2.Template | None:
        lang = self._find(langs, medium, name, part)
        return None if lang is None else self._load(env, f"{lang}/{medium.value}/{name}.{part}.j2")

    def check(self, names: dict[str, set[Medium]]) -> list[str]:
        """Compile every part each template needs, in the default language and every other
        language that has one; return one line per problem (empty: all good)."""
        problems: list[str] = []
        default = [self.default_language]
        for name, media in sorted(names.items()):
            needed = [(Medium.EMAIL, "subject"), (Medium.EMAIL, "txt")]
            if Medium.SMS in media:
                needed.append((Medium.SMS, "txt"))
            for medium, part in needed:
                if self._find(default, medium, name, part) is None:
                    where = f"{self.default_language}/{medium.value}/{name}.{part}.j2"
                    problems.append(f"{where}: missing")
        for rel in sorted(self._files):
            env = self._plain
            if rel.endswith(".html.j2"):
                env = self._html
            elif "/slack/" in rel:
                env = self._slack
            try:
                self._load(env, rel)
            except TemplateProblem as exc:
                problems.append(str(exc))
        return problems

    def render(
        self, n: Notification, medium: Medium, extra: dict[str, Any] | None = None
    ) -> Rendered:
        langs = self.languages(n.language)
        values: dict[str, Any] = {**n.values, "items": list(n.items), "count": str(len(n.items)),
                                  "tracking_url": tracking_url(self.public_url, n)}
        values.update(extra or {})
        name = n.template
        try:
            subject_t = self._part(self._plain, langs, Medium.EMAIL, name, "subject")
            if subject_t is None:
                raise TemplateProblem(f"{name}: no email subject in {', '.join(langs)}")
            subject = one_line(subject_t.render(values), SUBJECT_LIMIT)
            language = self._find(langs, Medium.EMAIL, name, "subject") or self.default_language
            if medium is Medium.SMS:
                t = self._part(self._plain, langs, Medium.SMS, name, "txt")
                if t is None:
                    raise TemplateProblem(f"{name}: no SMS text in {', '.join(langs)}")
                return Rendered(subject, t.render(values).strip(), language=language)
            if medium is Medium.SLACK:
                # The same file twice: escaped for the mrkdwn block, plain for the text
                # that goes with it (the Slack adapter escapes that one itself).
                own = self._find(langs, Medium.SLACK, name, "txt")
                source = Medium.SLACK if own else Medium.EMAIL
                marked = self._part(self._slack, langs, source, name, "txt")
                plain = self._part(self._plain, langs, source, name, "txt")
                if marked is None or plain is None:
                    raise TemplateProblem(f"{name}: no Slack or email text in {', '.join(langs)}")
                mrkdwn = marked.render(values).strip()[:SLACK_TEXT_LIMIT]
                blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}}]
                text = plain.render(values).strip()
                return Rendered(subject, text, blocks=blocks, language=language)
            text_t = self._part(self._plain, langs, Medium.EMAIL, name, "txt")
            if text_t is None:
                raise TemplateProblem(f"{name}: no email text in {', '.join(langs)}")
            text = text_t.render(values).rstrip() + "\n"
            # The HTML part in the text's language only: most mail clients show the HTML, so
            # a fallback language's HTML would hide the text in the customer's own.
            text_lang = self._find(langs, Medium.EMAIL, name, "txt") or language
            html_t = self._part(self._html, [text_lang], Medium.EMAIL, name, "html")
            if html_t is not None:
                html = html_t.render(values)
            else:
                lang = self._find(langs, Medium.EMAIL, "_layout", "html") or language
                layout = self._load(self._html, f"{lang}/{LAYOUT}")
                paragraphs = [p for p in text.split("\n\n") if p.strip()]
                html = layout.render(
                    {**values, "subject_line": subject, "paragraphs": paragraphs, "lang": language}
                )
            return Rendered(subject, text, html, language=language)
        except jinja2.TemplateError as exc:  # UndefinedError and friends, at render time
            raise TemplateProblem(f"{name}: {exc}") from exc
