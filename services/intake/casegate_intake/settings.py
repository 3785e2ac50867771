"""Intake's settings (environment variables with the CASEGATE_ prefix)."""

from __future__ import annotations

from pydantic import Field

from casegate_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    intake_port: int = 8080
    webform_max_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest accepted request body (also aiohttp's client_max_size); above it: 413",
    )
