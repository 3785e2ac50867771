"""Intake's settings (environment variables with the CASEGATE_ prefix)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from casegate_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    intake_port: int = 8080
    webform_max_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest accepted request body (also aiohttp's client_max_size); above it: 413",
    )
    case_store_url: str = Field(
        "http://127.0.0.1:8081", description="case-store's base URL: the tracking page reads "
        "and changes cases through its tracking API"
    )
    # --- Twilio SMS/MMS and Slack webhooks (routes exist only when their secret is set) ---
    public_url: str | None = Field(
        None,
        description="Base URL providers call, e.g. https://casegate.example.com: Twilio signs "
        "it (behind a proxy the URL intake sees differs); unset: the request's own URL",
    )
    twilio_account_sid: str | None = Field(None, description="Account SID (AC…): MMS media fetch")
    twilio_auth_token: SecretStr | None = Field(
        None, description="Verifies X-Twilio-Signature; unset: no Twilio routes"
    )
    twilio_api_base: str = Field(
        "https://api.twilio.com", description="Twilio REST origin; MMS media only from here"
    )
    twilio_media_timeout_s: float = Field(10.0, gt=0, description="Per MMS media download")
    sms_default_region: str | None = Field(
        None, description="Region (e.g. US) for sender numbers that lack a + country code"
    )
    webhook_max_bytes: int = Field(
        256 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest Twilio/Slack request body"
    )
    slack_signing_secret: SecretStr | None = Field(
        None, description="Verifies X-Slack-Signature; unset: no Slack routes"
    )
    slack_bot_token: SecretStr | None = Field(None, description="xoxb- token: opens reply modals")
    slack_bot_user_id: str | None = Field(
        None, description="Our bot's user id (U…), whose messages are skipped; unset: auth.test"
    )
    slack_api_base: str = Field("https://slack.com/api/", description="Slack Web API base URL")
    slack_reply_prefix: str = Field(
        "!reply ", description="A thread message starting with this is a reply to the customer"
    )
    slack_dedupe_ttl_s: int = Field(3600, ge=60, description="How long a Slack event id is kept")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field("casegate", description="Prefix of every Redis key this service owns")
    # --- Email over IMAP (one watcher per mailbox; unset: no mailbox is read) ---
    imap_mailboxes: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated imap://user:password@host:port/FOLDER or imaps://… URLs "
        "(user and password percent-encoded; imap:// upgrades with STARTTLS when offered "
        "unless ?starttls=off)",
    )
    imap_processed_flag: str = Field(
        "$CasegateProcessed", description="Flag set once the broker confirmed a message"
    )
    imap_processed_folder: str | None = Field(
        None, description="Move processed messages here instead of flagging them"
    )
    imap_failed_flag: str = Field("$CasegateFailed", description="Flag for unusable messages")
    imap_failed_folder: str | None = Field(None, description="Move unusable messages here")
    imap_own_addresses: str = Field(
        "", description="Comma-separated addresses whose mail is ignored; empty: the mailboxes' "
        "user names that are addresses"
    )
    imap_poll_s: float = Field(30.0, gt=0, description="Poll interval where IDLE is missing")
    imap_idle_renew_s: float = Field(
        24 * 60.0, gt=0, le=29 * 60, description="Re-issue IDLE after this (servers end it at 30)"
    )
    imap_lease_s: float = Field(
        30.0, ge=1, description="Lease on a mailbox in Redis; another replica takes over after"
    )
    imap_batch: int = Field(50, ge=1, le=1000, description="Messages fetched and published at once")
    imap_message_max_bytes: int = Field(
        8 * 1024 * 1024, ge=1024,
        description="Larger emails are taken in piecemeal: text parsed, attachments streamed",
    )
    imap_message_attachments_max_bytes: int = Field(
        40 * 1024 * 1024, ge=1024, description="Attachments stored per message, all together"
    )
    imap_timeout_s: float = Field(60.0, gt=0, description="IMAP socket timeout")
    imap_backoff_max_s: float = Field(60.0, gt=0, description="Longest wait between reconnects")
