"""Refusing, when a rules file is loaded, the regular expressions that can take forever.

Python's `re` backtracks, holds the GIL while matching and cannot be interrupted, so a timeout
cannot stop a runaway match (a thread would keep running and still block the event loop; a
process per match costs more than the match). The defence is two-fold instead:

1. Shapes that make backtracking exponential or of high polynomial degree are refused here:
   - a repeat inside a repeat, `(a+)+`, `(\\w*\\s?)*`;
   - alternatives under a repeat that can start with the same character, `(a|ab)*`;
   - two repeats in a row that can match the same character, `.*.*`, `\\d+\\d*`;
   - backreferences, `(a+)\\1`.
   An atomic group `(?>...)` or a possessive quantifier `*+` (both Python 3.11) never
   backtracks into what it matched, so a repeat inside one is allowed.
2. What remains is at worst quadratic in the text, and the text a regex sees is capped
   (`REGEX_SUBJECT_LIMIT`, `REGEX_BODY_LIMIT` in conditions), so one match is bounded.

The character-set overlap test is an approximation over a sample of characters; it errs
towards refusing, with a message that names the construct and the way out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

try:  # the parser `re` itself uses; public as sre_parse before 3.11
    from re import _constants as C  # type: ignore[attr-defined]
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_constants as C  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

# Characters the overlap test tries: ASCII, Latin-1, some Latin Extended, Greek, Cyrillic,
# CJK, and the white space and digits of other scripts.
_SAMPLE = (
    [chr(c) for c in range(0, 0x250)]
    + [chr(c) for c in range(0x370, 0x400, 3)]
    + [chr(c) for c in range(0x400, 0x460, 3)]
    + ["\u3000", "\u4e00", "\u65e5", "\u0660", "\u0966", "\u2003", "\u2019", "\u00a0"]
)
_ALL = frozenset(_SAMPLE)

_REPEATS = (C.MAX_REPEAT, C.MIN_REPEAT)
_CATEGORIES: dict[Any, Callable[[str], bool]] = {
    C.CATEGORY_DIGIT: lambda c: c.isdecimal(),
    C.CATEGORY_NOT_DIGIT: lambda c: not c.isdecimal(),
    C.CATEGORY_SPACE: lambda c: c.isspace(),
    C.CATEGORY_NOT_SPACE: lambda c: not c.isspace(),
    C.CATEGORY_WORD: lambda c: c.isalnum() or c == "_",
    C.CATEGORY_NOT_WORD: lambda c: not (c.isalnum() or c == "_"),
}


class UnsafePattern(ValueError):
    """A pattern whose matching time could grow without bound."""


def check_pattern(pattern: str) -> None:
    """Raise UnsafePattern (or re.error) when `pattern` is invalid or could run away."""
    parsed = sre_parse.parse(pattern)
    ignore_case = bool(parsed.state.flags & re.IGNORECASE) or "(?i" in pattern
    _Walker(ignore_case).sequence(parsed.data, in_repeat=False)


class _Walker:
    def __init__(self, ignore_case: bool) -> None:
        self.ignore_case = ignore_case

    def sequence(self, items: Iterable[tuple[Any, Any]], in_repeat: bool) -> None:
        # The last repeat seen in this sequence, and whether only optional things came since.
        previous: frozenset[str] | None = None
        for op, av in items:
            if op in _REPEATS:
                low, high, item = av
                if high > 1 and in_repeat:
                    raise UnsafePattern(
                        "a repeat inside a repeat, such as (a+)+, can take exponential time; "
                        "rewrite it, or make the inner part atomic (?>...) or possessive (a++)"
                    )
                chars = self.first_chars(item) if high > 1 else None
                if chars is not None and previous is not None and previous & chars:
                    raise UnsafePattern(
                        "two repeats in a row that can match the same characters, such as "
                        ".*.* or \\d+\\d*, make matching slow; merge them into one"
                    )
                if high > 1:
                    self.branches_disjoint(item)
                self.sequence(item, in_repeat=in_repeat or high > 1)
                if high > 1 and high == C.MAXREPEAT:
                    previous = chars
                elif low > 0:
                    previous = None
                continue
            if op in (C.POSSESSIVE_REPEAT, C.ATOMIC_GROUP):
                previous = None
                continue  # never backtracked into: whatever is inside is fine
            if op in (C.GROUPREF, C.GROUPREF_EXISTS):
                raise UnsafePattern("backreferences (\\1, (?P=name)) are not supported in rules")
            if op is C.SUBPATTERN:
                self.sequence(av[3], in_repeat)
                if self.min_width(av[3]) > 0:
                    previous = None
                continue
            if op is C.BRANCH:
                for alternative in av[1]:
                    self.sequence(alternative, in_repeat)
                previous = None
                continue
            if op in (C.ASSERT, C.ASSERT_NOT):
                self.sequence(av[1], in_repeat)
                continue
            if op is C.AT:
                continue  # anchors match no character
            previous = None  # a character that must be there separates the repeats

    def branches_disjoint(self, items: Any) -> None:
        """Alternatives directly under a repeat must start differently: (a|ab)* explodes."""
        for op, av in items:
            if op is C.SUBPATTERN:
                self.branches_disjoint(av[3])
            if op is not C.BRANCH:
                continue
            seen: set[str] = set()
            for alternative in av[1]:
                chars = self.first_chars(alternative)
                if chars is None or seen & chars:
                    raise UnsafePattern(
                        "alternatives under a repeat that can start with the same character, "
                        "such as (a|ab)*, can take exponential time; make the group atomic (?>...)"
                    )
                seen |= chars
            return

    def min_width(self, items: Any) -> int:
        low, _ = sre_parse.SubPattern(sre_parse.State(), list(items)).getwidth()
        return int(low)

    def first_chars(self, items: Any) -> frozenset[str] | None:
        """Characters that can start a match of `items` (None: it can match nothing)."""
        found: set[str] = set()
        for op, av in items:
            if op is C.AT or op in (C.ASSERT, C.ASSERT_NOT):
                continue
            if op in _REPEATS or op is C.POSSESSIVE_REPEAT:
                low, _, item = av
                inner = self.first_chars(item)
                found |= inner or set()
                if low > 0 and inner is not None:
                    return frozenset(found)
                continue
            if op is C.SUBPATTERN:
                inner = self.first_chars(av[3])
                found |= inner or set()
                if inner is not None and self.min_width(av[3]) > 0:
                    return frozenset(found)
                continue
            if op is C.ATOMIC_GROUP:
                inner = self.first_chars(av)
                found |= inner or set()
                if inner is not None and self.min_width(av) > 0:
                    return frozenset(found)
                continue
            if op is C.BRANCH:
                for alternative in av[1]:
                    found |= self.first_chars(alternative) or set()
                return frozenset(found)
            found |= self.single(op, av)
            return frozenset(found)
        return frozenset(found) if found else None

    def single(self, op: Any, av: Any) -> set[str]:
        """The sample characters one character-matching item accepts."""
        if op is C.LITERAL:
            return self.cased({chr(av)})
        if op is C.NOT_LITERAL:
            return set(_ALL - self.cased({chr(av)}))
        if op is C.ANY:
            return set(_ALL)
        if op is C.IN:
            return self.in_set(av)
        return set(_ALL)  # anything else: assume the worst

    def in_set(self, members: Any) -> set[str]:
        accepted: set[str] = set()
        negate = False
        for op, av in members:
            if op is C.NEGATE:
                negate = True
            elif op is C.LITERAL:
                accepted |= self.cased({chr(av)})
            elif op is C.RANGE:
                low, high = av
                accepted |= self.cased({c for c in _SAMPLE if low <= ord(c) <= high})
            elif op is C.CATEGORY:
                test = _CATEGORIES.get(av)
                accepted |= {c for c in _SAMPLE if test(c)} if test else set(_ALL)
            else:
                accepted |= set(_ALL)
        return set(_ALL - accepted) if negate else accepted

    def cased(self, chars: set[str]) -> set[str]:
        if not self.ignore_case:
            return chars
        upper = {c.upper() for c in chars if len(c.upper()) == 1}
        return chars | {c.lower() for c in chars} | upper
