"""Reading a rules file: YAML in, a validated and compiled RuleSet out, or errors with lines.

The people who edit rules files are support leads, not programmers, so every problem names
the file, the line and the field ("config/rules.yaml:12: rules[1].when.keywrds: unknown
field"). Validation errors come from pydantic with a location such as ("rules", 1, "when");
the YAML node tree kept from parsing maps that location back to a line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .rules import RuleSet

Location = Sequence[int | str]

# pydantic's wording where it would puzzle someone editing YAML.
_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "model_type": "expected fields (name: value lines or {name: value})",
    "list_type": "expected a list ([a, b] or one `- item` per line)",
    "string_type": "expected text (YAML reads yes, no, on, off and numbers otherwise: quote them)",
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
    """A rules file that cannot be used; str() gives one line per problem."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


def load_rules(path: Path | str) -> RuleSet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = Problem(None, "", f"cannot read the file: {reason}")
        raise RulesError(str(path), [problem]) from None
    return parse_rules(text, source=str(path))


def parse_rules(text: str, *, source: str = "<rules>") -> RuleSet:
    root, data = _parse_yaml(text, source)
    problems = _duplicate_keys(root) if root is not None else []
    if data is None:
        problems.append(Problem(1, "", "the file is empty; it needs `rules:` and `default:`"))
    else:
        try:
            ruleset = RuleSet.model_validate(data)
        except ValidationError as exc:
            problems.extend(_problem(root, err) for err in exc.errors())
        else:
            if not problems:
                return ruleset
    problems.sort(key=lambda p: p.line or 0)
    raise RulesError(source, problems)


def _parse_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """Parse once, keeping both the node tree (for lines) and the plain data."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "not valid YAML"
        raise RulesError(source, [Problem(line, "", f"not valid YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise RulesError(source, [Problem(None, "", f"not valid YAML: {exc}")]) from None
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
