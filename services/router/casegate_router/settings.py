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
    sla_file: Path = Field(
        Path("config/sla.yaml"),
        description="Regions, SLA policies and escalation paths (YAML), validated at start",
    )
    teams_file: Path = Field(
        Path("config/teams.yaml"),
        description="Teams, their members and assignment strategies (YAML), validated at start",
    )
    rules_reload: bool = Field(
        True, description="Apply changed rules, SLA and teams files without a restart"
    )
    database_url: str | None = Field(
        None,
        description="case-store's PostgreSQL, read only: agents' workload for automatic "
        "assignment, and `casegate rules replay`; unset: no automatic assignment",
    )
    assign_interval_s: float = Field(
        60.0, gt=0, description="How often waiting cases are offered to agents now on shift"
    )
