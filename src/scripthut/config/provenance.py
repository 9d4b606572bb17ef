"""The merged configuration as a list of keys, each with the file and line it came from.

The validated config is walked beside the merged data and YAML node tree it was read from:
a key the files wrote carries its file and line, a key they left out is a default, and a
value the models rewrote (an env rule's short form) carries the line of what was written.
Values that look secret are masked (`secrets.py`), as everywhere else.
"""

from __future__ import annotations

from typing import Any

import yaml

from scripthut.config.models import Config
from scripthut.secrets import MASK, looks_secret, mask_urls

_MISSING = object()
Origin = tuple[str | None, int | None]
_DEFAULT: Origin = (None, None)


def entries(config: Config) -> list[dict[str, Any]]:
    """Every leaf key of the merged config: `key`, `value`, `file`, `line` (None: default)."""
    data, root = config.origin or ({}, None)
    dump = config.model_dump(mode="json", by_alias=True)
    out: list[dict[str, Any]] = []
    _walk(dump, data, root if isinstance(root, yaml.Node) else None, "", _DEFAULT, out)
    return out


def _origin(node: yaml.Node | None) -> Origin:
    if node is None or node.start_mark is None:
        return _DEFAULT
    name = node.start_mark.name
    return (name if name and not name.startswith("<") else None), node.start_mark.line + 1


def _child_path(path: str, step: str | int, value: object) -> str:
    if isinstance(step, int):
        name = value.get("name") if isinstance(value, dict) else None
        return f"{path}[{name if isinstance(name, str) else step}]"
    return f"{path}.{step}" if path else step


def _walk(
    value: object,
    raw: object,
    node: yaml.Node | None,
    path: str,
    inherited: Origin,
    out: list[dict[str, Any]],
) -> None:
    if isinstance(value, dict) and value:
        _walk_mapping(value, raw, node, path, inherited, out)
    elif isinstance(value, list) and value:
        _walk_list(value, raw, node, path, inherited, out)
    else:
        file, line = inherited
        out.append({"key": path, "value": _masked(path, value), "file": file, "line": line})


def _walk_mapping(
    value: dict[str, Any],
    raw: object,
    node: yaml.Node | None,
    path: str,
    inherited: Origin,
    out: list[dict[str, Any]],
) -> None:
    pairs = (
        {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}
        if isinstance(node, yaml.MappingNode)
        else {}
    )
    for key, child in value.items():
        child_path = _child_path(path, key, child)
        if isinstance(raw, dict):
            if key not in raw:
                _walk(child, _MISSING, None, child_path, _DEFAULT, out)
                continue
            pair = pairs.get(key)
            origin = _origin(pair[0]) if pair else inherited
            _walk(child, raw[key], pair[1] if pair else None, child_path, origin, out)
        else:  # rewritten by the models, or not in any file: the parent's origin
            _walk(child, _MISSING, None, child_path, inherited, out)


def _walk_list(
    value: list[Any],
    raw: object,
    node: yaml.Node | None,
    path: str,
    inherited: Origin,
    out: list[dict[str, Any]],
) -> None:
    nodes = node.value if isinstance(node, yaml.SequenceNode) else []
    for i, child in enumerate(value):
        child_path = _child_path(path, i, child)
        if isinstance(raw, list) and i < len(raw):
            item = nodes[i] if i < len(nodes) else None
            origin = _origin(item) if item is not None else inherited
            _walk(child, raw[i], item, child_path, origin, out)
        else:  # added by the models (the implicit local backend, a 0.3 section)
            _walk(
                child, _MISSING, None, child_path, inherited if raw is _MISSING else _DEFAULT, out
            )


def _masked(path: str, value: object) -> object:
    last = path.rsplit(".", 1)[-1]
    if isinstance(value, str):
        return MASK if looks_secret(last) and value else mask_urls(value)
    return value
