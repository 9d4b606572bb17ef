"""Finding, reading and validating scripthut.yaml; every problem is reported at once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from scripthut.config.checks import CHECKED, Problem, Steps, cross_problems
from scripthut.config.issues import error_problem
from scripthut.config.legacy import warn_legacy
from scripthut.config.models import Config
from scripthut.errors import InvalidInput, Issue


def _bool_key(text: str) -> str:
    return (
        f"key '{text}' is read by YAML as a boolean, not as the word; "
        f"quote it if you mean the word ('{text}':)"
    )


def _yaml_keys(node: yaml.Node | None, steps: Steps, seen: set[int]) -> Iterator[Problem]:
    """Keys given twice in one mapping, and YAML 1.1 booleans used as keys (on:, yes:, OFF:)."""
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _yaml_keys(item, (*steps, i), seen)
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag.endswith(":merge"):
                continue
            line = key.start_mark.line + 1
            if key.tag.endswith(":bool"):
                yield Problem(steps, _bool_key(key.value), line=line)
            if key.value in keys:
                yield Problem(steps, f"key '{key.value}' is given more than once", line=line)
            keys.add(key.value)
            yield from _yaml_keys(value, (*steps, key.value), seen)


def key_problems(data: object, root: yaml.Node | None) -> list[Issue]:
    """Keys given twice and boolean keys of one file, located (checked per file)."""
    if root is None:
        return []
    return [problem.issue(data, root)[1] for problem in _yaml_keys(root, (), set())]


def _data_bool_keys(data: object, steps: Steps) -> Iterator[Problem]:
    """Boolean keys in data parsed elsewhere (no YAML nodes to read the spelling from)."""
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else ()
    )
    for key, value in items:
        if isinstance(key, bool) and isinstance(data, dict):
            yield Problem(steps, _bool_key(str(key).lower()))
        elif not isinstance(key, bool):
            yield from _data_bool_keys(value, (*steps, key))


def _bool_key_error(err: ErrorDetails) -> bool:
    """Pydantic's own report of a boolean key (reported by the walkers above instead)."""
    is_key = err["type"] == "invalid_key" or (err["loc"] and err["loc"][-1] == "[key]")
    return bool(is_key) and isinstance(err["input"], bool)


def validate(
    data: object,
    source: str,
    root: yaml.Node | None,
    *,
    title: str | None = None,
    issues: Sequence[Issue] = (),
    keys_checked: bool = False,
) -> Config:
    """The Config of `data`, or InvalidInput with every problem (and `issues` found before).

    With `title` (several files merged), each problem's place starts with its file."""
    data = {} if data is None else data
    keys: Iterable[Problem] = ()
    if not keys_checked:
        keys = _yaml_keys(root, (), set()) if root is not None else _data_bool_keys(data, ())
    problems = [*keys, *cross_problems(data)]
    config: Config | None = None
    try:
        config = Config.model_validate(data, context={CHECKED: True})
    except ValidationError as exc:
        errors = [e for e in exc.errors(include_url=False) if not _bool_key_error(e)]
        problems.extend(error_problem(err, data) for err in errors)
    if problems or config is None or issues:
        located = [problem.issue(data, root) for problem in problems]
        located.sort(key=lambda pair: pair[0] if pair[0] is not None else float("inf"))
        found = [issue for _, issue in located]
        if title is not None:
            found = [_in_file(issue) for issue in found]
        raise InvalidInput([*issues, *found], title or f"invalid config file {source}")
    return config


def _in_file(issue: Issue) -> Issue:
    """The issue with its file named first in its place (for a merge of several files)."""
    if issue.file is None:
        return issue
    return replace(issue, where=f"{issue.file}: {issue.where}")


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate already-parsed data (a mapping, or None for defaults)."""
    return validate(data, source, None)


def read_yaml(text: str, title: str, name: str | None = None) -> tuple[object, yaml.Node | None]:
    """The data and node tree of a YAML text; marks carry `name` (the file) when given."""
    loader = yaml.SafeLoader(text)
    if name is not None:
        loader.name = name
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        line = mark.line + 1 if mark else None
        issue = Issue(where, f"YAML syntax error: {detail}", None, name, line)
        raise InvalidInput([issue], title) from None
    except yaml.YAMLError as exc:
        raise InvalidInput([Issue("YAML", f"YAML error: {exc}")], title) from None
    finally:
        loader.dispose()


def load_file(path: Path) -> Config:
    """One file on its own, validated (no layering): what `scripthut migrate` rewrites."""
    title = f"invalid config file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput([Issue(str(path), "no such file")], title) from None
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidInput([Issue(str(path), f"cannot read: {detail}")], title) from None
    data, root = read_yaml(text, title, str(path))
    config = validate(data, str(path), root)
    warn_legacy(data, str(path))
    config.source_path = path.absolute()
    return config
