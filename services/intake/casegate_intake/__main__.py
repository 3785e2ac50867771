"""Run intake: `python -m casegate_intake` or `casegate-intake`."""

from __future__ import annotations

from casegate_shared.service import run_service

from .app import init_app
from .settings import Settings


def main() -> None:
    settings = Settings()
    run_service("intake", init_app, settings, settings.intake_port)


if __name__ == "__main__":
    main()
