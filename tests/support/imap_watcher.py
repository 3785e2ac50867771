"""Run intake's mailbox watcher on its own until SIGTERM or SIGINT, with settings from the
CASEGATE_* environment: `python -m tests.support.imap_watcher` (the crash tests SIGKILL it)."""

from __future__ import annotations

import asyncio
import signal

from casegate_intake.adapters.imap import MailboxWatcher
from casegate_intake.settings import Settings
from casegate_shared.bus import Bus


async def main() -> None:
    settings = Settings()
    bus = Bus(settings, source="intake")
    await bus.connect()
    watcher = MailboxWatcher(settings, bus)
    await watcher.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("watching", flush=True)
    await stop.wait()
    await watcher.stop()
    await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
