"""Configuration layers: the user's global file and a project file found by walking up.

The global file (explicit path > $SCRIPTHUT_CONFIG > $XDG_CONFIG_HOME/scripthut/) holds the
infrastructure: backends and how to reach them, settings, pricing. A project file is the
nearest `scripthut.yaml` in the folder where work starts or one of its parents; it adds
workflows, sources, env rules and env groups, and may add env rules to a backend the global
file defines. Keys that define infrastructure are refused in it, each with its file, line
and where it belongs. Relative paths resolve against the folder of the file they are in.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scripthut.config.checks import Steps, line_of, needs_implicit_local, where
from scripthut.config.load import key_problems, read_yaml, validate
from scripthut.config.models import CONFIG_FILE_NAME, Config
from scripthut.errors import InvalidInput, Issue

GLOBAL, PROJECT = "global", "project"
NAMED_LISTS = ("workflows", "sources")  # merged by name; the project's entry wins
PROJECT_KEYS = frozenset(
    {"workflows", "sources", "env", "env_groups", "backends", "environments", "projects"}
)
PROJECT_BACKEND_KEYS = frozenset({"name", "env", "env_groups"})
_SSH_PATHS = ("key_path", "cert_path", "known_hosts")
_SETTINGS_PATHS = ("data_dir", "sources_cache_dir")

Stamp = tuple[int, int, int] | None  # (mtime_ns, size, inode) of a file, None if absent


def stamp(path: Path | None) -> Stamp:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


# --- Finding the files ----------------------------------------------------------------


def config_home() -> Path:
    configured = os.environ.get("XDG_CONFIG_HOME")
    return Path(configured) if configured else Path("~/.config").expanduser()


def global_candidate(explicit: str | Path | None = None) -> tuple[Path, bool]:
    """Where the global file is, and whether it was named (explicitly or by the env)."""
    if explicit is not None and str(explicit):
        return Path(explicit).expanduser().absolute(), True
    from_env = os.environ.get("SCRIPTHUT_CONFIG")
    if from_env:
        return Path(from_env).expanduser().absolute(), True
    return config_home() / "scripthut" / CONFIG_FILE_NAME, False


def find_config_path(explicit: str | Path | None = None) -> Path | None:
    """The global file: explicit > $SCRIPTHUT_CONFIG > $XDG_CONFIG_HOME/scripthut/."""
    path, named = global_candidate(explicit)
    return path if named or path.is_file() else None


def find_project_path(start: Path | None, exclude: Path | None = None) -> Path | None:
    """The nearest scripthut.yaml in `start` or a parent that is not the global file."""
    if start is None:
        return None
    folder = start.expanduser().absolute()
    for candidate in (folder, *folder.parents):
        path = candidate / CONFIG_FILE_NAME
        if path.is_file() and not _same(path, exclude):
            return path
    return None


def _same(path: Path, other: Path | None) -> bool:
    try:
        return other is not None and path.samefile(other)
    except OSError:
        return False


# --- One file -------------------------------------------------------------------------


@dataclass(slots=True)
class Layer:
    """One file as read: its data (relative paths made absolute) and YAML node tree."""

    kind: str
    path: Path
    data: dict[str, Any]
    root: yaml.Node | None


def read_layer(kind: str, path: Path, title: str) -> Layer:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput([Issue(str(path), "no such file", file=str(path))], title) from None
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        issue = Issue(str(path), f"cannot read: {detail}", file=str(path))
        raise InvalidInput([issue], title) from None
    data, root = read_yaml(text, title, str(path))
    if data is None:
        data, root = {}, None
    if not isinstance(data, dict):
        issue = Issue("top level", f"expected a mapping, got {type(data).__name__}", None)
        raise InvalidInput([Issue(issue.where, issue.message, file=str(path), line=1)], title)
    _anchor_paths(data, path.parent)
    return Layer(kind, path, data, root if isinstance(root, yaml.MappingNode) else None)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _anchor(value: object, folder: Path) -> object:
    if isinstance(value, str) and value and not value.startswith(("/", "~")):
        return str(folder / value)
    return value


def _anchor_paths(data: dict[str, Any], folder: Path) -> None:
    """Relative paths on this machine start at the folder of the file that names them."""
    settings = data.get("settings")
    if isinstance(settings, dict):
        for key in _SETTINGS_PATHS:
            if key in settings:
                settings[key] = _anchor(settings[key], folder)
    for entry in _list(data.get("backends")):
        if not isinstance(entry, dict):
            continue
        ssh = entry.get("ssh")
        if isinstance(ssh, dict):
            for key in _SSH_PATHS:
                if key in ssh:
                    ssh[key] = _anchor(ssh[key], folder)
        local = entry.get("type") == "local" or entry.get("transport") == "local"
        if local and "log_dir" in entry:
            entry["log_dir"] = _anchor(entry["log_dir"], folder)


# --- What a project file may not say ---------------------------------------------------


def refusals(layer: Layer, global_path: Path) -> list[Issue]:
    """Infrastructure keys in a project file (removed from its data), each located."""
    out: list[Issue] = []
    home = f"it belongs in the global file {global_path}"
    for key in [k for k in layer.data if k not in PROJECT_KEYS and k in Config.model_fields]:
        value = layer.data.pop(key)
        if key == "settings" and isinstance(value, dict) and value:
            for name in value:
                what = f"'settings.{name}' is a setting of the whole engine"
                out.append(_refuse(layer, ("settings", name), what, home))
        else:
            out.append(_refuse(layer, (key,), f"'{key}' defines infrastructure", home))
    backends = layer.data.get("backends")
    if isinstance(backends, list):
        for i, entry in enumerate(backends):
            if isinstance(entry, dict):
                out.extend(_backend_refusals(layer, i, entry, home))
    return out


def _backend_refusals(layer: Layer, i: int, entry: dict[str, Any], home: str) -> list[Issue]:
    name = entry.get("name")
    label = f"backend '{name}'" if isinstance(name, str) else f"backends[{i}]"
    out = []
    for key in [k for k in entry if k not in PROJECT_BACKEND_KEYS]:
        message = (
            f"'{key}' of {label} defines how to reach or size it; {home} "
            "(a project file may only add env and env_groups to a backend)"
        )
        out.append(_located(layer, ("backends", i, key), message, "backends"))
        del entry[key]
    return out


def _refuse(layer: Layer, steps: Steps, what: str, home: str) -> Issue:
    message = f"{what} and is not allowed in a project file; {home}"
    return _located(layer, steps, message, None)


def _located(layer: Layer, steps: Steps, message: str, anchor: str | None) -> Issue:
    line = line_of(layer.root, steps)
    place = where(steps[:-1], layer.data, line) if anchor else where(steps, layer.data, line)
    return Issue(f"{layer.path}: {place}", message, None, str(layer.path), line)


# --- Merging --------------------------------------------------------------------------


def _pairs(node: yaml.Node | None) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def _items(node: yaml.Node | None) -> list[yaml.Node]:
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _name(item: object) -> str | None:
    name = item.get("name") if isinstance(item, dict) else None
    return name if isinstance(name, str) else None


@dataclass(slots=True)
class _Side:
    data: Any
    node: yaml.Node | None


def _by_name(base: _Side, top: _Side) -> _Side:
    """A list merged by `name`: a top entry replaces the base one of that name in place."""
    base_items = base.data if isinstance(base.data, list) else []
    top_items = top.data if isinstance(top.data, list) else []
    base_nodes, top_nodes = _items(base.node), _items(top.node)
    top_named = {_name(item): i for i, item in enumerate(top_items) if _name(item)}
    data, nodes, used = [], [], set()
    for i, item in enumerate(base_items):
        j = top_named.get(_name(item)) if _name(item) else None
        if j is not None:
            used.add(j)
            data.append(top_items[j])
            nodes.append(_at(top_nodes, j))
        else:
            data.append(item)
            nodes.append(_at(base_nodes, i))
    for j, item in enumerate(top_items):
        if j not in used:
            data.append(item)
            nodes.append(_at(top_nodes, j))
    return _Side(data, _sequence(nodes, base.node or top.node))


def _concat(base: _Side, top: _Side) -> _Side:
    base_items = base.data if isinstance(base.data, list) else []
    top_items = top.data if isinstance(top.data, list) else []
    nodes = [*_items(base.node), *_items(top.node)]
    if len(nodes) != len(base_items) + len(top_items):
        nodes = []
    return _Side([*base_items, *top_items], _sequence(nodes, base.node or top.node))


def _by_key(base: _Side, top: _Side) -> _Side:
    base_map = base.data if isinstance(base.data, dict) else {}
    top_map = top.data if isinstance(top.data, dict) else {}
    pairs = {**_pairs(base.node), **_pairs(top.node)}
    return _Side({**base_map, **top_map}, _mapping(list(pairs.values()), base.node or top.node))


def _at(nodes: list[yaml.Node], i: int) -> yaml.Node | None:
    return nodes[i] if i < len(nodes) else None


def _sequence(nodes: Sequence[yaml.Node | None], like: yaml.Node | None) -> yaml.Node | None:
    """A merged list's node; it starts where the list it grew from does (file and line)."""
    if not nodes or any(n is None for n in nodes):
        return None
    items = [n for n in nodes if n is not None]
    mark = like.start_mark if like is not None else items[0].start_mark
    return yaml.SequenceNode("tag:yaml.org,2002:seq", items, mark, mark)


