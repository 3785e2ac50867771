"""SLA clocks after a wait, and automatic assignment.

- `cases.clocks_resumed_at`: when the case last stopped waiting for the customer. The
  router's business-time answer to that resume (`case.sla_decided`) names it, so a decision
  that arrives after the case paused again is recognised as stale and left alone.
- `cases.assigned_at`: when the current assignee got the case (NULL while unassigned), kept
  by a trigger whoever changes the assignee. The team's most recently assigned case names
  whom round robin continues after; the queue index serves the router's queue sweep.
- One partial index per SLA sweeper step (warning and breach of both clocks), under the
  same condition the sweeper queries, replacing 0002's two clock indexes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    "ALTER TABLE cases ADD COLUMN clocks_resumed_at timestamptz",
    "ALTER TABLE cases ADD COLUMN assigned_at timestamptz",
    # Cases assigned before this revision: when they last changed is the closest there is.
    "UPDATE cases SET assigned_at = updated_at WHERE assignee_id IS NOT NULL",
    # Every writer of assignee_id (API, Slack, escalation, router) stamps it the same way.
    """CREATE FUNCTION casegate_stamp_assignment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.assigned_at := CASE WHEN NEW.assignee_id IS NULL THEN NULL ELSE now() END;
    ELSIF NEW.assignee_id IS DISTINCT FROM OLD.assignee_id THEN
        NEW.assigned_at := CASE WHEN NEW.assignee_id IS NULL THEN NULL ELSE now() END;
    END IF;
    RETURN NEW;
END $$""",
    "CREATE TRIGGER cases_stamp_assignment BEFORE INSERT OR UPDATE OF assignee_id ON cases "
    "FOR EACH ROW EXECUTE FUNCTION casegate_stamp_assignment()",
    # The round-robin cursor: the team's most recently assigned case.
    "CREATE INDEX cases_team_assigned_idx ON cases (team, assigned_at DESC) "
    "WHERE assigned_at IS NOT NULL",
    # Each team's queue, most urgent and oldest first.
    "CREATE INDEX cases_queue_idx ON cases (team, priority, created_at, id) "
    "WHERE assignee_id IS NULL AND status IN ('new', 'open') AND merged_into_id IS NULL",
    # The SLA sweeper's four steps, each indexed under exactly the condition it queries
    # (store/sla.py, Step.pending): a pass and the "next due" query read a few index
    # entries instead of scanning the open cases. They replace 0002's two clock indexes,
    # which had no index for the warnings and did not exclude waiting or merged cases.
    "DROP INDEX cases_first_response_clock_idx",
    "DROP INDEX cases_resolution_clock_idx",
    "CREATE INDEX cases_sla_first_response_warn_idx ON cases (first_response_warn_at) "
    "WHERE NOT first_response_warned AND first_response_at IS NULL "
    "AND status NOT IN ('pending_customer', 'resolved', 'closed') AND merged_into_id IS NULL",
    "CREATE INDEX cases_sla_first_response_due_idx ON cases (first_response_due) "
    "WHERE NOT first_response_breached AND first_response_at IS NULL "
    "AND status NOT IN ('pending_customer', 'resolved', 'closed') AND merged_into_id IS NULL",
    "CREATE INDEX cases_sla_resolution_warn_idx ON cases (resolution_warn_at) "
    "WHERE NOT resolution_warned AND resolved_at IS NULL "
    "AND status NOT IN ('pending_customer', 'resolved', 'closed') AND merged_into_id IS NULL",
    "CREATE INDEX cases_sla_resolution_due_idx ON cases (resolution_due) "
    "WHERE NOT resolution_breached AND resolved_at IS NULL "
    "AND status NOT IN ('pending_customer', 'resolved', 'closed') AND merged_into_id IS NULL",
]

DOWNGRADE = [
    "ALTER TABLE cases DROP COLUMN clocks_resumed_at",
    "ALTER TABLE cases DROP COLUMN assigned_at",
    "DROP FUNCTION casegate_stamp_assignment()",
    "DROP TRIGGER cases_stamp_assignment ON cases",
    "DROP INDEX cases_team_assigned_idx",
    "DROP INDEX cases_queue_idx",
    "DROP INDEX cases_sla_first_response_warn_idx",
    "DROP INDEX cases_sla_first_response_due_idx",
    "DROP INDEX cases_sla_resolution_warn_idx",
    "DROP INDEX cases_sla_resolution_due_idx",
    "CREATE INDEX cases_first_response_clock_idx ON cases (first_response_due) "
    "WHERE first_response_at IS NULL AND NOT first_response_breached",
    "CREATE INDEX cases_resolution_clock_idx ON cases (resolution_due) "
    "WHERE resolved_at IS NULL AND NOT resolution_breached",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in reversed(DOWNGRADE):
        op.execute(statement)
