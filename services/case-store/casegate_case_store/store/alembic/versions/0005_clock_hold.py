"""A resumed case's clocks hold until the router's answer.

When a wait for the customer ends, case-store shifts the SLA times by the wall time waited and
asks the router for the shift in working time. Until the answer (at most a grace period) the
wall-time shift may be early as well as late, so the sweeper holds the case's clocks:
`clocks_hold_until` is set on the resume and cleared when the answer applies.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE cases ADD COLUMN clocks_hold_until timestamptz")
    # Only cases waiting for an answer have one: the sweeper finds the next end of a hold
    # without reading the open cases.
    op.execute("CREATE INDEX cases_clock_hold_idx ON cases (clocks_hold_until) "
               "WHERE clocks_hold_until IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX cases_clock_hold_idx")
    op.execute("ALTER TABLE cases DROP COLUMN clocks_hold_until")
