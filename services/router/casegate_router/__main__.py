"""`casegate-router`: run the router service."""

from __future__ import annotations

import logging

from casegate_shared.service import run_service

from .app import init_app
from .domain import RulesError
from .settings import Settings


def main() -> None:
    settings = Settings()
    try:
        # run_service is typed for the base settings; init_app takes this service's subclass.
        run_service("router", init_app, settings, settings.router_port)
    except RulesError as exc:
        logging.getLogger("casegate_router").error(
            f"cannot start: the {exc.kind} file is invalid",
            extra={"problems": str(exc).splitlines()},
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