def _mapping(pairs: list[tuple[yaml.Node, yaml.Node]], like: yaml.Node | None) -> yaml.MappingNode:
    mark = like.start_mark if like is not None else pairs[0][0].start_mark if pairs else None
    return yaml.MappingNode("tag:yaml.org,2002:map", pairs, mark, mark)


def _key(name: str) -> yaml.ScalarNode:
    return yaml.ScalarNode("tag:yaml.org,2002:str", name)


def _overlay_backends(base: _Side, top: _Side) -> _Side:
    """Project entries add env rules and env groups to the global backend of their name."""
    data = [copy.copy(e) if isinstance(e, dict) else e for e in _list(base.data)]
    nodes = _items(base.node)
    by_name = {_name(e): i for i, e in enumerate(data) if _name(e)}
    for j, extra in enumerate(top.data if isinstance(top.data, list) else []):
        i = by_name.get(_name(extra)) if _name(extra) else None
        if i is None:
            continue
        entry, node = data[i], _at(nodes, i)
        extra_node = _at(_items(top.node), j)
        pairs = _pairs(node)
        for key, merge in (("env", _concat), ("env_groups", _by_key)):
            if key not in extra:
                continue
            base_pair = pairs.get(key)
            top_pair = _pairs(extra_node).get(key)
            combined = merge(
                _Side(entry.get(key), base_pair[1] if base_pair else None),
                _Side(extra[key], top_pair[1] if top_pair else None),
            )
            entry[key] = combined.data
            if combined.node is not None:
                key_node = base_pair[0] if base_pair else top_pair[0] if top_pair else _key(key)
                pairs[key] = (key_node, combined.node)
        if node is not None and i < len(nodes):
            nodes[i] = _mapping(list(pairs.values()), node)
    merged = _sequence(list(nodes), base.node) if len(nodes) == len(data) else None
    return _Side(data, merged)


