"""The notifier's settings (environment variables with the CASEGATE_ prefix)."""

from __future__ import annotations

from email.utils import parseaddr

from pydantic import Field, field_validator

from casegate_shared.settings import ServiceSettings

UNSAFE_HEADER_CHARS = ("\r", "\n", "\0")


class Settings(ServiceSettings):
    notifier_port: int = 8083
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field("casegate", description="Prefix of every Redis key this service owns")
    smtp_url: str | None = Field(
        None,
        description="smtp://[user:pass@]host[:port] (STARTTLS when offered) or smtps://host[:465]; "
        "unset: email goes to the sandbox",
    )
    smtp_from: str = "Support <support@casegate.localhost>"
    sandbox_max: int = Field(10_000, ge=1, description="Messages the sandbox keeps (newest)")
    send_lease_s: int = Field(
        60, ge=3, description="How long a send may hold its dedupe claim before others may retry"
    )
    dedupe_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="How long a delivery is remembered")

    @field_validator("smtp_from")
    @classmethod
    def _one_mailbox(cls, value: str) -> str:
        # Checked at start so a bad From never reaches a header (3.11.7 would fold CR/LF in).
        if any(c in value for c in UNSAFE_HEADER_CHARS):
            raise ValueError("smtp_from must be one line")
        _, addr = parseaddr(value)
        if "@" not in addr:
            raise ValueError(f"smtp_from is not a mailbox: {value!r}")
        return value

    @property
    def smtp_timeout_s(self) -> float:
        """A send must end well inside its lease, or a second replica could send it too."""
        return max(1.0, self.send_lease_s / 3)
