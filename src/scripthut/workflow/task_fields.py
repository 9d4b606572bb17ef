"""One task of a workflow document: every key read and checked by hand, and env rules.

Env rules (a task's, and the document's) go through pydantic's `EnvRule`; its errors become
located issues. Task keys of ScriptHut 0.3 (`environment`, `env_vars`) are read as their
modern `env` rules, with one deprecation warning per key and document.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from scripthut.env_rules import EnvRule
from scripthut.errors import Issue
from scripthut.workflow.caching import check_flag, check_paths, check_scope
from scripthut.workflow.limits import (
    MAX_COMMAND,
    MAX_CPUS,
    MAX_ENV_VALUE,
    MAX_NAME,
    MAX_TEXT,
    SAFE_ID,
    parse_memory_mb,
    parse_time_limit_s,
)
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.notebook import check_notebook, check_parameters
from scripthut.workflow.wording import CONTROL, shown, suggestion, too_long, type_name

TASK_KEYS = (
    "id",
    "name",
    "command",
    "deps",
    "dependencies",
    "working_dir",
    "partition",
    "cpus",
    "memory",
    "time_limit",
    "output_file",
    "error_file",
    "env",
    "generates_source",
    "gres",
    "image",
    "notebook",
    "parameters",
    "inputs",
    "outputs",
    "cache",
    "cache_scope",
)
LEGACY_TASK_KEYS = ("environment", "env_vars")  # ScriptHut 0.3: env include / env set
NOT_SUPPORTED_TASK_KEYS: frozenset[str] = frozenset()  # keys of the original named as such
_TASK_KEY_SET = frozenset(TASK_KEYS) | frozenset(LEGACY_TASK_KEYS)
log = logging.getLogger("scripthut.workflow")

Reader = Callable[[str, object, dict[str, Any]], None]


def read_rules(value: object, where: str, field: str, issues: list[Issue]) -> list[EnvRule]:
    """Env rules validated by EnvRule; pydantic's errors become Issues."""
    if not isinstance(value, list):
        message = f"must be an array of env rules, not {type_name(value)}"
        issues.append(Issue(where=where, field=field, message=message))
        return []
    rules: list[EnvRule] = []
    for position, raw in enumerate(value):
        try:
            rule = EnvRule.model_validate(raw)
        except ValidationError as err:
            issues.extend(rule_issues(err, where, f"{field}[{position}]"))
            continue
        long = _long_rule_values(rule, f"{field}[{position}]")
        issues.extend(Issue(where=where, field=f, message=m) for f, m in long)
        if not long:
            rules.append(rule)
    return rules


def _long_rule_values(rule: EnvRule, field: str) -> list[tuple[str, str]]:
    """(field, message) for each value of a rule longer than MAX_ENV_VALUE."""
    found = [
        (f"{field}.{kind}.{name}", value)
        for kind, block in (("set", rule.set), ("append", rule.append))
        for name, value in block.items()
    ]
    for name, guard in (rule.if_ or {}).items():
        found.extend(
            (f"{field}.if.{name}", v) for v in ([guard] if isinstance(guard, str) else guard)
        )
    found.append((f"{field}.init", rule.init))
    return [(f, too_long(v, MAX_ENV_VALUE)) for f, v in found if len(v) > MAX_ENV_VALUE]


