"""The notifier's settings (environment variables with the CASEGATE_ prefix)."""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

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
    smtp_reply_to: str | None = Field(
        None,
        description="Reply-To of every email we send: the address of a mailbox intake reads "
        "(CASEGATE_IMAP_MAILBOXES), so replies thread back into the case; unset: smtp_from",
    )
    sandbox_max: int = Field(10_000, ge=1, description="Messages the sandbox keeps (newest)")
    send_lease_s: int = Field(
        60, ge=3, description="How long a send may hold its dedupe claim before others may retry"
    )
    dedupe_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="How long a delivery is remembered")
    database_url: str | None = Field(
        None,
        description="case-store's PostgreSQL, read only: the delivery record a claim Redis has "
        "no trace of is checked against, and the addresses of assignees; unset: Redis alone",
    )
    # --- notification policy and delivery -------------------------------------------------
    notify_policy_file: Path = Field(
        Path("config/notify.yaml"),
        description="Notification policy (YAML), validated at start; `casegate notify check`",
    )
    delivery_deadline_s: float = Field(
        6 * 3600, gt=0, description="Temporary failures are retried until then, then failed"
    )
    retry_base_s: float = Field(1.0, gt=0, description="First retry delay; doubles as time passes")
    retry_cap_s: float = Field(300.0, gt=0, description="Longest wait between two retries")
    breaker_failures: int = Field(
        5, ge=1, description="Failures of a provider within breaker_window_s that open its breaker"
    )
    breaker_window_s: float = Field(30.0, gt=0, description="Window in which failures count")
    breaker_probe_s: float = Field(
        15.0, gt=0, description="While a breaker is open, one probe send per this many seconds"
    )
    scheduler_tick_s: float = Field(
        1.0, gt=0, description="How often held (quiet hours) and digested notifications are checked"
    )
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='JSON {"subscriber": "secret"}: the HMAC key of each webhook in the policy',
    )
    webhook_allow_http: bool = Field(False, description="Allow http:// webhook URLs (tests only)")
    webhook_allow_private: bool = Field(
        False,
        description="Allow webhooks to loopback, private, link-local and metadata addresses",
    )
    webhook_timeout_s: float = Field(10.0, gt=0, description="One webhook POST, connect to answer")

    # --- Twilio SMS and Slack providers (each used only when its credentials are set) -----
    public_url: str | None = Field(
        None,
        description="intake's public base URL: the customer's tracking link "
        "(<public_url>/track/<ref>?token=…) and Twilio status callbacks "
        "(<public_url>/v1/twilio/status); unset: neither",
    )
    twilio_account_sid: str | None = Field(None, description="Account SID (AC…)")
    twilio_auth_token: SecretStr | None = Field(None, description="Auth token of that account")
    twilio_from: str | None = Field(None, description="Sending number, E.164")
    twilio_api_base: str = Field("https://api.twilio.com", description="Twilio REST origin")
    twilio_rate_per_s: float = Field(
        1.0, gt=0, description="SMS per second from the sending number, across all replicas"
    )
    slack_bot_token: SecretStr | None = Field(None, description="xoxb- token that posts cases")
    slack_api_base: str = Field("https://slack.com/api/", description="Slack Web API base URL")
    slack_rate_per_s: float = Field(
        1.0, gt=0, description="Slack posts per second per channel, across all replicas"
    )
    provider_timeout_s: float = Field(
        10.0, gt=0, description="One Twilio or Slack API call, connect to answer"
    )

    @field_validator("smtp_from", "smtp_reply_to")
    @classmethod
    def _one_mailbox(cls, value: str | None) -> str | None:
        # Checked at start so a bad address never reaches a header (3.11.7 would fold CR/LF in).
        if value is None:
            return None
        if any(c in value for c in UNSAFE_HEADER_CHARS):
            raise ValueError("the address must be one line")
        _, addr = parseaddr(value)
        if "@" not in addr:
            raise ValueError(f"not a mailbox: {value!r}")
        return value

    @property
    def smtp_timeout_s(self) -> float:
        """A send must end well inside its lease, or a second replica could send it too."""
        return max(1.0, self.send_lease_s / 3)
