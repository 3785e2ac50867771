"""Initial schema: customers and identities, cases, timeline, inbox and outbox.

Revision ID: 0001
Revises:
Create Date: 2025-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "customer_identities",
        sa.Column(
            "customer_id",
            sa.BigInteger,
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
        # One person per address: this constraint, not a lookup, decides races.
        sa.PrimaryKeyConstraint("kind", "value", name="customer_identities_pkey"),
        sa.CheckConstraint(
            "kind IN ('email', 'phone', 'slack', 'web')", name="customer_identities_kind_check"
        ),
    )
    op.create_index("customer_identities_customer_idx", "customer_identities", ["customer_id"])

    op.create_table(
        "cases",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("ref", sa.Text, nullable=False, unique=True),
        sa.Column("customer_id", sa.BigInteger, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.Text, nullable=False, server_default="new"),
        sa.Column("priority", sa.Text, nullable=False, server_default="P3"),
        sa.Column("team", sa.Text, nullable=True),
        sa.Column("routed_by_rule", sa.Text, nullable=True),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint(
            "status IN ('new', 'open', 'pending', 'resolved', 'closed')", name="cases_status_check"
        ),
        sa.CheckConstraint("priority IN ('P1', 'P2', 'P3', 'P4')", name="cases_priority_check"),
    )
    op.create_index("cases_customer_idx", "cases", ["customer_id"])
    op.create_index("cases_team_status_idx", "cases", ["team", "status"])

    op.create_table(
        "timeline_entries",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column(
            "case_id", sa.BigInteger, sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("visibility", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False, server_default=""),
        sa.Column(
            "data", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column("correlation_id", sa.Text, nullable=True),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint(
            "visibility IN ('public', 'internal')", name="timeline_entries_visibility_check"
        ),
    )
    op.create_index("timeline_entries_case_idx", "timeline_entries", ["case_id", "id"])

    op.create_table(
        "inbox",
        sa.Column("consumer", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column(
            "processed_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW
        ),
        # The dedupe authority: a second insert of the same key does nothing.
        sa.PrimaryKeyConstraint("consumer", "key", name="inbox_pkey"),
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("routing_key", sa.Text, nullable=False),
        sa.Column("correlation_id", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
        # Only an unroutable event is held back per row; a broker outage backs off the relay.
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column(
            "next_attempt_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW
        ),
        sa.Column("last_error", sa.Text, nullable=True),
    )


def downgrade() -> None:
    for table in ("outbox", "inbox", "timeline_entries", "cases", "customer_identities"):
        op.drop_table(table)
    op.drop_table("customers")
