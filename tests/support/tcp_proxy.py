"""A TCP proxy on loopback whose way back can be held: put between a service and RabbitMQ,
it lets a test keep publisher confirms from arriving (a slow broker) without touching the
broker itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit


class HeldProxy:
    def __init__(self, upstream_url: str) -> None:
        """In front of the server of `upstream_url` (amqp://…:5672/…)."""
        self.upstream_url = upstream_url
        self.upstream_port = urlsplit(upstream_url).port or 5672
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """`upstream_url` through the proxy (once it runs)."""
        return self.upstream_url.replace(f":{self.upstream_port}/", f":{self.port}/", 1)

    def hold(self) -> None:
        """Stop passing what the upstream sends back (confirms, deliveries)."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    back: bool) -> None:
        try:
            while data := await reader.read(65536):
                if back:
                    await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        for task in (asyncio.create_task(self._pipe(client_r, up_w, back=False)),
                     asyncio.create_task(self._pipe(up_r, client_w, back=True))):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HeldProxy]:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self.release()
            self._server.close()
            for task in list(self._pipes):
                task.cancel()
            await asyncio.gather(*self._pipes, return_exceptions=True)
