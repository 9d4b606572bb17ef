"""Reading workflow documents: strict validation of every task, then the dependency graph.

A document is a JSON array of tasks or `{"title": ..., "tasks": [...], "env": [...],
"env_groups": {...}}`. Task keys of ScriptHut 0.3 (`environment`, `env_vars`) are read as
their modern `env` rules, with one deprecation warning per key and document.
Every problem is collected and raised together as one `InvalidInput`, so a user fixes a
document in one pass. Tasks are checked by hand (only env rules go through pydantic), so
reading 100,000 tasks stays well under a second.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from math import ceil
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scripthut.env_rules import EnvRule
from scripthut.errors import InvalidInput, Issue, NotFound, did_you_mean
from scripthut.workflow.caching import check_flag, check_paths, check_scope
from scripthut.workflow.dag import DepProblem, IdIndex, expand_deps, find_cycle
from scripthut.workflow.matrix import expand_matrices
from scripthut.workflow.model import TaskSpec, Workflow
from scripthut.workflow.notebook import check_notebook, check_parameters

MAX_ID = 200
SAFE_ID = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_ID - 1}}}")
MAX_CPUS = 4096
# Length limits (characters), the same for workflow files, REST bodies and the Python API.
MAX_NAME = 200  # a task's or a run's name
MAX_TEXT = 4096  # paths, partition, gres, image, memory, time limit, dependency patterns
MAX_COMMAND = 131_072  # a task's command (Linux's limit on one argument string)
MAX_ENV_VALUE = 32_768  # one value of an env rule's set/append/if, and its init text
MAX_GROUP_NAME = 200  # an env_groups name
INT64 = (-(2**63), 2**63 - 1)
TIME_FORMS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"

DOCUMENT = "document"
DOCUMENT_KEYS = ("title", "tasks", "env", "env_groups")
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
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATES = "holds a lone surrogate (such as \\ud800): not valid Unicode text"
# What the text of a value json_problems reports must contain: a surrogate escape, 19+
# digits in a row (an integer near or past 64 bits), a 3-digit exponent (1e400 is inf).
_SUSPECT = re.compile(r"\\u[dD][89a-fA-F]|[0-9]{19}|[eE][+-]?[0-9]{3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?) *(?:([KMGT])I?B?)?", re.ASCII | re.IGNORECASE)
_MB_PER_UNIT = {
    "K": Fraction(1, 1024),
    "M": Fraction(1),
    "G": Fraction(1024),
    "T": Fraction(1 << 20),
}
_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "an array",
    dict: "an object",
}
_TIME = re.compile(r"(?:([0-9]+)-)?([0-9]+)(?::([0-9]+))?(?::([0-9]+))?", re.ASCII)
_SUGGEST_LIMIT = 2000  # above this many ids, unknown dependencies get no "did you mean"

Reader = Callable[[str, object, dict[str, Any]], None]


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
        raise InvalidInput([issue], title=_title(source)) from err
    return parse_document(decode_json(text, source=source), source=source)


def decode_json(text: str, *, source: str, title: str | None = None) -> object:
    """Decode JSON that ScriptHut can store: every problem located, never a crash later.

    Syntax errors are reported by line and column; repeated keys, integers beyond 64
    bits, NaN/Infinity and lone surrogates ("\\ud800", which no UTF-8 store accepts) by
    the path of the value; nesting deeper than the parser handles as such.
    """
    repeated: list[Issue] = []
    constants: list[str] = []
    heading = title or _title(source)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items):
            repeated.extend(_repeated_keys(items, source))
        return obj

    def constant(name: str) -> float:
        constants.append(name)
        return math.nan

    try:
        with _gc_paused():
            data = json.loads(
                text, object_pairs_hook=pairs, parse_int=_parse_int, parse_constant=constant
            )
    except json.JSONDecodeError as err:
        message = f"not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        raise InvalidInput([Issue(where=source, message=message)], title=heading) from err
    except RecursionError:
        message = "nested too deeply: more levels of arrays and objects than can be read"
        raise InvalidInput([Issue(where=source, message=message)], title=heading) from None
    if repeated:
        raise InvalidInput(repeated, title=heading)
    if constants or _SUSPECT.search(text):  # the exact walk only when the text calls for it
        problems = json_problems(data, source)
        if problems:
            raise InvalidInput(problems, title=heading)
    return data


def _parse_int(text: str) -> int | float:
    """An integer literal; one too long for 64 bits becomes inf, reported by json_problems."""
    return int(text) if len(text) <= 20 else math.inf


def json_problems(data: object, where: str, limit: int = 20) -> list[Issue]:
    """Values of decoded JSON no store can keep, each named by its path (at most `limit`)."""
    issues: list[Issue] = []
    stack: list[tuple[object, str]] = [(data, "")]
    while stack and len(issues) < limit:
        value, path = stack.pop()
        problem = _value_problem(value)
        if problem is not None:
            issues.append(Issue(where=where, field=path or None, message=problem))
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                if _value_problem(key) is not None:
                    issues.append(Issue(where=where, field=path or None, message=_SURROGATES))
                stack.append((item, f"{path}.{key}" if path else str(key)))
        elif isinstance(value, list):
            for index in range(len(value) - 1, -1, -1):
                stack.append((value[index], f"{path}[{index}]"))
    return issues


def _value_problem(value: object) -> str | None:
    if isinstance(value, str):
        return _SURROGATES if not value.isascii() and _SURROGATE.search(value) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        return "integer out of range: it must fit in 64 bits (-2^63 to 2^63-1)"
    if isinstance(value, float) and math.isinf(value):
        return "number out of range: integers must fit in 64 bits, numbers must be finite"
    if isinstance(value, float) and math.isnan(value):
        return "NaN is not a JSON number"
    return None


def _repeated_keys(items: list[tuple[str, Any]], source: str) -> list[Issue]:
    owner = dict(items).get("id")
    where = f"task '{owner}'" if isinstance(owner, str) and SAFE_ID.fullmatch(owner) else source
    seen: set[str] = set()
    issues = []
    for key, _ in items:
        if key in seen:
            issues.append(Issue(where=where, field=key, message="key given more than once"))
        seen.add(key)
    return issues


@lru_cache(maxsize=1024)
def parse_memory_mb(text: str) -> int:
    """Megabytes of a Slurm-style memory size ("4G", "512", "1.5GiB"); no unit means MB."""
    found = _MEMORY.fullmatch(text)
    if found is None:
        raise ValueError(
            f"'{text}' is not a memory size: a number with an optional unit K, M, G or T "
            "(KB/KiB... also accepted; no unit means MB)"
        )
    amount, unit = found.groups()
    megabytes = ceil(Fraction(amount) * _MB_PER_UNIT[(unit or "M").upper()])
    if megabytes < 1:
        raise ValueError(f"'{text}' is zero: a task needs some memory")
    return megabytes


@lru_cache(maxsize=1024)
def parse_time_limit_s(text: str) -> int:
    """Seconds of a Slurm time limit in one of the forms of TIME_FORMS."""
    found = _TIME.fullmatch(text)
    if found is None:
        raise ValueError(f"'{text}' is not a Slurm time limit: use {TIME_FORMS}")
    days, *parts = found.groups()
    numbers = [int(part) for part in parts if part is not None]
    if days is None:
        units = [(60, None), (1, 60)] if len(numbers) < 3 else [(3600, None), (60, 60), (1, 60)]
    else:
        units = [(86400, None), (3600, 24), (60, 60), (1, 60)]
        numbers.insert(0, int(days))
    seconds = 0
    for number, (scale, bound) in zip(numbers, units, strict=False):
        if bound is not None and number >= bound:
            raise ValueError(f"'{text}' has a field of {number} where at most {bound - 1} fits")
        seconds += number * scale
    if seconds <= 0:
        raise ValueError(f"'{text}' is zero: a time limit must be longer than that")
    return seconds


def _title(source: str) -> str:
    return "invalid workflow" if source == "workflow" else f"invalid workflow ({source})"


def _type_name(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _shown(value: object, limit: int = 60) -> str:
    """A value as messages quote it: repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]}"