def rule_issues(err: ValidationError, where: str, field: str) -> list[Issue]:
    issues = []
    for error in err.errors():
        location = "".join(f".{part}" for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown key '{error['loc'][-1]}'"
        issues.append(Issue(where=where, field=field + location, message=message))
    return issues


class BadField(Exception):
    """Problems with one key of a task, as (field, message) pairs."""

    def __init__(self, *failures: tuple[str | None, str]) -> None:
        super().__init__(*failures)
        self.failures = failures


def read_task(
    raw: dict[Any, Any], position: int, issues: list[Issue]
) -> tuple[TaskSpec | None, tuple[str, ...] | None]:
    """The task (None if it has problems, added to `issues`) and its dependency patterns."""
    values: dict[str, Any] = {}
    failures: list[tuple[str | None, str]] = []
    if not raw.keys() <= _TASK_KEY_SET:
        failures.extend(_unknown_keys(raw))
    for key, value in raw.items():
        reader = _READERS.get(key)
        if reader is not None:
            try:
                reader(key, value, values)
            except BadField as bad:
                failures.extend(bad.failures)
    if "id" not in values or not values.keys() & {"command", "notebook"} or _conflicts(raw):
        failures.extend(_missing(raw))
    if failures:
        where = task_where(raw.get("id"), position)
        issues.extend(Issue(where=where, field=field, message=text) for field, text in failures)
        return None, _patterns_if_valid(raw, values)
    values.setdefault("name", values["id"])
    values.setdefault("command", "")  # a notebook task: its script runs the notebook
    _merge_legacy_env(values)
    spec = TaskSpec(**values)
    return spec, spec.deps


def _patterns_if_valid(raw: dict[Any, Any], values: dict[str, Any]) -> tuple[str, ...] | None:
    """The patterns of a task with problems, if its dependency list itself is valid."""
    if "deps" in values:
        deps: tuple[str, ...] = values["deps"]
        return deps
    return None if "deps" in raw or "dependencies" in raw else ()


def task_where(raw_id: object, position: int) -> str:
    """How issues name a task: by id when it has a valid one, else by position."""
    if isinstance(raw_id, str) and SAFE_ID.fullmatch(raw_id):
        return f"task '{raw_id}'"
    return f"tasks[{position}]"


def _unknown_keys(raw: dict[Any, Any]) -> list[tuple[str | None, str]]:
    return [(None, _unknown_key(key)) for key in raw if key not in _TASK_KEY_SET]


def _unknown_key(key: object) -> str:
    if key in NOT_SUPPORTED_TASK_KEYS:
        return f"'{key}' is not supported by this version of ScriptHut"
    return f"unknown key {shown(key)}{suggestion(str(key), TASK_KEYS)}"


def _missing(raw: dict[Any, Any]) -> list[tuple[str | None, str]]:
    failures: list[tuple[str | None, str]] = []
    if "id" not in raw:
        failures.append(("id", "missing: every task needs an id"))
    if "command" not in raw and "notebook" not in raw:
        failures.append(("command", "missing: the shell command to run (or a 'notebook')"))
    if "command" in raw and "notebook" in raw:
        failures.append(("notebook", "use 'command' or 'notebook', not both"))
    if "parameters" in raw and "notebook" not in raw:
        failures.append(("parameters", "only a 'notebook' task takes parameters"))
    if "deps" in raw and "dependencies" in raw:
        failures.append(("dependencies", "use 'deps' or its alias 'dependencies', not both"))
    return failures


def _conflicts(raw: dict[Any, Any]) -> bool:
    keys = raw.keys()
    return bool(
        {"deps", "dependencies"} <= keys
        or {"command", "notebook"} <= keys
        or ("parameters" in keys and "notebook" not in keys)
    )


def _checked(check: Callable[[object], Any]) -> Reader:
    def read(key: str, value: object, values: dict[str, Any]) -> None:
        try:
            values[key] = check(value)
        except ValueError as exc:
            raise _fail(key, str(exc)) from None

    return read


def _fail(key: str, message: str) -> BadField:
    return BadField((key, message))


def _read_id(key: str, value: object, values: dict[str, Any]) -> None:
    if not isinstance(value, str):
        raise _fail(key, f"must be a string, not {type_name(value)}")
    if SAFE_ID.fullmatch(value) is None:
        raise _fail(
            key,
            f"{shown(value)} is not a valid id: 1 to 200 of letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'",
        )
    values[key] = value


def _read_patterns(key: str, value: object, values: dict[str, Any]) -> None:
    if not isinstance(value, list):
        raise _fail(key, f"must be an array of task ids or patterns, not {type_name(value)}")
    for pattern in value:
        if not isinstance(pattern, str) or not pattern:
            shown = "an empty string" if pattern == "" else type_name(pattern)
            raise _fail(key, f"each entry must be a task id or pattern, not {shown}")
        if len(pattern) > MAX_TEXT:
            raise _fail(key, f"an entry is {too_long(pattern, MAX_TEXT)}")
    values["deps"] = tuple(value)


def text_value(key: str, value: object, limit: int = MAX_TEXT) -> str:
    """The value if it is a non-empty string without control characters, at most `limit` long."""
    if not isinstance(value, str):
        raise _fail(key, f"must be a string, not {type_name(value)}")
    if not value:
        raise _fail(key, "must not be empty")
    if len(value) > limit:
        raise _fail(key, too_long(value, limit))
    if CONTROL.search(value):
        raise _fail(key, f"{shown(value)} holds a control character (newline, tab, NUL...)")
    return value


def _read_text(key: str, value: object, values: dict[str, Any]) -> None:
    values[key] = text_value(key, value)


def _read_working_dir(key: str, value: object, values: dict[str, Any]) -> None:
    values[key] = text_value(key, value)
    values["working_dir_given"] = True


def _read_name(key: str, value: object, values: dict[str, Any]) -> None:
    values[key] = text_value(key, value, MAX_NAME)


def _read_optional_text(key: str, value: object, values: dict[str, Any]) -> None:
    if value is not None:
        values[key] = text_value(key, value)


def _read_command(key: str, value: object, values: dict[str, Any]) -> None:
    if not isinstance(value, str):
        raise _fail(key, f"must be a string, not {type_name(value)}")
    if not value.strip():
        raise _fail(key, "must not be empty")
    if len(value) > MAX_COMMAND:
        raise _fail(key, too_long(value, MAX_COMMAND))
    if "\0" in value:
        raise _fail(key, "holds a NUL character")
    values[key] = value


def _read_cpus(key: str, value: object, values: dict[str, Any]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, f"must be an integer, not {type_name(value)}")
    if not 1 <= value <= MAX_CPUS:
        raise _fail(key, f"{value} is out of range: 1 to {MAX_CPUS}")
    values[key] = value


def _read_memory(key: str, value: object, values: dict[str, Any]) -> None:
    text = text_value(key, value)
    try:
        values["memory_mb"] = parse_memory_mb(text)
    except ValueError as err:
        raise _fail(key, str(err)) from None
    values[key] = text


def _read_time_limit(key: str, value: object, values: dict[str, Any]) -> None:
    text = text_value(key, value)
    try:
        values["time_limit_s"] = parse_time_limit_s(text)
    except ValueError as err:
        raise _fail(key, str(err)) from None
    values[key] = text


def _read_env(key: str, value: object, values: dict[str, Any]) -> None:
    issues: list[Issue] = []
    rules = read_rules(value, "", key, issues)
    if issues:
        raise BadField(*((issue.field, issue.message) for issue in issues))
    values[key] = tuple(rules)


def _read_environment(key: str, value: object, values: dict[str, Any]) -> None:
    name = text_value(key, value)
    values[key] = EnvRule(include=[name])


def _read_env_vars(key: str, value: object, values: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise _fail(key, f"must be an object of variable names and values, not {type_name(value)}")
    try:
        values[key] = EnvRule.model_validate({"set": value})
    except ValidationError as err:
        raise BadField(*((key, issue.message) for issue in rule_issues(err, "", key))) from None


def _merge_legacy_env(values: dict[str, Any]) -> None:
    """0.3's `environment` and `env_vars` become env rules placed before the task's `env`."""
    legacy = [values.pop(key) for key in LEGACY_TASK_KEYS if key in values]
    if legacy:
        values["env"] = (*legacy, *values.get("env", ()))


_LEGACY_HINTS = {
    "environment": "write env: [{include: [NAME]}] (NAME an env_groups entry)",
    "env_vars": "write env: [{set: {VAR: value}}]",
}


def warn_legacy(raw_tasks: list[object], source: str) -> None:
    """One deprecation warning per 0.3 task key used in the document."""
    used = {
        key for raw in raw_tasks if isinstance(raw, dict) for key in LEGACY_TASK_KEYS if key in raw
    }
    for key in LEGACY_TASK_KEYS:
        if key in used:
            log.warning(
                "%s: task key '%s' is deprecated; %s (`scripthut migrate` rewrites the file)",
                source,
                key,
                _LEGACY_HINTS[key],
            )


_READERS: dict[str, Reader] = {
    "id": _read_id,
    "command": _read_command,
    "deps": _read_patterns,
    "dependencies": _read_patterns,
    "name": _read_name,
    "working_dir": _read_working_dir,
    "partition": _read_text,
    "cpus": _read_cpus,
    "memory": _read_memory,
    "time_limit": _read_time_limit,
    "output_file": _read_optional_text,
    "error_file": _read_optional_text,
    "env": _read_env,
    "generates_source": _read_optional_text,
    "gres": _read_optional_text,
    "image": _read_optional_text,
    "environment": _read_environment,
    "env_vars": _read_env_vars,
    "notebook": _checked(check_notebook),
    "parameters": _checked(check_parameters),
    "inputs": _checked(check_paths),
    "outputs": _checked(check_paths),
    "cache": _checked(check_flag),
    "cache_scope": _checked(check_scope),
}
