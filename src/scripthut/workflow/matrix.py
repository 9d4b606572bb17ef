"""`"matrix"` on a task: one task per combination of values, expanded before validation.

    {"id": "fit", "command": "python fit.py", "matrix": {"alpha": [0.1, 1], "seed": [1, 2, 3]}}

becomes `fit.0` … `fit.5`, in the order of the product of the value lists as written (the
last key varies fastest: `fit.0` is alpha=0.1 seed=1, `fit.1` alpha=0.1 seed=2, …). Each
copy gets the combination as environment variables (a task-level `set` rule placed first,
so the task's own rules can still use or override them) and as notebook `parameters`
(given `parameters` win over matrix values of the same name), and a name that shows it. A
dependency on the bare id means every copy (`fit` -> `fit.*`); `fit.*` works as usual.
Problems in a copy are reported as `task 'fit.3' (alpha=1, seed=1)`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scripthut.env_rules import ENV_NAME, PROTECTED_PREFIX
from scripthut.errors import Issue

MATRIX = "matrix"
MAX_COMBINATIONS = 10_000
_SCALARS = (str, int, float, bool)


@dataclass(slots=True)
class Expansion:
    """The raw tasks after expansion, and the combination of every copy by its id."""

    tasks: list[object]
    combos: dict[str, str] = field(default_factory=dict)

    def located(self, issue: Issue) -> Issue:
        """`issue` naming the combination when it is about an expanded copy."""
        task_id = issue.where.removeprefix("task '").removesuffix("'")
        combo = self.combos.get(task_id) if issue.where.startswith("task '") else None
        if combo is None:
            return issue
        return Issue(f"{issue.where} ({combo})", issue.message, issue.field)


def expand_matrices(raw_tasks: list[object], issues: list[Issue]) -> Expansion:
    """Every task with a valid `matrix` replaced by its copies; a bad matrix is reported and
    its task kept without it (so its id stays known to its dependents)."""
    if not any(isinstance(raw, dict) and MATRIX in raw for raw in raw_tasks):
        return Expansion(raw_tasks)
    out = Expansion([])
    expanded: set[str] = set()
    for position, raw in enumerate(raw_tasks):
        if not isinstance(raw, dict) or MATRIX not in raw:
            out.tasks.append(raw)
            continue
        rest = {k: v for k, v in raw.items() if k != MATRIX}
        axes = _read_matrix(raw[MATRIX], _where(raw, position), issues)
        if axes is None or not isinstance(raw.get("id"), str):
            out.tasks.append(rest)
            continue
        expanded.add(raw["id"])
        out.tasks.extend(_copies(rest, axes, out.combos))
    if expanded:
        out.tasks = [_whole_deps(raw, expanded) for raw in out.tasks]
    return out


def _where(raw: Mapping[Any, Any], position: int) -> str:
    task_id = raw.get("id")
    return f"task '{task_id}'" if isinstance(task_id, str) else f"tasks[{position}]"


def _read_matrix(value: object, where: str, issues: list[Issue]) -> dict[str, list[Any]] | None:
    def bad(message: str) -> None:
        issues.append(Issue(where, message, MATRIX))

    if not isinstance(value, dict) or not value:
        bad("must be an object of variable names to non-empty arrays of values")
        return None
    axes: dict[str, list[Any]] = {}
    for name, values in value.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            bad(f"'{name}' is not a valid environment variable name")
        elif name.startswith(PROTECTED_PREFIX):
            bad(f"'{name}' is protected: SCRIPTHUT_* variables are set by ScriptHut")
        elif not isinstance(values, list) or not values:
            bad(f"'{name}' must be a non-empty array of values")
        elif not all(isinstance(v, _SCALARS) for v in values):
            bad(f"'{name}': values must be strings, numbers or booleans")
        else:
            axes[name] = values
    if len(axes) != len(value):
        return None
    count = 1
    for values in axes.values():
        count *= len(values)
    if count > MAX_COMBINATIONS:
        bad(f"{count} combinations; at most {MAX_COMBINATIONS} per task")
        return None
    return axes


def _copies(
    raw: dict[str, Any], axes: dict[str, list[Any]], combos: dict[str, str]
) -> list[dict[str, Any]]:
    base_id: str = raw["id"]
    name = raw.get("name") if isinstance(raw.get("name"), str) else base_id
    env = raw.get("env")
    out = []
    for n, values in enumerate(itertools.product(*axes.values())):
        combo = dict(zip(axes, values, strict=True))
        label = ", ".join(f"{k}={env_text(v)}" for k, v in combo.items())
        copy = dict(raw)
        copy["id"] = f"{base_id}.{n}"
        copy["name"] = f"{name} [{label}]"
        rule = {"set": {k: env_text(v) for k, v in combo.items()}}
        copy["env"] = [rule, *env] if isinstance(env, list) else ([rule] if env is None else env)
        if "notebook" in raw:
            given = raw.get("parameters")
            copy["parameters"] = {**combo, **given} if isinstance(given, dict) else combo
        combos[copy["id"]] = label
        out.append(copy)
    return out


def env_text(value: object) -> str:
    """A matrix value as an environment variable holds it (booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _whole_deps(raw: object, expanded: set[str]) -> object:
    """A dependency on an expanded task's bare id means all of its copies."""
    if not isinstance(raw, dict):
        return raw
    for key in ("deps", "dependencies"):
        deps = raw.get(key)
        if isinstance(deps, list) and any(isinstance(d, str) and d in expanded for d in deps):
            raw = {**raw, key: [f"{d}.*" if d in expanded else d for d in deps]}
    return raw
