"""`casegate-notifier`: read the settings, serve the notifier."""

from __future__ import annotations

from casegate_shared.service import run_service

from .app import init_app
from .settings import Settings


def main() -> None:
    settings = Settings()
    run_service("notifier", init_app, settings, settings.notifier_port)


if __name__ == "__main__":
    main()