def _suggestion(word: str, choices: Iterable[str]) -> str:
    if len(word) > 100:
        return ""
    return did_you_mean(word, choices)


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
            f"not {_type_name(data)}"
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
            hint = _suggestion(str(key), DOCUMENT_KEYS)
            issues.append(Issue(where=DOCUMENT, message=f"unknown key {_shown(key)}{hint}"))
    title = _read_title(data.get("title"), issues)
    env = _read_rules(data.get("env", []), DOCUMENT, "env", issues)
    groups = _read_groups(data.get("env_groups", {}), issues)
    tasks = data.get("tasks")
    if "tasks" not in data:
        issues.append(Issue(where=DOCUMENT, field="tasks", message="missing: the array of tasks"))
        return None
    if not isinstance(tasks, list):
        message = f"must be an array of tasks, not {_type_name(tasks)}"
        issues.append(Issue(where=DOCUMENT, field="tasks", message=message))
        return None
    return _Document(tasks=tasks, env=env, env_groups=groups, title=title)


def _read_title(value: object, issues: list[Issue]) -> str | None:
    if value is None:
        return None
    try:
        return _string("title", value)
    except _Bad as bad:
        issues.extend(Issue(where=DOCUMENT, field=f, message=m) for f, m in bad.failures)
        return None


