"""The rules dry run: POST a message, learn which team it would go to, and why.

400 when the body is not JSON, 422 with one message per field when the fields are wrong; the
answer carries the same explanation a routed case gets.
"""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from casegate_shared.events import Channel

from .domain import Message, RulesProvider, decide

log = logging.getLogger(__name__)


class ExplainRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    channel: Channel
    subject: str = Field("", max_length=2000)
    body: str = ""


def _field_errors(exc: ValidationError) -> dict[str, str]:
    fields: dict[str, str] = {}
    for err in exc.errors():
        name = ".".join(str(part) for part in err["loc"]) or "(body)"
        fields.setdefault(name, err["msg"])
    return fields


def routes(rules: RulesProvider) -> list[web.RouteDef]:
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
        decision = decide(rules(), Message(asked.channel, asked.subject, asked.body))
        return web.json_response(
            {
                "team": decision.team,
                "priority": decision.priority.value,
                "rule": decision.rule,
                "tags": decision.tags,
                "explanation": [v.model_dump() for v in decision.explanation],
            }
        )

    return [web.post("/v1/rules/explain", explain)]