def unknown_backends(layer: Layer, names: set[str], global_path: Path) -> list[Issue]:
    """Project backend entries that name no backend of the global file."""
    out = []
    for i, entry in enumerate(_list(layer.data.get("backends"))):
        name = _name(entry)
        if name is not None and name in names:
            continue
        what = f"backend '{name}'" if name else "a backend entry without a name"
        message = (
            f"{what} is not defined in the global file {global_path}; backends are defined "
            "there (a project entry names one of them to add env and env_groups to it)"
        )
        out.append(_located(layer, ("backends", i), message, None))
    if out:
        layer.data.pop("backends", None)
    return out


_MERGES = {
    "workflows": _by_name,
    "sources": _by_name,
    "env": _concat,
    "environments": _concat,
    "projects": _concat,
    "env_groups": _by_key,
    "backends": _overlay_backends,
}


def merge(base: Layer | None, top: Layer | None) -> tuple[dict[str, Any], yaml.Node | None]:
    """The data and node tree of `top` laid over `base` (either may be missing)."""
    if top is None or base is None:
        only = top or base
        return (copy.deepcopy(only.data), only.root) if only else ({}, None)
    data = copy.deepcopy(base.data)
    pairs = _pairs(base.root)
    top_pairs = _pairs(top.root)
    for key, value in copy.deepcopy(top.data).items():
        mine, theirs = pairs.get(key), top_pairs.get(key)
        merged = _MERGES.get(key, lambda b, t: t)(
            _Side(data.get(key), mine[1] if mine else None),
            _Side(value, theirs[1] if theirs else None),
        )
        data[key] = merged.data
        key_node = mine[0] if mine else theirs[0] if theirs else _key(key)
        if merged.node is not None:
            pairs[key] = (key_node, merged.node)
        else:
            pairs.pop(key, None)
    return data, _mapping(list(pairs.values()), base.root or top.root)


def iter_names(data: dict[str, Any], key: str) -> Iterator[str]:
    for item in _list(data.get(key)):
        name = _name(item)
        if name is not None:
            yield name


def build(global_layer: Layer | None, project: Layer | None, global_path: Path) -> Config:
    """Validate the merge of the two layers; every problem of both files at once."""
    layers = [layer for layer in (global_layer, project) if layer is not None]
    if len(layers) < 2 and (project is None or not _infrastructure(project)):
        only = layers[0] if layers else None
        data, root = (copy.deepcopy(only.data), only.root) if only else ({}, None)
        source = str(only.path) if only else "<config>"
        config = validate(data, source, root)
    else:
        issues = [issue for layer in layers for issue in key_problems(layer.data, layer.root)]
        if project is not None:
            issues += refusals(project, global_path)
            names = _backend_names(global_layer)
            issues += unknown_backends(project, names, global_path)
        data, root = merge(global_layer, project)
        title = "invalid configuration"
        config = validate(data, title, root, title=title, issues=issues, keys_checked=True)
    config.source_path = layers[0].path if layers else None
    config.origin = (data, root)
    return config


def _backend_names(layer: Layer | None) -> set[str]:
    entries = _list(layer.data.get("backends")) if layer else []
    pairs = [(e.get("name"), e.get("type")) for e in entries if isinstance(e, dict)]
    implicit = {"local"} if needs_implicit_local(pairs) else set()
    return {name for name, _ in pairs if isinstance(name, str)} | implicit


def _infrastructure(layer: Layer) -> bool:
    """Whether a project file says anything a project file may not (checked in full then)."""
    data = layer.data
    return any(k not in PROJECT_KEYS for k in data) or "backends" in data
