"""What every stand-in shares: an aiohttp app on a free loopback port, and scripted failures."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web


@dataclass
class Failure:
    """How to answer instead of doing the work: `times` None means until `recover()`."""

    status: int
    body: dict[str, Any] | None = None
    retry_after: int | None = None
    times: int | None = 1
    method: str | None = None  # only for this API method (Slack) or path suffix, or any
    delay_s: float = 0.0  # answer late (a client timeout), then do the work anyway


class FailureScript:
    """Failures consumed in order by the requests they match."""

    def __init__(self) -> None:
        self._failures: list[Failure] = []

    def add(self, failure: Failure) -> None:
        self._failures.append(failure)

    def clear(self) -> None:
        self._failures.clear()

    def take(self, method: str) -> Failure | None:
        for failure in self._failures:
            if failure.method is not None and failure.method != method:
                continue
            if failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
            return failure
        return None


class LoopbackServer:
    """Runs `self.app` on 127.0.0.1 with a port the OS picks (or the one given)."""

    def __init__(self, port: int = 0) -> None:
        self.app = web.Application()
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
