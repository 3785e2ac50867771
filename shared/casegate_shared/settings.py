"""Settings every service shares; each service subclasses `ServiceSettings` with its own.

All configuration comes from environment variables with the `CASEGATE_` prefix (see the
README's table). Nothing reads a global config object: settings are passed in.
"""

from __future__ import annotations

import re

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BusSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASEGATE_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    bus_exchange: str = Field("casegate", description="Topic exchange all events go through")
    bus_prefix: str = Field("casegate", description="Prefix of every queue this deployment owns")
    bus_prefetch: int = Field(64, ge=1, le=10_000, description="Unacked deliveries per consumer")
    bus_max_attempts: int = Field(5, ge=1, le=50, description="Handler tries before parking")
    bus_retry_base_ms: int = Field(1000, ge=10, description="First retry delay; doubles each try")
    bus_delivery_limit: int = Field(
        20, ge=2, description="Broker-side redelivery cap (crashing consumers), then dead-letter"
    )


class ServiceSettings(BusSettings):
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    blob_dir: str = Field(
        "var/blobs", description="Local blob store directory (attachments); with blob_url set, "
        "only uploads in progress are spooled here"
    )
    blob_url: str | None = Field(
        None, description="s3://bucket/prefix?endpoint=http://host:port&region=… for an "
        "S3-compatible blob store; unset: the local blob_dir"
    )
    blob_access_key: SecretStr | None = Field(None, description="S3 access key id (blob_url)")
    blob_secret_key: SecretStr | None = Field(
        None, description="S3 secret key; unset: boto3's usual environment and files"
    )
    attachment_max_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, description="Largest attachment kept; a bigger one is noted"
    )


def libpq_url(database_url: str) -> str:
    """The URL as asyncpg takes it: SQLAlchemy-style URLs name a driver after a '+'
    (postgresql+asyncpg://), which services that read case-store's database drop."""
    return re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", database_url)
