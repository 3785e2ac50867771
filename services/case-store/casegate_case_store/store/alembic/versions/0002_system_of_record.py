"""The system of record: customer preferences and merges, the full case model, participants,
reason codes, users and hashed API tokens, an append-only audit log, attachments, threading
ids, delivery records and full-text search.

Written as SQL: most of it is PostgreSQL-specific (tsvector, triggers, arrays) and reads
plainer that way.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
ALTER TABLE customers
    ADD COLUMN preferred_channel text,
    ADD COLUMN fallback text[] NOT NULL DEFAULT '{}',
    ADD COLUMN language text NOT NULL DEFAULT 'en',
    ADD COLUMN timezone text NOT NULL DEFAULT 'UTC',
    ADD COLUMN quiet_start time,
    ADD COLUMN quiet_end time,
    ADD COLUMN tier text,
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}',
    ADD COLUMN last_channel text,
    ADD COLUMN merged_into bigint REFERENCES customers(id),
    ADD COLUMN erased_at timestamptz;

ALTER TABLE customer_identities
    ADD COLUMN opted_out_at timestamptz,
    ADD COLUMN bouncing_at timestamptz,
    ADD COLUMN bounce_reason text;

CREATE TABLE reason_codes (
    code text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{0,39}$'),
    label text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO reason_codes (code, label) VALUES
    ('completed', 'Completed'),
    ('in_progress', 'In progress'),
    ('needs_approval', 'Needs approval'),
    ('not_a_problem', 'Not a problem'),
    ('rejected', 'Rejected');

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    handle text NOT NULL UNIQUE CHECK (handle ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    name text NOT NULL,
    email text UNIQUE,
    slack_user text UNIQUE,
    roles text[] NOT NULL CHECK (roles <@ ARRAY['creator','resolver','supervisor','admin']),
    teams text[] NOT NULL DEFAULT '{}',
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    name text NOT NULL,
    token_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);

ALTER TABLE cases DROP CONSTRAINT cases_status_check;
UPDATE cases SET status = 'pending_customer' WHERE status = 'pending';
ALTER TABLE cases
    ADD CONSTRAINT cases_status_check CHECK (
        status IN ('new', 'open', 'pending_customer', 'on_hold', 'resolved', 'closed')),
    ADD COLUMN reason_code text REFERENCES reason_codes(code),
    ADD COLUMN assignee_id bigint REFERENCES users(id),
    ADD COLUMN parent_id bigint REFERENCES cases(id),
    ADD COLUMN merged_into_id bigint REFERENCES cases(id),
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}',
    ADD COLUMN region text,
    ADD COLUMN timezone text NOT NULL DEFAULT 'UTC',
    ADD COLUMN sla_policy text,
    ADD COLUMN first_response_due timestamptz,
    ADD COLUMN resolution_due timestamptz,
    ADD COLUMN first_response_warn_at timestamptz,
    ADD COLUMN resolution_warn_at timestamptz,
    ADD COLUMN first_response_warned boolean NOT NULL DEFAULT false,
    ADD COLUMN resolution_warned boolean NOT NULL DEFAULT false,
    ADD COLUMN first_response_breached boolean NOT NULL DEFAULT false,
    ADD COLUMN resolution_breached boolean NOT NULL DEFAULT false,
    ADD COLUMN first_response_at timestamptz,
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN closed_at timestamptz,
    ADD COLUMN pending_since timestamptz,
    ADD COLUMN tracking_token_hash text,
    ADD COLUMN slack_thread text,
    ADD COLUMN search tsvector NOT NULL DEFAULT ''::tsvector;

UPDATE cases SET search = to_tsvector('simple', subject || ' ' || description);

-- The agent's usual list (my team's open cases, newest first) reads this index in order and
-- stops after one page, also when the combination matches nothing.
DROP INDEX cases_team_status_idx;
CREATE INDEX cases_team_status_created_idx ON cases (team, status, created_at DESC, id DESC);
CREATE INDEX cases_status_created_idx ON cases (status, created_at DESC, id DESC);
CREATE INDEX cases_created_idx ON cases (created_at DESC, id DESC);
CREATE INDEX cases_assignee_idx ON cases (assignee_id) WHERE assignee_id IS NOT NULL;
CREATE INDEX cases_parent_idx ON cases (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX cases_tags_idx ON cases USING gin (tags);
CREATE INDEX cases_search_idx ON cases USING gin (search);
CREATE INDEX cases_slack_thread_idx ON cases (slack_thread) WHERE slack_thread IS NOT NULL;
-- The SLA sweeper only ever looks at clocks that are still running.
CREATE INDEX cases_first_response_clock_idx ON cases (first_response_due)
    WHERE first_response_at IS NULL AND NOT first_response_breached;
CREATE INDEX cases_resolution_clock_idx ON cases (resolution_due)
    WHERE resolved_at IS NULL AND NOT resolution_breached;

-- Customer messages and public replies feed the case's search vector, so one GIN index
-- answers "subjects and messages" without scanning the timeline.
CREATE FUNCTION casegate_index_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind IN ('message_in', 'reply') THEN
        UPDATE cases SET search = search || to_tsvector('simple', left(NEW.body, 20000))
        WHERE id = NEW.case_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER timeline_entries_index_message AFTER INSERT ON timeline_entries
    FOR EACH ROW EXECUTE FUNCTION casegate_index_message();

CREATE FUNCTION casegate_index_subject() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search := to_tsvector('simple', NEW.subject) || NEW.search;
    RETURN NEW;
END $$;
CREATE TRIGGER cases_index_subject BEFORE INSERT ON cases
    FOR EACH ROW EXECUTE FUNCTION casegate_index_subject();

CREATE TABLE case_participants (
    case_id bigint NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    user_id bigint NOT NULL REFERENCES users(id),
    role text NOT NULL CHECK (role IN ('owner', 'administrator', 'watcher')),
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, user_id, role)
);
CREATE INDEX case_participants_user_idx ON case_participants (user_id);

ALTER TABLE timeline_entries ADD COLUMN actor_user_id bigint REFERENCES users(id);

CREATE TABLE attachments (
    id bigserial PRIMARY KEY,
    case_id bigint NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    entry_id bigint REFERENCES timeline_entries(id),
    blob_key text,
    filename text NOT NULL,
    content_type text NOT NULL,
    size bigint NOT NULL,
    sha256 text,
    visibility text NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'internal')),
    omitted_reason text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_case_idx ON attachments (case_id);

-- Every email Message-ID seen or sent on a case: what In-Reply-To/References thread on.
CREATE TABLE case_message_ids (
    message_id text NOT NULL,
    case_id bigint NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    direction text NOT NULL CHECK (direction IN ('in', 'out')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, case_id)
);

-- The durable half of the notifier's dedupe: one row per (event, recipient, channel).
CREATE TABLE deliveries (
    notification_key text PRIMARY KEY,
    case_id bigint REFERENCES cases(id) ON DELETE CASCADE,
    channel text NOT NULL,
    provider text NOT NULL,
    status text NOT NULL,
    provider_message_id text,
    reason text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_provider_message_idx ON deliveries (provider, provider_message_id);

CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor_user_id bigint REFERENCES users(id),
    actor_token_id bigint REFERENCES api_tokens(id),
    action text NOT NULL,
    target text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    correlation_id text
);
CREATE INDEX audit_log_target_idx ON audit_log (target, id);

-- Append-only means append-only, whoever holds the connection.
CREATE FUNCTION casegate_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION casegate_audit_append_only();
"""

