"""When to try a temporarily failed notification again, and when to stop trying.

No attempt counter is kept: the backoff grows with the time the notification has already
waited (wait about as long again, so the waits double), which needs no state that a crash
or a redelivery could lose. Jitter spreads the retries of a burst that failed together.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 1.0
    cap_s: float = 300.0
    deadline_s: float = 6 * 3600.0


def next_delay(
    policy: RetryPolicy,
    waited_s: float,
    retry_after_s: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds until the next try: between half and all of the doubled wait, never sooner than
    the provider asked for."""
    target = min(policy.cap_s, max(policy.base_s, waited_s))
    delay = target * (0.5 + rand() / 2)
    if retry_after_s is not None and retry_after_s > delay:
        delay = min(retry_after_s, policy.deadline_s)
    return delay


def give_up(policy: RetryPolicy, waited_s: float, delay_s: float) -> bool:
    """True when the next try would come after the deadline."""
    return waited_s + delay_s > policy.deadline_s


def gave_up_reason(waited_s: float, last_reason: str | None) -> str:
    return f"gave up after {_duration(waited_s)} of temporary failures: {last_reason or 'unknown'}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"
