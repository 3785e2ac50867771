"""Bus consumers of intake: none. Intake only publishes; providers reach it over HTTP (and,
later, IMAP), so it declares no queues and `casegate dlq list` has nothing to look at here."""

from __future__ import annotations

from casegate_shared.bus import Bus

QUEUES: list[str] = []


def register(bus: Bus) -> None:
    """Intake subscribes to nothing; kept so every service starts the same way."""
