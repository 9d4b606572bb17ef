"""Reading workflow documents: the document's shape, every task, then the dependency graph.

A document is a JSON array of tasks or `{"title": ..., "tasks": [...], "env": [...],
"env_groups": {...}}`. Every problem is collected and raised together as one
`InvalidInput`, so a user fixes a document in one pass. Tasks are checked by hand
(`task_fields`; only env rules go through pydantic), so reading 100,000 tasks stays well
under a second. JSON text is decoded by `strict_json`; limits live in `limits`. Their
public names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripthut.env_rules import EnvRule
from scripthut.errors import InvalidInput, Issue, NotFound
from scripthut.workflow.dag import DepProblem, IdIndex, expand_deps, find_cycle
from scripthut.workflow.limits import (
    INT64,
    MAX_COMMAND,
    MAX_CPUS,
    MAX_ENV_VALUE,
    MAX_GROUP_NAME,
    MAX_ID,
    MAX_NAME,
    MAX_TEXT,
    SAFE_ID,
    TIME_FORMS,
    parse_memory_mb,
    parse_time_limit_s,
)
from scripthut.workflow.matrix import expand_matrices
from scripthut.workflow.model import TaskSpec, Workflow
from scripthut.workflow.strict_json import decode_json, gc_paused, json_problems
from scripthut.workflow.task_fields import (
    LEGACY_TASK_KEYS,
    NOT_SUPPORTED_TASK_KEYS,
    TASK_KEYS,
    BadField,
    read_rules,
    read_task,
    task_where,
    text_value,
    warn_legacy,
)
from scripthut.workflow.wording import (
    CONTROL,
    invalid_title,
    shown,
    suggestion,
    too_long,
    type_name,
)

__all__ = [
    "DOCUMENT",
    "DOCUMENT_KEYS",
    "INT64",
    "LEGACY_TASK_KEYS",
    "MAX_COMMAND",
    "MAX_CPUS",
    "MAX_ENV_VALUE",
    "MAX_GROUP_NAME",
    "MAX_ID",
    "MAX_NAME",
    "MAX_TEXT",
    "NOT_SUPPORTED_TASK_KEYS",
    "SAFE_ID",
    "TASK_KEYS",
    "TIME_FORMS",
    "decode_json",
    "json_problems",
    "load_workflow",
    "parse_document",
    "parse_generated",
    "parse_memory_mb",
    "parse_time_limit_s",
]

DOCUMENT = "document"
DOCUMENT_KEYS = ("title", "tasks", "env", "env_groups")
_SUGGEST_LIMIT = 2000  # above this many ids, unknown dependencies get no "did you mean"


def parse_document(data: object, *, source: str = "workflow") -> Workflow:
    """Validate a decoded workflow document; raise InvalidInput listing every problem."""
    return _parse(data, source=source, existing=(), allow_empty=False)


def parse_generated(data: object, *, existing_ids: Collection[str], source: str) -> Workflow:
    """Validate tasks produced by a `generates_source` file of a running workflow.

    New ids must not reuse `existing_ids`; dependencies may match existing and new ids.
    The result holds only the new tasks, their dependencies expanded over both.
    """
    return _parse(data, source=source, existing=existing_ids, allow_empty=True)


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow JSON file."""
    file = Path(path)
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise NotFound(f"no workflow file at {source}") from err
    except UnicodeDecodeError as err:
        issue = Issue(where=source, message=f"not UTF-8 text ({err.reason} at byte {err.start})")
        raise InvalidInput([issue], title=invalid_title(source)) from err
    return parse_document(decode_json(text, source=source), source=source)


# --- the document ------------------------------------------------------------------------


@dataclass(slots=True)
class _Document:
    tasks: list[object]
    env: list[EnvRule]
    env_groups: dict[str, list[EnvRule]]
    title: str | None = None


def _read_document(data: object, issues: list[Issue], *, allow_empty: bool) -> _Document | None:
    """The parts of the document, or None when its shape leaves nothing to read."""
    doc: _Document | None
    if isinstance(data, list):
        doc = _Document(tasks=data, env=[], env_groups={})
    elif isinstance(data, dict):
        doc = _read_object(data, issues)
    else:
        message = (
            "a workflow is an array of tasks or an object with a 'tasks' array, "
            f"not {type_name(data)}"
        )
        issues.append(Issue(where=DOCUMENT, message=message))
        return None
    if doc is not None and not doc.tasks and not allow_empty:
        message = "a workflow needs at least one task"
        issues.append(Issue(where=DOCUMENT, field="tasks", message=message))
    return doc


def _read_object(data: dict[Any, Any], issues: list[Issue]) -> _Document | None:
    for key in data:
        if key not in DOCUMENT_KEYS:
            hint = suggestion(str(key), DOCUMENT_KEYS)
            issues.append(Issue(where=DOCUMENT, message=f"unknown key {shown(key)}{hint}"))
    title = _read_title(data.get("title"), issues)
    env = read_rules(data.get("env", []), DOCUMENT, "env", issues)
    groups = _read_groups(data.get("env_groups", {}), issues)
    tasks = data.get("tasks")
    if "tasks" not in data:
        issues.append(Issue(where=DOCUMENT, field="tasks", message="missing: the array of tasks"))
        return None
    if not isinstance(tasks, list):
        message = f"must be an array of tasks, not {type_name(tasks)}"
        issues.append(Issue(where=DOCUMENT, field="tasks", message=message))
        return None
    return _Document(tasks=tasks, env=env, env_groups=groups, title=title)


