"""HTML from email: sanitized for display, and turned into plain text when it is all there is.

Sanitizing is nh3's (ammonia) allow-list: scripts, styles, event handlers and unknown URL
schemes go; `cid:` stays so inline images can later be shown from the blob store. The text
conversion keeps paragraphs and list items apart and renders blockquotes as "> " lines, so
the quote stripper treats quoted HTML history the same as quoted plain text.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import nh3

_URL_SCHEMES = nh3.ALLOWED_URL_SCHEMES | {"cid"}
_DROP_WITH_CONTENT = {"script", "style", "head", "title", "template", "noscript"}
_BLOCK = frozenset(
    "address article aside blockquote dd div dl dt fieldset figcaption figure footer form h1 h2 "
    "h3 h4 h5 h6 header hr li main nav ol p pre section table tr ul".split()
)
_SKIP = frozenset(_DROP_WITH_CONTENT)
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")


def sanitize(html: str) -> str:
    """HTML safe to render in the agent's view (nh3's allow-list, plus `cid:` images)."""
    return nh3.clean(html, url_schemes=_URL_SCHEMES, clean_content_tags=_DROP_WITH_CONTENT).strip()


def to_text(html: str) -> str:
    """Readable plain text of an HTML body; never raises on broken markup."""
    parser = _TextParser()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001 - html.parser is lenient; still, never stop intake
        pass
    return parser.text()


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._lines: list[str] = []
        self._current: list[str] = []
        self._skip = 0
        self._quote = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag == "br":
            self._break()
        elif tag in _BLOCK:
            self._break()
            if tag == "blockquote":
                self._quote += 1
            elif tag == "pre":
                self._pre += 1
            elif tag == "li":
                self._current.append("- ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "hr"):
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK:
            self._break()
            if tag == "blockquote":
                self._quote = max(0, self._quote - 1)
            elif tag == "pre":
                self._pre = max(0, self._pre - 1)
            if tag in ("p", "div", "table", "blockquote", "ul", "ol"):
                self._lines.append("> " * self._quote if self._quote else "")
        elif tag in ("td", "th"):
            self._current.append(" ")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._pre:
            for i, piece in enumerate(data.split("\n")):
                if i:
                    self._break()
                self._current.append(piece)
            return
        self._current.append(_SPACES.sub(" ", data.replace("\r", " ").replace("\n", " ")))

    def _break(self) -> None:
        line = "".join(self._current).strip()
        self._current = []
        if line:
            self._lines.append("> " * self._quote + line)

    def text(self) -> str:
        self._break()
        out: list[str] = []
        for line in self._lines:
            blank = not line.strip(" >")
            if blank and (not out or not out[-1].strip(" >")):
                continue
            out.append(line.rstrip())
        while out and not out[-1].strip(" >"):
            out.pop()
        return "\n".join(out)
