"""A circuit breaker per provider, shared by every notifier replica through Redis.

Shared rather than per process: when SMTP is down, one replica's failures spare the others
their own, and the whole fleet sends one probe per interval instead of one each. Only
temporary failures count (a refused address says nothing about the provider). `failures`
of them within `window_s` open the breaker; while it is open, one send per `probe_s` is let
through as a probe, and the first probe that succeeds closes it. A provider that asked for a
pause (Retry-After) is paused for that long, for everyone, without a probe.

Keys: `<prefix>:breaker:<provider>:{fails,open,probe,pause}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import Counter, Gauge
from redis.asyncio import Redis

BREAKER_OPEN = Gauge(
    "casegate_notifier_breaker_open", "1 while a provider's circuit breaker is open", ["provider"]
)
BREAKER_TRANSITIONS = Counter(
    "casegate_notifier_breaker_transitions_total", "Breakers opened and closed", ["provider", "to"]
)
OPEN_TTL_MS = 24 * 3600 * 1000  # an open breaker nobody probes any more is forgotten in a day

_ALLOW = """
local paused = redis.call('PTTL', KEYS[4])
if paused > 0 then return {'paused', paused} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'closed', 0} end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then return {'probe', 0} end
return {'open', math.max(redis.call('PTTL', KEYS[3]), 1)}
"""
_FAILURE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'open' end
if n >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[4])
  return 'opened'
end
return 'closed'
"""
_SUCCESS = """
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[1], KEYS[3])
  return 'closed_now'
end
return 'closed'
"""
_PAUSE = """
if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[1])
end
return 1
"""


class Gate(StrEnum):
    CLOSED = "closed"  # send
    PROBE = "probe"  # send: this one finds out whether the provider is back
    OPEN = "open"  # do not send; come back in `wait_s`
    PAUSED = "paused"  # the provider asked for a pause; come back in `wait_s`


@dataclass(frozen=True, slots=True)
class Admission:
    gate: Gate
    wait_s: float = 0.0

    @property
    def may_send(self) -> bool:
        return self.gate in (Gate.CLOSED, Gate.PROBE)


class CircuitBreaker:
    def __init__(
        self, redis: Redis, prefix: str, *, failures: int, window_s: float, probe_s: float
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._failures = failures
        self._window_ms = int(window_s * 1000)
        self._probe_ms = max(1, int(probe_s * 1000))
        self._allow = redis.register_script(_ALLOW)
        self._failure = redis.register_script(_FAILURE)
        self._success = redis.register_script(_SUCCESS)
        self._pause = redis.register_script(_PAUSE)

    @property
    def probe_s(self) -> float:
        return self._probe_ms / 1000

    def _keys(self, provider: str) -> list[str]:
        base = f"{self._prefix}:breaker:{provider}"
        return [f"{base}:fails", f"{base}:open", f"{base}:probe", f"{base}:pause"]

    async def admit(self, provider: str) -> Admission:
        gate, wait_ms = await self._allow(keys=self._keys(provider), args=[self._probe_ms])
        gate = Gate(gate.decode() if isinstance(gate, bytes) else gate)
        BREAKER_OPEN.labels(provider).set(0 if gate in (Gate.CLOSED, Gate.PAUSED) else 1)
        return Admission(gate, int(wait_ms) / 1000)

    async def failed(self, provider: str) -> bool:
        """Count a temporary failure; True if this one opened the breaker."""
        state = await self._failure(
            keys=self._keys(provider),
            args=[self._window_ms, self._failures, OPEN_TTL_MS, self._probe_ms],
        )
        opened = (state.decode() if isinstance(state, bytes) else state) == "opened"
        if opened:
            BREAKER_OPEN.labels(provider).set(1)
            BREAKER_TRANSITIONS.labels(provider, "open").inc()
        return opened

    async def succeeded(self, provider: str) -> bool:
        """A probe went through: close the breaker; True if this call closed it."""
        state = await self._success(keys=self._keys(provider))
        closed = (state.decode() if isinstance(state, bytes) else state) == "closed_now"
        BREAKER_OPEN.labels(provider).set(0)
        if closed:
            BREAKER_TRANSITIONS.labels(provider, "closed").inc()
        return closed

    async def pause(self, provider: str, seconds: float) -> None:
        await self._pause(keys=self._keys(provider), args=[max(1, int(seconds * 1000))])

    async def is_open(self, provider: str) -> bool:
        return bool(await self._redis.exists(self._keys(provider)[1]))