DOWNGRADE = r"""
DROP TABLE audit_log;
DROP FUNCTION casegate_audit_append_only();
DROP TABLE deliveries;
DROP TABLE case_message_ids;
DROP TABLE attachments;
ALTER TABLE timeline_entries DROP COLUMN actor_user_id;
DROP TABLE case_participants;
DROP INDEX cases_team_status_created_idx;
CREATE INDEX cases_team_status_idx ON cases (team, status);
DROP INDEX cases_status_created_idx;
DROP INDEX cases_created_idx;
DROP INDEX cases_assignee_idx;
DROP INDEX cases_parent_idx;
DROP INDEX cases_tags_idx;
DROP INDEX cases_search_idx;
DROP INDEX cases_slack_thread_idx;
DROP INDEX cases_first_response_clock_idx;
DROP INDEX cases_resolution_clock_idx;
DROP TRIGGER cases_index_subject ON cases;
DROP FUNCTION casegate_index_subject();
DROP TRIGGER timeline_entries_index_message ON timeline_entries;
DROP FUNCTION casegate_index_message();
ALTER TABLE cases DROP CONSTRAINT cases_status_check;
UPDATE cases SET status = 'open' WHERE status = 'on_hold';
UPDATE cases SET status = 'pending' WHERE status = 'pending_customer';
ALTER TABLE cases
    ADD CONSTRAINT cases_status_check
        CHECK (status IN ('new', 'open', 'pending', 'resolved', 'closed')),
    DROP COLUMN reason_code, DROP COLUMN assignee_id, DROP COLUMN parent_id,
    DROP COLUMN merged_into_id, DROP COLUMN tags, DROP COLUMN region, DROP COLUMN timezone,
    DROP COLUMN sla_policy, DROP COLUMN first_response_due, DROP COLUMN resolution_due,
    DROP COLUMN first_response_warn_at, DROP COLUMN resolution_warn_at,
    DROP COLUMN first_response_warned, DROP COLUMN resolution_warned,
    DROP COLUMN first_response_breached, DROP COLUMN resolution_breached,
    DROP COLUMN first_response_at, DROP COLUMN resolved_at, DROP COLUMN closed_at,
    DROP COLUMN pending_since, DROP COLUMN tracking_token_hash, DROP COLUMN slack_thread,
    DROP COLUMN search;
DROP TABLE api_tokens;
DROP TABLE users;
DROP TABLE reason_codes;
ALTER TABLE customer_identities
    DROP COLUMN opted_out_at, DROP COLUMN bouncing_at, DROP COLUMN bounce_reason;
ALTER TABLE customers
    DROP COLUMN preferred_channel, DROP COLUMN fallback, DROP COLUMN language,
    DROP COLUMN timezone, DROP COLUMN quiet_start, DROP COLUMN quiet_end, DROP COLUMN tier,
    DROP COLUMN tags, DROP COLUMN last_channel, DROP COLUMN merged_into, DROP COLUMN erased_at;
"""


def statements(script: str) -> list[str]:
    """One statement at a time (the driver prepares each); `$$` bodies keep their `;`."""
    found: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if not current and (not line.strip() or line.startswith("--")):
            continue
        current.append(line)
        chunk = "\n".join(current)
        if line.rstrip().endswith(";") and chunk.count("$$") % 2 == 0:
            found.append(chunk)
            current = []
    return found


def upgrade() -> None:
    for statement in statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    for statement in statements(DOWNGRADE):
        op.execute(statement)
