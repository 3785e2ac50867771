"""Message-IDs by case.

Every `case.*` event carries the case's Message-IDs (the References and In-Reply-To of the
next email to the customer), gathered by case. The primary key (message_id, case_id) serves
threading, which looks a Message-ID up, but not this: each snapshot read the whole table,
which grows with every email sent and received.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX case_message_ids_case_idx ON case_message_ids (case_id, created_at)")


def downgrade() -> None:
    op.execute("DROP INDEX case_message_ids_case_idx")
