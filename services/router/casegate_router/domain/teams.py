"""The teams file: each team's Slack channel, escalation group, assignment strategy and
members (region, skills, caps per channel). Validated like the rules: file, line and field.

Members' regions must be regions of the SLA file (passed in the validation context as
`regions`); without that context (checking the teams file alone) they are not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, StringConstraints, ValidationInfo, field_validator, model_validator

from casegate_shared.events import Channel

from .assignment import Agent, Strategy
from .models import Strict

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Handle = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
]
# A channel name as typed ("#billing") or a channel id ("C0123ABCD").


def known_regions(info: ValidationInfo) -> frozenset[str] | None:
    context: Any = info.context
    regions = context.get("regions") if isinstance(context, Mapping) else None
    return None if regions is None else frozenset(regions)


class Member(Strict):
    handle: Handle
    region: Name
    skills: list[Name] = Field(default_factory=list)
    caps: dict[Channel, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="Most open cases per channel; missing: no cap"
    )

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str, info: ValidationInfo) -> str:
        regions = known_regions(info)
        if regions is not None and value not in regions:
            known = ", ".join(sorted(regions))
            raise ValueError(f"unknown region {value!r} (the SLA file has {known})")
        return value

    def agent(self, open_cases: Mapping[Channel, int]) -> Agent:
        return Agent(self.handle, self.region, frozenset(self.skills), dict(self.caps), open_cases)


# Where a team hears of its cases is the notifier's business (its policy file's `teams:` and
# `escalation_group:`); named here they would be checked and then never used.
_NOTIFIER_FIELDS = ("slack_channel", "escalation_group")


class Team(Strict):
    assignment: Strategy = Strategy.LEAST_OPEN
    members: list[Member] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _no_destinations(cls, data: Any) -> Any:
        if isinstance(data, dict) and (found := [f for f in _NOTIFIER_FIELDS if f in data]):
            raise ValueError(f"{', '.join(found)}: a team's channel and escalation group belong "
                             "in the notifier's policy file (config/notify.yaml, teams:)")
        return data

    @model_validator(mode="after")
    def _unique_handles(self) -> Team:
        seen: set[str] = set()
        for member in self.members:
            if member.handle in seen:
                raise ValueError(f"{member.handle} is listed twice")
            seen.add(member.handle)
        return self

    def roster(self, open_cases: Mapping[str, Mapping[Channel, int]]) -> list[Agent]:
        """The members as the assigner sees them, with their open cases right now."""
        return [m.agent(open_cases.get(m.handle, {})) for m in self.members]


class TeamsConfig(Strict):
    teams: dict[Name, Team] = Field(default_factory=dict)

    @field_validator("teams", mode="before")
    @classmethod
    def _empty(cls, value: object) -> object:
        return {} if value is None else value
