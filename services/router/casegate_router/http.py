"""The rules dry run: POST a message, learn which team it would go to, and why.

400 when the body is not JSON, 422 with one message per field when the fields are wrong; the
answer carries the same explanation a routed case gets, the SLA policy and assignment
strategy decided, and the version of the rules file that decided it. Everything but the
channel is optional; without `at`, business hours are judged at the time of the request.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from casegate_shared.events import Channel, Priority

from .domain import Message, decide
from .domain.policies import PoliciesProvider

log = logging.getLogger(__name__)


class ExplainRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    channel: Channel
    subject: str = Field("", max_length=2000)
    body: str = ""
    sender_email: str | None = Field(None, max_length=320)
    sender_phone: str | None = Field(None, max_length=40, description="E.164, e.g. +4930123456")
    customer_tags: list[str] = Field(default_factory=list, max_length=100)
    customer_tier: str | None = Field(None, max_length=64)
    region: str | None = Field(None, max_length=64)
    priority: Priority | None = None
    at: AwareDatetime | None = None

    def message(self) -> Message:
        return Message(
            channel=self.channel,
            subject=self.subject,
            body=self.body,
            sender_email=self.sender_email,
            sender_phone=self.sender_phone,
            customer_tags=frozenset(self.customer_tags),
            customer_tier=self.customer_tier,
            region=self.region,
            priority=self.priority,
            at=self.at or datetime.now(UTC),
        )


def _field_errors(exc: ValidationError) -> dict[str, str]:
    fields: dict[str, str] = {}
    for err in exc.errors():
        name = ".".join(str(part) for part in err["loc"]) or "(body)"
        fields.setdefault(name, err["msg"])
    return fields


def routes(policies: PoliciesProvider) -> list[web.RouteDef]:
    async def explain(request: web.Request) -> web.Response:
        raw = await request.read()  # over the app's client_max_size: 413 from aiohttp
        try:
            asked = ExplainRequest.model_validate_json(raw)
        except ValidationError as exc:
            if any(err["type"] == "json_invalid" for err in exc.errors()):
                log.info("explain: body is not JSON")
                return web.json_response({"error": "the body is not valid JSON"}, status=400)
            fields = _field_errors(exc)
            log.info("explain: invalid fields", extra={"fields": sorted(fields)})
            return web.json_response({"error": "invalid fields", "fields": fields}, status=422)
        decision = decide(policies().rules, asked.message())
        return web.json_response(
            {
                "team": decision.team,
                "priority": decision.priority.value,
                "rule": decision.rule,
                "tags": decision.tags,
                "sla_policy": decision.sla_policy,
                "assignment": decision.assignment.value if decision.assignment else None,
                "rules_version": decision.rules_version,
                "explanation": [v.model_dump() for v in decision.explanation],
            }
        )

    return [web.post("/v1/rules/explain", explain)]
