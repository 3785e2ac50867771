"""Run case-store: `python -m casegate_case_store` or `casegate-case-store`."""

from __future__ import annotations

from casegate_shared.service import run_service

from .app import init_app
from .settings import Settings


def main() -> None:
    settings = Settings()
    # init_app takes this service's Settings, a subclass of what run_service declares.
    run_service(
        "case-store", init_app, settings, settings.case_store_port  # type: ignore[arg-type]
    )


if __name__ == "__main__":
    main()
