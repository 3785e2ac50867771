"""Which language a text is written in, decided the same way every time.

langdetect samples at random; its factory is seeded here, so one text always gets one answer
(a replay must decide as the router did). Short texts are not judged at all: below
`MIN_LETTERS` letters, langdetect guesses more than it detects. The language profiles take a
moment and some memory to load, so they are loaded once, on first use.
"""

from __future__ import annotations

import os
import threading
from functools import cache

from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

MIN_LETTERS = 25
EXAMINED = 2000  # characters; enough to judge, and the cost stays flat for long mails
SEED = 0

_factory: DetectorFactory | None = None
_lock = threading.Lock()


def _loaded() -> DetectorFactory:
    global _factory
    with _lock:
        if _factory is None:
            factory = DetectorFactory()
            factory.load_profile(PROFILES_DIRECTORY)
            factory.seed = SEED
            _factory = factory
    return _factory


def prepare() -> None:
    """Load the profiles now (when rules using languages are loaded, not on a message)."""
    _loaded()


def letters(text: str) -> int:
    return sum(1 for c in text[:EXAMINED] if c.isalpha())


def detect(text: str) -> str | None:
    """An ISO 639-1 code ('de', 'fr', 'zh-cn'), or None when the text is too short to judge."""
    sample = text[:EXAMINED]
    if letters(sample) < MIN_LETTERS:
        return None
    detector = _loaded().create()
    detector.append(sample)
    try:
        return str(detector.detect())
    except LangDetectException:
        return None


@cache
def known_codes() -> frozenset[str]:
    """The languages the profiles can tell apart (what a rule may name)."""
    return frozenset(os.listdir(PROFILES_DIRECTORY))
