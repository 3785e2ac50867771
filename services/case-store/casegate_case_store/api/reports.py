"""The supervisor's summary: volumes, response and resolution times, SLA compliance and
backlog, as JSON or as CSV for a spreadsheet."""

from __future__ import annotations

import csv
import io
from typing import Any

from aiohttp import web

from ..store.users import Role
from .models import ReportQuery, Summary
from .routing import Api, Call, NoInput

api = Api()

_RANGE = "($1::timestamptz IS NULL OR created_at >= $1) AND ($2::timestamptz IS NULL OR created_at < $2)"
_TOTALS = f"""
SELECT count(*) AS total,
       count(*) FILTER (WHERE status NOT IN ('resolved', 'closed')) AS backlog,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM first_response_at - created_at))
           AS first_response_median_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM first_response_at - created_at))
           AS first_response_p90_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - created_at))
           AS resolution_median_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - created_at))
           AS resolution_p90_s,
       count(first_response_due) + count(resolution_due) AS clocks,
       count(*) FILTER (WHERE first_response_breached)
           + count(*) FILTER (WHERE resolution_breached) AS breaches
FROM cases WHERE merged_into_id IS NULL AND {_RANGE}
"""


async def _counts(call: Call[ReportQuery, NoInput], column: str) -> dict[str, int]:
    rows = await call.pool.fetch(
        f"SELECT coalesce({column}, '(none)') AS k, count(*) AS n FROM cases "
        f"WHERE merged_into_id IS NULL AND {_RANGE} GROUP BY 1 ORDER BY 1",
        call.query.created_from, call.query.created_to,
    )
    return {r["k"]: r["n"] for r in rows}


async def summary_of(call: Call[ReportQuery, NoInput]) -> Summary:
    totals = await call.pool.fetchrow(_TOTALS, call.query.created_from, call.query.created_to)
    clocks, breaches = totals["clocks"], totals["breaches"]
    return Summary(
        total=totals["total"],
        backlog=totals["backlog"],
        by_channel=await _counts(call, "channel"),
        by_team=await _counts(call, "team"),
        by_status=await _counts(call, "status"),
        first_response_median_s=totals["first_response_median_s"],
        first_response_p90_s=totals["first_response_p90_s"],
        resolution_median_s=totals["resolution_median_s"],
        resolution_p90_s=totals["resolution_p90_s"],
        sla_compliance=None if not clocks else round(1 - breaches / clocks, 4),
    )


def as_csv(summary: Summary) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["metric", "key", "value"])
    data: dict[str, Any] = summary.model_dump()
    for metric, value in data.items():
        if isinstance(value, dict):
            for key, count in value.items():
                writer.writerow([metric, key, count])
        else:
            writer.writerow([metric, "", "" if value is None else value])
    return out.getvalue()


@api.route("GET", "/v1/reports/summary", roles={Role.SUPERVISOR, Role.ADMIN}, tag="reports",
           query=ReportQuery, response=Summary, raw_response="text/csv",
           summary="Volumes by channel, team and status; response and resolution times; SLA")
async def report_summary(call: Call[ReportQuery, NoInput]) -> Summary | web.Response:
    summary = await summary_of(call)
    if call.query.format == "csv":
        return web.Response(
            text=as_csv(summary), content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="casegate-summary.csv"'},
        )
    return summary
