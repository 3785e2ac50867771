"""What a customer newly wrote in an email: the text with quoted history and signature cut off.

Mail clients mark the start of quoted history in a few well-known ways (Gmail and Apple Mail
"On … wrote:", Outlook's "-----Original Message-----" or a "From:/Sent:" header block, ">"
prefixed lines); a signature starts at the "-- " delimiter or a mobile client's "Sent from
my …" line. Forwarded messages are *not* history: a customer forwarding a mail to support
means its content, so "Forwarded message" markers are left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "On <date>, <name> wrote:" in the languages customers most often write in. A client may
# wrap it over up to three lines, so it is matched against a small joined window.
_ATTRIBUTION_START = re.compile(r"^(On|Le|Am|El|Op|Il|Em|Den|Dnia|W dniu)\s", re.I)
_ATTRIBUTION = re.compile(
    r"^(On|Le|Am|El|Op|Il|Em|Den|Dnia|W dniu)\s.{4,400}?"
    r"(wrote|a écrit|schrieb|escribió|schreef|ha scritto|escreveu|skrev|napisał)\s*:\s*$",
    re.I | re.S,
)
# Outlook and others: a separator line on its own.
_SEPARATOR = re.compile(
    r"^\s*(-{2,}\s*(Original Message|Ursprüngliche Nachricht|Message d'origine|"
    r"Mensaje original|Oorspronkelijk bericht|Messaggio originale)\s*-{2,}|_{10,})\s*$",
    re.I,
)
# Outlook's header block: "From: …" followed within a few lines by "Sent:"/"Date:".
_HEADER_FROM = re.compile(r"^\s*\**(From|Von|De|Van|Da)\s*:\**\s+\S", re.I)
_HEADER_SENT = re.compile(r"^\s*\**(Sent|Date|Gesendet|Datum|Envoyé|Enviado|Verzonden|Inviato)"
                          r"\s*:\**\s+\S", re.I)
# After a forward marker comes the forwarded mail, which the customer means us to read.
_FORWARD = re.compile(
    r"^\s*(Begin forwarded message:|-{2,}\s*Forwarded message\s*-{2,}|"
    r"-{2,}\s*(Weitergeleitete Nachricht|Message transféré|Mensaje reenviado)\s*-{2,})\s*$",
    re.I,
)
_SIGNATURE_DELIMITER = re.compile(r"^-- ?$")
_MOBILE_SIGNATURE = re.compile(
    r"^\s*(Sent from my \w[\w ]{0,40}|Sent from (Yahoo Mail|Mail|Outlook|Gmail)\b.{0,40}|"
    r"Get Outlook for (iOS|Android)|Sent with Proton ?Mail.{0,40}|Sent via .{1,40}|"
    r"Von meinem \w+ gesendet|Envoyé de mon \w+|Enviado desde mi \w+|Inviato da \w+.{0,20}|"
    r"Verzonden vanaf mijn \w+)\s*\.?\s*$",
    re.I,
)
_WINDOW = 3
_HEADER_BLOCK_LINES = 5


@dataclass(frozen=True, slots=True)
class Reply:
    """`text` is what the sender newly wrote; `trimmed` says whether anything was cut."""

    text: str
    trimmed: bool


def new_text(full: str) -> Reply:
    """Cut quoted history and the signature from a plain-text body.

    Falls back to the whole text when cutting would leave nothing (a bare forward or a
    message that is entirely quoted is better shown whole than empty).
    """
    lines = full.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept = lines[: _history_start(lines)]
    kept = [line for line in kept if not line.lstrip().startswith(">")]
    kept = kept[: _signature_start(kept)]
    text = _tidy(kept)
    whole = _tidy(lines)
    if not text:
        return Reply(whole, False)
    return Reply(text, text != whole)


def _history_start(lines: list[str]) -> int:
    """Index of the first line of quoted history, or len(lines) when there is none."""
    for i, line in enumerate(lines):
        if _FORWARD.match(line):
            return len(lines)
        if _SEPARATOR.match(line):
            return i
        if _ATTRIBUTION_START.match(line.strip()):
            for end in range(i + 1, min(i + _WINDOW, len(lines)) + 1):
                if _ATTRIBUTION.match(" ".join(part.strip() for part in lines[i:end])):
                    return i
        if _HEADER_FROM.match(line) and _sent_follows(lines, i):
            return i
    return len(lines)


def _sent_follows(lines: list[str], i: int) -> bool:
    return any(_HEADER_SENT.match(line) for line in lines[i + 1 : i + 1 + _HEADER_BLOCK_LINES])


def _signature_start(lines: list[str]) -> int:
    """Index of the signature's first line, or len(lines) when there is none."""
    for i, line in enumerate(lines):
        if i > 0 and _SIGNATURE_DELIMITER.match(line):
            return i
    # A mobile client's line counts only at the end: mid-text it is the customer's words.
    last = len(lines)
    while last > 0 and not lines[last - 1].strip():
        last -= 1
    if last > 1 and _MOBILE_SIGNATURE.match(lines[last - 1]):
        return last - 1
    return len(lines)


def _tidy(lines: list[str]) -> str:
    """Trailing spaces and runs of blank lines removed; no blank lines at either end."""
    out: list[str] = []
    for line in lines:
        line = line.rstrip()
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)