def _read_title(value: object, issues: list[Issue]) -> str | None:
    if value is None:
        return None
    try:
        return text_value("title", value)
    except BadField as bad:
        issues.extend(Issue(where=DOCUMENT, field=f, message=m) for f, m in bad.failures)
        return None


def _read_groups(value: object, issues: list[Issue]) -> dict[str, list[EnvRule]]:
    if not isinstance(value, dict):
        message = f"must be an object of named rule lists, not {type_name(value)}"
        issues.append(Issue(where=DOCUMENT, field="env_groups", message=message))
        return {}
    groups: dict[str, list[EnvRule]] = {}
    for name, rules in value.items():
        if not isinstance(name, str) or not name or CONTROL.search(name):
            message = (
                f"group name {shown(name)} must be a non-empty string without control characters"
            )
            issues.append(Issue(where=DOCUMENT, field="env_groups", message=message))
            continue
        if len(name) > MAX_GROUP_NAME:
            message = f"a group name is {too_long(name, MAX_GROUP_NAME)}"
            issues.append(Issue(where=DOCUMENT, field="env_groups", message=message))
            continue
        groups[name] = read_rules(rules, DOCUMENT, f"env_groups.{name}", issues)
    return groups


# --- the whole workflow ------------------------------------------------------------------


@dataclass(slots=True)
class _Graph:
    """The tasks read so far: valid specs, and what the dependency checks need."""

    raw_tasks: list[object]
    positions: dict[str, int]
    specs: list[TaskSpec]
    patterns: dict[str, tuple[str, ...]]

    def deps_key(self, task_id: str) -> str:
        """The key ('deps' or 'dependencies') the task's patterns came from."""
        raw = self.raw_tasks[self.positions[task_id]]
        return "dependencies" if isinstance(raw, dict) and "deps" not in raw else "deps"


def _parse(data: object, *, source: str, existing: Collection[str], allow_empty: bool) -> Workflow:
    issues: list[Issue] = []
    with gc_paused():
        doc = _read_document(data, issues, allow_empty=allow_empty)
        if doc is None:
            raise InvalidInput(issues, title=invalid_title(source))
        index = IdIndex(dict.fromkeys(existing))
        expansion = expand_matrices(doc.tasks, issues)
        graph = _read_tasks(expansion.tasks, index, issues)
        index.add(graph.positions)
        deps, problems = expand_deps(graph.patterns, index)
        issues.extend(_dep_issue(problem, graph, index) for problem in problems)
        cycle = find_cycle(deps)
    if cycle is not None:
        message = f"dependency cycle: {' -> '.join(cycle)}"
        where = f"task '{cycle[0]}'"
        issues.append(Issue(where=where, field=graph.deps_key(cycle[0]), message=message))
    if issues:
        raise InvalidInput(map(expansion.located, issues), title=invalid_title(source))
    warn_legacy(doc.tasks, source)
    workflow = Workflow(tasks=graph.specs, deps=deps, env=doc.env, env_groups=doc.env_groups)
    workflow.title = doc.title
    return workflow


def _read_tasks(raw_tasks: list[object], existing: Collection[str], issues: list[Issue]) -> _Graph:
    """Check every task; ids seen twice (or already in `existing`) are reported.

    Every string id counts as known, even an invalid one, so that its dependents
    get no second error; only tasks with a valid id have their patterns expanded.
    """
    graph = _Graph(raw_tasks=raw_tasks, positions={}, specs=[], patterns={})
    positions = graph.positions
    for position, raw in enumerate(raw_tasks):
        if not isinstance(raw, dict):
            message = f"a task must be an object, not {type_name(raw)}"
            issues.append(Issue(where=f"tasks[{position}]", message=message))
            continue
        spec, patterns = read_task(raw, position, issues)
        task_id = raw.get("id")
        if not isinstance(task_id, str):
            continue
        if task_id in positions or task_id in existing:
            issues.append(_repeated(task_id, position, positions, existing))
            continue
        positions[task_id] = position
        if spec is not None:
            graph.specs.append(spec)
        if patterns is not None and (spec is not None or SAFE_ID.fullmatch(task_id)):
            graph.patterns[task_id] = patterns
    return graph


def _repeated(
    task_id: str, position: int, first_seen: Mapping[str, int], existing: Collection[str]
) -> Issue:
    if task_id in first_seen:
        message = f"duplicate id: tasks[{first_seen[task_id]}] and tasks[{position}] both use it"
    else:
        message = "id already used by a task of this run"
    return Issue(where=task_where(task_id, position), field="id", message=message)


def _dep_issue(problem: DepProblem, graph: _Graph, index: IdIndex) -> Issue:
    message = problem.message
    if problem.kind == "unknown" and len(index) <= _SUGGEST_LIMIT:
        message += suggestion(problem.pattern, index)
    where = f"task '{problem.task_id}'"
    return Issue(where=where, field=graph.deps_key(problem.task_id), message=message)
