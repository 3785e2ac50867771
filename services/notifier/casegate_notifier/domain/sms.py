"""What an SMS adapter is given, and what a text costs: its encoding and segment count.

A text goes as GSM-7 when every character is in the GSM 03.38 alphabet (extension characters
such as € and [ take two septets), otherwise as UCS-2 (UTF-16: characters beyond the BMP,
such as most emoji, take two units). One segment holds 160 septets or 70 units; a longer text
is split into segments of 153 or 67 (the rest is the concatenation header), and a character
is never split across two segments. Carriers bill per segment, so the count is logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


class SmsEncoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True, slots=True)
class Segments:
    encoding: SmsEncoding
    count: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)


# (single-segment capacity, per-segment capacity when concatenated)
_CAPACITY = {SmsEncoding.GSM7: (160, 153), SmsEncoding.UCS2: (70, 67)}


def encoding_of(text: str) -> SmsEncoding:
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        return SmsEncoding.GSM7
    return SmsEncoding.UCS2


def _cost(char: str, encoding: SmsEncoding) -> int:
    if encoding is SmsEncoding.GSM7:
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def segments(text: str) -> Segments:
    """How `text` travels: its encoding, the number of segments, and its length in units."""
    encoding = encoding_of(text)
    costs = [_cost(c, encoding) for c in text]
    units = sum(costs)
    single, multi = _CAPACITY[encoding]
    if units <= single:
        return Segments(encoding, 1 if units else 0, units)
    count, used = 1, 0
    for cost in costs:
        if used + cost > multi:  # an escape pair or a surrogate pair stays whole
            count, used = count + 1, 0
        used += cost
    return Segments(encoding, count, units)


@dataclass(frozen=True, slots=True)
class OutboundSms:
    """One text to one customer; `dedupe_key` names the notification (and its status reports)."""

    to: str  # E.164
    body: str
    case_ref: str
    dedupe_key: str
