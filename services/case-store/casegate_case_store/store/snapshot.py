"""The case as events carry it: one query gathers the case, its customer's addresses and
preferences, and its participants, so consumers never have to call case-store back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time
from typing import Any

import asyncpg

from casegate_shared.events import CaseSnapshot, Channel, Contact, Participant, Priority

from ..domain.cases import NewCase

# The customer's side of a snapshot, from a customer row aliased `cu` (or a CTE that
# returned these names): their preferences and every identity with its state.
IDENTITIES = """(SELECT coalesce(jsonb_agg(jsonb_build_object(
            'kind', i.kind, 'value', i.value, 'opted_out', i.opted_out_at IS NOT NULL,
            'bouncing', i.bouncing_at IS NOT NULL) ORDER BY i.created_at), '[]'::jsonb)
        FROM customer_identities i WHERE i.customer_id = {customer_id}) AS identities"""
PROFILE = """{cu}.id AS customer_id, {cu}.name, {cu}.preferred_channel, {cu}.fallback,
       {cu}.language, {cu}.timezone, {cu}.quiet_start, {cu}.quiet_end, {cu}.tier,
       {cu}.tags AS customer_tags, {cu}.last_channel"""

# Everything a snapshot holds, over a case row aliased `c` (a table, or a CTE that updated
# it and returned `*`, so the change and the snapshot of its result are one statement).
SNAPSHOT_SELECT = f"""
SELECT c.id, c.ref, c.subject, c.channel, c.status, c.reason_code, c.priority, c.team, c.tags,
       c.region, c.first_response_due, c.resolution_due, c.slack_thread,
       a.handle AS assignee,
       {PROFILE.format(cu="cu")},
       {IDENTITIES.format(customer_id="cu.id")},
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
            'role', p.role, 'user', u.handle, 'email', u.email, 'slack_user', u.slack_user)
            ORDER BY p.added_at), '[]'::jsonb)
        FROM case_participants p JOIN users u ON u.id = p.user_id
        WHERE p.case_id = c.id) AS participants,
       (SELECT array_agg(m.message_id ORDER BY m.created_at)
        FROM case_message_ids m WHERE m.case_id = c.id) AS message_ids,
       (SELECT m.message_id FROM case_message_ids m
        WHERE m.case_id = c.id AND m.direction = 'in'
        ORDER BY m.created_at DESC LIMIT 1) AS last_in
FROM {{cases}} c
JOIN customers cu ON cu.id = c.customer_id
LEFT JOIN users a ON a.id = c.assignee_id
"""

_SNAPSHOT = SNAPSHOT_SELECT.format(cases="cases") + "WHERE c.id = $1"

REFERENCES_KEPT = 20  # RFC 5322 lets References grow; mail clients cope with a trimmed tail


def _hhmm(value: time | None) -> str | None:
    return None if value is None else value.strftime("%H:%M")


def contact_from(row: Mapping[str, Any]) -> Contact:
    """The Contact in a snapshot, from a row selected with PROFILE and IDENTITIES."""
    first: dict[str, str] = {}
    opted_out: set[Channel] = set()
    bouncing: list[str] = []
    for ident in row["identities"]:
        first.setdefault(ident["kind"], ident["value"])
        if ident["opted_out"]:
            opted_out.add(Channel.SMS if ident["kind"] == "phone" else Channel(ident["kind"]))
        if ident["bouncing"]:
            bouncing.append(ident["value"])
    quiet = None
    if row["quiet_start"] is not None and row["quiet_end"] is not None:
        quiet = (_hhmm(row["quiet_start"]), _hhmm(row["quiet_end"]))
    preferred = row["preferred_channel"] or row["last_channel"]
    return Contact(
        customer_id=row["customer_id"],
        name=row["name"],
        email=first.get("email"),
        phone=first.get("phone"),
        slack_user=first.get("slack"),
        preferred_channel=Channel(preferred) if preferred else None,
        fallback=[Channel(c) for c in row["fallback"]],
        language=row["language"],
        timezone=row["timezone"],
        quiet_hours=quiet,
        opted_out=sorted(opted_out),
        bouncing=bouncing,
        tier=row["tier"],
        tags=list(row["customer_tags"]),
    )


async def load_snapshot(conn: asyncpg.Connection, case_id: int) -> CaseSnapshot:
    row = await conn.fetchrow(_SNAPSHOT, case_id)
    if row is None:
        raise LookupError(f"case {case_id} vanished inside its own transaction")
    return snapshot_from(row)


def snapshot_from(row: Mapping[str, Any]) -> CaseSnapshot:
    """The snapshot from a row selected with SNAPSHOT_SELECT."""
    return CaseSnapshot(
        ref=row["ref"],
        subject=row["subject"],
        channel=Channel(row["channel"]),
        status=row["status"],
        reason_code=row["reason_code"],
        priority=Priority(row["priority"]),
        team=row["team"],
        assignee=row["assignee"],
        tags=list(row["tags"]),
        region=row["region"],
        customer=contact_from(row),
        participants=[Participant(**p) for p in row["participants"]],
        first_response_due=row["first_response_due"],
        resolution_due=row["resolution_due"],
        last_customer_message_id=row["last_in"],
        references=list(row["message_ids"] or [])[-REFERENCES_KEPT:],
        slack_thread=row["slack_thread"],
    )


def opened_snapshot(
    ref: str, case: NewCase, profile: Mapping[str, Any], message_id: str | None, token: str
) -> CaseSnapshot:
    """The snapshot of a case that is being opened, from what its opening statement writes:
    nothing needs reading back (no team, participants or clocks yet; its only Message-ID is
    the customer's). Carries the customer's tracking token."""
    return CaseSnapshot(
        ref=ref,
        subject=case.subject,
        channel=case.channel,
        status=case.status.value,
        priority=case.priority,
        customer=contact_from(profile),
        last_customer_message_id=message_id,
        references=[message_id] if message_id else [],
        tracking_token=token,
    )
