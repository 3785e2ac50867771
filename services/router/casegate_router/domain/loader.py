"""Reading policy files (rules, SLA, teams): YAML in, a validated model out, or errors with
lines.

The people who edit these files are support leads, not programmers, so every problem names
the file, the line and the field ("config/rules.yaml:12: rules[1].when.keywrds: unknown
field"). Validation errors come from pydantic with a location such as ("rules", 1, "when");
the YAML node tree kept from parsing maps that location back to a line.

A validation context carries what one file needs from another: the rules use the SLA file's
policy and region names and its calendars; the teams file uses its region names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .rules import RuleSet
from .sla import SlaConfig
from .teams import TeamsConfig

M = TypeVar("M", bound=BaseModel)

Location = Sequence[int | str]

# pydantic's wording where it would puzzle someone editing YAML.
_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "model_type": "expected fields (name: value lines or {name: value})",
    "list_type": "expected a list ([a, b] or one `- item` per line)",
    "string_type": "expected text (YAML reads yes, no, on, off and numbers otherwise: quote them)",
    "dict_type": "expected fields (name: value lines or {name: value})",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
}


class Problem(NamedTuple):
    line: int | None
    field: str
    message: str

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class RulesError(Exception):
    """A policy file (rules, SLA or teams) that cannot be used; str() gives one line per
    problem. `kind` says which file it is."""

    def __init__(self, source: str, problems: list[Problem], kind: str = "rules") -> None:
        self.source = source
        self.problems = problems
        self.kind = kind
        super().__init__("\n".join(p.render(source) for p in problems))


def version_of(text: str) -> str:
    """What a decision names as the rules version: the file text's sha256, 12 hex digits."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def read_text(path: Path | str, kind: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = Problem(None, "", f"cannot read the file: {reason}")
        raise RulesError(str(path), [problem], kind) from None


def load_rules(path: Path | str, context: Mapping[str, Any] | None = None) -> RuleSet:
    return parse_rules(read_text(path, "rules"), source=str(path), context=context)


def parse_rules(
    text: str, *, source: str = "<rules>", context: Mapping[str, Any] | None = None
) -> RuleSet:
    """`context` may carry calendars, default_sla_policy, sla_policies, regions (see rules)."""
    full = {**(context or {}), "version": version_of(text)}
    return parse_model(
        text, RuleSet, source=source, context=full, kind="rules",
        empty="the file is empty; it needs `rules:` and `default:`",
    )


def parse_sla(text: str, *, source: str = "<sla>") -> SlaConfig:
    return parse_model(
        text, SlaConfig, source=source, kind="SLA",
        empty="the file is empty; it needs `regions:`, `default_region:`, `policies:` and "
        "`default_policy:`",
    )


def load_sla(path: Path | str) -> SlaConfig:
    return parse_sla(read_text(path, "SLA"), source=str(path))


def parse_teams(
    text: str, *, source: str = "<teams>", context: Mapping[str, Any] | None = None
) -> TeamsConfig:
    """`context` may carry `regions` (the SLA file's region names) to check members by."""
    return parse_model(
        text, TeamsConfig, source=source, context=context, kind="teams",
        empty="the file is empty; it needs `teams:`",
    )


def load_teams(path: Path | str, context: Mapping[str, Any] | None = None) -> TeamsConfig:
    return parse_teams(read_text(path, "teams"), source=str(path), context=context)


def parse_model(
    text: str,
    model: type[M],
    *,
    source: str,
    kind: str,
    empty: str,
    context: Mapping[str, Any] | None = None,
) -> M:
    root, data = _parse_yaml(text, source, kind)
    problems = _duplicate_keys(root) if root is not None else []
    if data is None:
        problems.append(Problem(1, "", empty))
    else:
        try:
            parsed = model.model_validate(data, context=dict(context or {}))
        except ValidationError as exc:
            problems.extend(_problem(root, err) for err in exc.errors())
        else:
            if not problems:
                return parsed
    problems.sort(key=lambda p: p.line or 0)
    raise RulesError(source, problems, kind)


def _parse_yaml(text: str, source: str, kind: str) -> tuple[yaml.Node | None, Any]:
    """Parse once, keeping both the node tree (for lines) and the plain data."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "not valid YAML"
        raise RulesError(source, [Problem(line, "", f"not valid YAML: {problem}")], kind) from None
    except yaml.YAMLError as exc:
        raise RulesError(source, [Problem(None, "", f"not valid YAML: {exc}")], kind) from None
    finally:
        loader.dispose()


def _duplicate_keys(root: yaml.Node) -> list[Problem]:
    """YAML lets a later key silently replace an earlier one; in a rules file that is a typo."""
    found: list[Problem] = []
    visited: set[int] = set()  # anchors and aliases share nodes, and may even form a cycle

    def walk(node: yaml.Node, path: tuple[int | str, ...]) -> None:
        if id(node) in visited:
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                line = key.start_mark.line + 1
                if name is not None and name in seen:
                    message = f"duplicate key, also set at line {seen[name]}"
                    found.append(Problem(line, _field((*path, name)), message))
                if name is not None:
                    seen.setdefault(name, line)
                walk(value, (*path, name if name is not None else "?"))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    walk(root, ())
    return found


def _problem(root: yaml.Node | None, err: ErrorDetails) -> Problem:
    loc: Location = err["loc"]
    ctx = err.get("ctx") or {}
    if err["type"] == "duplicate_rule_name":
        loc = ("rules", ctx["index"], "name")
    message = _MESSAGES.get(err["type"], err["msg"]).removeprefix("Value error, ")
    return Problem(_line_of(root, loc), _field(loc), message)


def _line_of(root: yaml.Node | None, loc: Location) -> int:
    """The line of the deepest node on `loc`: the key for mappings, the item for lists."""
    if root is None:
        return 1
    node, line = root, root.start_mark.line
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


def _field(loc: Location) -> str:
    """("rules", 1, "when", "keywords") -> "rules[1].when.keywords"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
