"""SMS rules: the opt-out / opt-in / help keywords, and phone numbers in E.164.

The keyword lists are Twilio's defaults (Advanced Opt-Out): Twilio acts on them for its own
number, but STOP blocks only that one number, so casegate keeps its own suppression list and
case-store records the keyword on the sender's identity. A keyword counts only when it is the
whole message (case, surrounding space and trailing punctuation aside), as carriers treat it:
"please stop calling me" is a message, not an opt-out.
"""

from __future__ import annotations

import re
from enum import StrEnum

import phonenumbers


class SmsKeyword(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"


KEYWORDS: dict[str, SmsKeyword] = {
    **dict.fromkeys(
        ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"), SmsKeyword.OPT_OUT
    ),
    **dict.fromkeys(("START", "YES", "UNSTOP"), SmsKeyword.OPT_IN),
    **dict.fromkeys(("HELP", "INFO"), SmsKeyword.HELP),
}

# Trailing punctuation and quotes a phone keyboard adds ("Stop.", "STOP!").
_TRAILING = re.compile(r"[\s.!?,;:'\"’]+$")


def sms_keyword(body: str | None) -> SmsKeyword | None:
    """What an SMS body asks for when it is one of the keywords, or None for a message."""
    if not body:
        return None
    word = _TRAILING.sub("", body.strip()).upper()
    return KEYWORDS.get(word)


def e164(raw: str | None, default_region: str | None = None) -> str | None:
    """`raw` as an E.164 number (+14155550100), or None when it is not a possible phone number
    (short codes, alphanumeric sender ids). Numbers without + are read in `default_region`."""
    if not raw:
        return None
    try:
        number = phonenumbers.parse(raw.strip(), default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def readable(number: str) -> str:
    """An E.164 number as people write it (+44 7700 900123); anything else unchanged."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
