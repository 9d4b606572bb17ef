"""Cross checks of scripthut.yaml (names, references) and where a problem is (path, line).

Pure functions over the parsed YAML data and node tree: nothing here knows the models, so the
models can run these checks themselves (`Config._complete`) without an import cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import yaml

from scripthut.errors import Issue, did_you_mean

CHECKED = "scripthut.config.cross_checked"


def not_found(noun: str, name: str, names: list[str]) -> str:
    known = ", ".join(names) if names else f"no {noun}s are configured"
    return f"no {noun} named '{name}'{suggestion(name, names)} (configured: {known})"


def suggestion(word: str, choices: Sequence[str]) -> str:
    return did_you_mean(word, choices)


# --- Cross checks: names and references -----------------------------------------------

Step = str | int
Steps = tuple[Step, ...]


class Problem(NamedTuple):
    """A problem at `steps`; its line is that of `anchor` (default `steps`) or `line`."""

    steps: Steps
    message: str
    field: str | None = None
    anchor: Steps | None = None
    line: int | None = None

    def issue(self, data: object, root: yaml.Node | None) -> tuple[int | None, Issue]:
        steps = self.steps if self.anchor is None else self.anchor
        line = self.line or line_of(root, steps)
        file = file_of(root, steps)
        return line, Issue(where(self.steps, data, line), self.message, self.field, file, line)


def _entries(data: Mapping[str, Any], key: str) -> list[tuple[int, dict[str, Any]]]:
    items = data.get(key)
    if not isinstance(items, list):
        return []
    return [(i, item) for i, item in enumerate(items) if isinstance(item, dict)]


def needs_implicit_local(names_and_types: Iterable[tuple[object, object]]) -> bool:
    return not any(name == "local" or kind == "local" for name, kind in names_and_types)


def _backend_names(data: Mapping[str, Any]) -> list[str]:
    entries = [item for _, item in _entries(data, "backends")]
    names = [item["name"] for item in entries if isinstance(item.get("name"), str)]
    if needs_implicit_local([(item.get("name"), item.get("type")) for item in entries]):
        names.append("local")
    return list(dict.fromkeys(names))


def _duplicate_names(data: Mapping[str, Any], key: str, noun: str) -> Iterator[Problem]:
    first: dict[str, int] = {}
    for i, item in _entries(data, key):
        name = item.get("name")
        if not isinstance(name, str):
            continue
        if name in first:
            message = f"duplicate {noun} name '{name}' (first used by {key}[{first[name]}])"
            yield Problem((key, i), message, "name", (key, i, "name"))
        else:
            first[name] = i


def _unknown_backends(data: Mapping[str, Any], key: str, names: list[str]) -> Iterator[Problem]:
    for i, item in _entries(data, key):
        ref = item.get("backend")
        if isinstance(ref, str) and ref not in names:
            message = f"no backend named '{ref}'{suggestion(ref, names)}"
            message += f" (configured: {', '.join(names)})"
            yield Problem((key, i), message, "backend", (key, i, "backend"))


def cross_problems(data: object) -> list[Problem]:
    """Duplicate names and references to backends that do not exist."""
    if not isinstance(data, Mapping):
        return []
    names = _backend_names(data)
    return [
        *_duplicate_names(data, "backends", "backend"),
        *_duplicate_names(data, "sources", "source"),
        *_duplicate_names(data, "workflows", "workflow"),
        *_unknown_backends(data, "sources", names),
        *_unknown_backends(data, "workflows", names),
        *_duplicate_names(data, "projects", "project"),
        *_unknown_backends(data, "projects", names),
    ]


# --- Locations: pydantic loc -> readable path and YAML line ---------------------------


def clean_loc(loc: Sequence[Step], data: object) -> Steps:
    """Drop pydantic's union labels (a backend's type, 'str', ...) that are not YAML keys."""
    steps: list[Step] = []
    current = data
    for position, elem in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(current, list) and isinstance(elem, int):
            current = current[elem] if 0 <= elem < len(current) else None
        elif isinstance(current, dict):
            if elem not in current and (elem == current.get("type") or not last):
                continue
            current = current.get(elem)
        elif steps:
            break
        steps.append(elem)
    return tuple(steps)


def _child_data(current: object, step: Step) -> object:
    if isinstance(current, list) and isinstance(step, int) and 0 <= step < len(current):
        return current[step]
    return current.get(step) if isinstance(current, dict) else None


def where(steps: Steps, data: object, line: int | None) -> str:
    """A readable path such as `backends[1] (hpc).ssh (line 7)`."""
    parts: list[str] = []
    current = data
    for step in steps:
        current = _child_data(current, step)
        if isinstance(step, str):
            parts.append(f".{step}" if parts else step)
            continue
        parts.append(f"[{step}]")
        name = current.get("name") if isinstance(current, dict) else None
        if isinstance(name, str):
            parts.append(f" ({name})")
    text = "".join(parts) or "top level"
    return f"{text} (line {line})" if line else text


def _child_node(node: yaml.Node, step: Step) -> tuple[yaml.Node, int] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in reversed(node.value):
            if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                return value, key.start_mark.line + 1
    is_index = isinstance(step, int) and step >= 0
    if isinstance(node, yaml.SequenceNode) and is_index and int(step) < len(node.value):
        item = node.value[int(step)]
        return item, item.start_mark.line + 1
    return None


def file_of(root: yaml.Node | None, steps: Steps) -> str | None:
    """The file the deepest node of `steps` was read from (its mark's name), if a file."""
    node = root
    for step in steps:
        found = _child_node(node, step) if node is not None else None
        if found is None:
            break
        node = found[0]
    name = node.start_mark.name if node is not None else None
    return name if name and not name.startswith("<") else None


def line_of(root: yaml.Node | None, steps: Steps) -> int | None:
    """The line of the deepest node of `steps` that exists in the YAML."""
    node, line = root, None
    for step in steps:
        found = _child_node(node, step) if node is not None else None
        if found is None:
            break
        node, line = found
    return line
