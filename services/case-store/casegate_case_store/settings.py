"""case-store settings: where the database is and how the outbox relay paces itself."""

from __future__ import annotations

from pydantic import Field

from casegate_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/casegate",
        description="PostgreSQL URL of the case store (CASEGATE_DATABASE_URL)",
    )
    case_store_port: int = Field(8081, ge=1, le=65535)
    db_pool_max: int = Field(10, ge=1, description="Connections the handlers share")
    outbox_batch: int = Field(200, ge=1, le=10_000, description="Events per relay pass")
    outbox_poll_s: float = Field(
        2.0, gt=0, description="Relay wake-up when no NOTIFY arrives (retries, missed wake-ups)"
    )
    reopen_window_days: int = Field(
        14, ge=0, description="A reply this soon after resolution reopens; later: a linked case"
    )
    sla_sweep_s: float = Field(
        1.0, gt=0, description="Longest wait between SLA sweeps (it wakes at the next due time)"
    )
    thread_same_sender_hours: float = Field(
        0, ge=0, description="Email matching no header or token joins the sender's open email "
        "case changed within this many hours; 0: off (a new case)"
    )