def _read_groups(value: object, issues: list[Issue]) -> dict[str, list[EnvRule]]:
    if not isinstance(value, dict):
        message = f"must be an object of named rule lists, not {_type_name(value)}"
        issues.append(Issue(where=DOCUMENT, field="env_groups", message=message))
        return {}
    groups: dict[str, list[EnvRule]] = {}
    for name, rules in value.items():
        if not isinstance(name, str) or not name or _CONTROL.search(name):
            message = (
                f"group name {_shown(name)} must be a non-empty string without control characters"
            )
            issues.append(Issue(where=DOCUMENT, field="env_groups", message=message))
            continue
        if len(name) > MAX_GROUP_NAME:
            message = f"a group name is {_too_long(name, MAX_GROUP_NAME)}"
            issues.append(Issue(where=DOCUMENT, field="env_groups", message=message))
            continue
        groups[name] = _read_rules(rules, DOCUMENT, f"env_groups.{name}", issues)
    return groups


def _read_rules(value: object, where: str, field: str, issues: list[Issue]) -> list[EnvRule]:
    """Env rules validated by EnvRule; pydantic's errors become Issues."""
    if not isinstance(value, list):
        message = f"must be an array of env rules, not {_type_name(value)}"
        issues.append(Issue(where=where, field=field, message=message))
        return []
    rules: list[EnvRule] = []
    for position, raw in enumerate(value):
        try:
            rule = EnvRule.model_validate(raw)
        except ValidationError as err:
            issues.extend(_rule_issues(err, where, f"{field}[{position}]"))
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
    return [(f, _too_long(v, MAX_ENV_VALUE)) for f, v in found if len(v) > MAX_ENV_VALUE]


