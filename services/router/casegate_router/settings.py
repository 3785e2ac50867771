"""The router's settings (environment variables with the CASEGATE_ prefix)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from casegate_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    router_port: int = 8082
    rules_file: Path = Field(
        Path("config/rules.yaml"),
        description="Routing rules (YAML), validated at start; `casegate rules check` checks one",
    )
