"""Reading a notification policy file: YAML in, a validated `Policy` out, or one line per problem
naming the file, the line and the field ("config/notify.yaml:14: rules[2].to[0]: ...").

The YAML node tree kept from parsing maps pydantic's error locations back to lines; a key given
twice in one mapping (which YAML would silently let the later one win) is a problem too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import ValidationError

from .policy import Policy

_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "invalid_key": "a key YAML reads as true, false or a number (on, off, yes, no): quote it",
    "literal_error": "not a known role",
    "string_type": "expected text (YAML reads yes, no, on, off and numbers otherwise: quote them)",
}


_RULE_AT = re.compile(r"rules\[(\d+)\]")


class Problem(NamedTuple):
    line: int | None
    field: str
    message: str

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}:{' ' + self.field + ':' if self.field else ''} {self.message}"


class PolicyError(Exception):
    """A policy file that cannot be used; str() gives one line per problem."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


def load_policy(path: Path | str) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = Problem(None, "", f"cannot read the file: {reason}")
        raise PolicyError(str(path), [problem]) from None
    return parse_policy(text, source=str(path))


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = Problem(line, "", f"not valid YAML: {exc.problem or exc.context}")
        raise PolicyError(source, [problem]) from None
    except yaml.YAMLError as exc:
        raise PolicyError(source, [Problem(None, "", f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    problems = _duplicate_keys(root) if root is not None else []
    if not isinstance(data, dict):
        problems.append(Problem(1, "", "expected a mapping with at least `rules:`"))
        raise PolicyError(source, problems)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc: Sequence[int | str] = err["loc"]
            message = _MESSAGES.get(err["type"], err["msg"]).removeprefix("Value error, ")
            if not loc and (m := _RULE_AT.match(message)):  # a whole-policy check names its rule
                loc, message = ("rules", int(m[1])), message[m.end() :].lstrip(" :")
            line, key = _locate(root, loc)
            if err["type"] == "invalid_key" and key is not None:
                loc = (*loc[:-1], key)  # say `on`, as written, not the boolean YAML made of it
            problems.append(Problem(line, _field(loc), message))
    if problems:
        problems.sort(key=lambda p: p.line or 0)
        raise PolicyError(source, problems)
    return policy


def _duplicate_keys(root: yaml.Node) -> list[Problem]:
    found: list[Problem] = []
    visited: set[int] = set()  # anchors and aliases share nodes

    def walk(node: yaml.Node, path: tuple[int | str, ...]) -> None:
        if id(node) in visited:
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                line = key.start_mark.line + 1
                if name in seen:
                    message = f"duplicate key, also at line {seen[name]}"
                    found.append(Problem(line, _field((*path, name)), message))
                seen.setdefault(name, line)
                walk(value, (*path, name))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    walk(root, ())
    return found


def _key_is(key: yaml.Node, part: int | str) -> bool:
    if not isinstance(key, yaml.ScalarNode):
        return False
    if key.tag.endswith(":bool") and not isinstance(part, str):  # on/off/yes/no read as booleans
        return (key.value.lower() in ("yes", "y", "true", "on")) == bool(part)
    return str(key.value) == str(part)


def _locate(root: Any, loc: Sequence[int | str]) -> tuple[int, str | None]:
    """The line of the deepest node on `loc` (the key for mappings, the item for lists), and
    the key as written there."""
    if root is None:
        return 1, None
    node, line, key_text = root, root.start_mark.line, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if _key_is(k, part)), None)
            if pair is None:
                break
            line, node, key_text = pair[0].start_mark.line, pair[1], str(pair[0].value)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line, key_text = node.start_mark.line, None
        else:
            break
    return line + 1, key_text


def _field(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