def _rule_issues(err: ValidationError, where: str, field: str) -> list[Issue]:
    issues = []
    for error in err.errors():
        location = "".join(f".{part}" for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown key '{error['loc'][-1]}'"
        issues.append(Issue(where=where, field=field + location, message=message))
    return issues


# --- one task ----------------------------------------------------------------------------


class _Bad(Exception):
    """Problems with one key of a task, as (field, message) pairs."""

    def __init__(self, *failures: tuple[str | None, str]) -> None:
        super().__init__(*failures)
        self.failures = failures


def _read_task(
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
            except _Bad as bad:
                failures.extend(bad.failures)
    if "id" not in values or not values.keys() & {"command", "notebook"} or _conflicts(raw):
        failures.extend(_missing(raw))
    if failures:
        where = _where(raw.get("id"), position)
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


def _where(raw_id: object, position: int) -> str:
    """How issues name a task: by id when it has a valid one, else by position."""
    if isinstance(raw_id, str) and SAFE_ID.fullmatch(raw_id):
        return f"task '{raw_id}'"
    return f"tasks[{position}]"


def _unknown_keys(raw: dict[Any, Any]) -> list[tuple[str | None, str]]:
    return [(None, _unknown_key(key)) for key in raw if key not in _TASK_KEY_SET]


def _unknown_key(key: object) -> str:
    if key in NOT_SUPPORTED_TASK_KEYS:
        return f"'{key}' is not supported by this version of ScriptHut"
    return f"unknown key {_shown(key)}{_suggestion(str(key), TASK_KEYS)}"


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


def _fail(key: str, message: str) -> _Bad:
    return _Bad((key, message))


def _read_id(key: str, value: object, values: dict[str, Any]) -> None:
    if not isinstance(value, str):
        raise _fail(key, f"must be a string, not {_type_name(value)}")
    if SAFE_ID.fullmatch(value) is None:
        raise _fail(
            key,
            f"{_shown(value)} is not a valid id: 1 to 200 of letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'",
        )
    values[key] = value


def _read_patterns(key: str, value: object, values: dict[str, Any]) -> None:
    if not isinstance(value, list):
        raise _fail(key, f"must be an array of task ids or patterns, not {_type_name(value)}")
    for pattern in value:
        if not isinstance(pattern, str) or not pattern:
            shown = "an empty string" if pattern == "" else _type_name(pattern)
            raise _fail(key, f"each entry must be a task id or pattern, not {shown}")
        if len(pattern) > MAX_TEXT:
            raise _fail(key, f"an entry is {_too_long(pattern, MAX_TEXT)}")
    values["deps"] = tuple(value)


def _string(key: str, value: object, limit: int = MAX_TEXT) -> str:
    """The value if it is a non-empty string without control characters, at most `limit` long."""
    if not isinstance(value, str):
        raise _fail(key, f"must be a string, not {_type_name(value)}")
    if not value:
        raise _fail(key, "must not be empty")
    if len(value) > limit:
        raise _fail(key, _too_long(value, limit))
    if _CONTROL.search(value):
        raise _fail(key, f"{_shown(value)} holds a control character (newline, tab, NUL...)")
    return value


def _too_long(value: str, limit: int) -> str:
    return f"too long: {len(value):,} characters, at most {limit:,}"


def _read_text(key: str, value: object, values: dict[str, Any]) -> None:
    values[key] = _string(key, value)


def _read_working_dir(key: str, value: object, values: dict[str, Any]) -> None:
    values[key] = _string(key, value)
    values["working_dir_given"] = True


def _read_name(key: str, value: object, values: dict[str, Any]) -> None:
    values[key] = _string(key, value, MAX_NAME)


def _read_optional_text(key: str, value: object, values: dict[str, Any]) -> None:
    if value is not None:
        values[key] = _string(key, value)


def _read_command(key: str, value: object, values: dict[str, Any]) -> None:
    if not isinstance(value, str):
        raise _fail(key, f"must be a string, not {_type_name(value)}")
    if not value.strip():
        raise _fail(key, "must not be empty")
    if len(value) > MAX_COMMAND:
        raise _fail(key, _too_long(value, MAX_COMMAND))
    if "\0" in value:
        raise _fail(key, "holds a NUL character")
    values[key] = value


def _read_cpus(key: str, value: object, values: dict[str, Any]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, f"must be an integer, not {_type_name(value)}")
    if not 1 <= value <= MAX_CPUS:
        raise _fail(key, f"{value} is out of range: 1 to {MAX_CPUS}")
    values[key] = value


def _read_memory(key: str, value: object, values: dict[str, Any]) -> None:
    text = _string(key, value)
    try:
        values["memory_mb"] = parse_memory_mb(text)
    except ValueError as err:
        raise _fail(key, str(err)) from None
    values[key] = text


def _read_time_limit(key: str, value: object, values: dict[str, Any]) -> None:
    text = _string(key, value)
    try:
        values["time_limit_s"] = parse_time_limit_s(text)
    except ValueError as err:
        raise _fail(key, str(err)) from None
    values[key] = text


def _read_env(key: str, value: object, values: dict[str, Any]) -> None:
    issues: list[Issue] = []
    rules = _read_rules(value, "", key, issues)
    if issues:
        raise _Bad(*((issue.field, issue.message) for issue in issues))
    values[key] = tuple(rules)


def _read_environment(key: str, value: object, values: dict[str, Any]) -> None:
    name = _string(key, value)
    values[key] = EnvRule(include=[name])


def _read_env_vars(key: str, value: object, values: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise _fail(key, f"must be an object of variable names and values, not {_type_name(value)}")
    try:
        values[key] = EnvRule.model_validate({"set": value})
    except ValidationError as err:
        raise _Bad(*((key, issue.message) for issue in _rule_issues(err, "", key))) from None


def _merge_legacy_env(values: dict[str, Any]) -> None:
    """0.3's `environment` and `env_vars` become env rules placed before the task's `env`."""
    legacy = [values.pop(key) for key in LEGACY_TASK_KEYS if key in values]
    if legacy:
        values["env"] = (*legacy, *values.get("env", ()))


_LEGACY_HINTS = {
    "environment": "write env: [{include: [NAME]}] (NAME an env_groups entry)",
    "env_vars": "write env: [{set: {VAR: value}}]",
}


def _warn_legacy(raw_tasks: list[object], source: str) -> None:
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
    with _gc_paused():
        doc = _read_document(data, issues, allow_empty=allow_empty)
        if doc is None:
            raise InvalidInput(issues, title=_title(source))
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
        raise InvalidInput(map(expansion.located, issues), title=_title(source))
    _warn_legacy(doc.tasks, source)
    workflow = Workflow(tasks=graph.specs, deps=deps, env=doc.env, env_groups=doc.env_groups)
    workflow.title = doc.title
    return workflow


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while many acyclic objects are built.

    Reading 100,000 tasks allocates about a million containers, none of them in a
    cycle; without this, repeated full collections take about half the time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_tasks(raw_tasks: list[object], existing: Collection[str], issues: list[Issue]) -> _Graph:
    """Check every task; ids seen twice (or already in `existing`) are reported.

    Every string id counts as known, even an invalid one, so that its dependents
    get no second error; only tasks with a valid id have their patterns expanded.
    """
    graph = _Graph(raw_tasks=raw_tasks, positions={}, specs=[], patterns={})
    positions = graph.positions
    for position, raw in enumerate(raw_tasks):
        if not isinstance(raw, dict):
            message = f"a task must be an object, not {_type_name(raw)}"
            issues.append(Issue(where=f"tasks[{position}]", message=message))
            continue
        spec, patterns = _read_task(raw, position, issues)
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
    return Issue(where=_where(task_id, position), field="id", message=message)


def _dep_issue(problem: DepProblem, graph: _Graph, index: IdIndex) -> Issue:
    message = problem.message
    if problem.kind == "unknown" and len(index) <= _SUGGEST_LIMIT:
        message += _suggestion(problem.pattern, index)
    where = f"task '{problem.task_id}'"
    return Issue(where=where, field=graph.deps_key(problem.task_id), message=message)
