"""Checking request bodies: every problem is collected and reported at once.

Every body goes through `decode_body` first: its size is checked before anything is
parsed (413), then it must be UTF-8 and JSON a store can keep (`parse.decode_json`:
repeated keys, integers beyond 64 bits, lone surrogates, too deep nesting are 400s
naming the field). A run request is `{"workflow": <task document>}` or `{"path": <file>}`,
plus optional `backend`, `name`, `max_concurrent`, `config_dir` and `no_cache`. A path must
resolve (symlinks followed) inside the allowed root directory, so the API never reads a file
outside it. `config_dir` names the folder whose configuration applies (the project file found
walking up from it; a kernel sends its notebook's folder): an absolute path to an existing
directory, used as it resolves (symlinks followed), so the project file is looked for where the
folder really is. It moves no task: the working folder of inline tasks stays the server's root.
Requests about sources and configured workflows take the same `config_dir` (a body key of
a POST, a query argument of a GET), checked the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scripthut.errors import InvalidInput, Issue, NotFound
from scripthut.server.errors import PayloadTooLarge
from scripthut.workflow.model import Workflow
from scripthut.workflow.parse import (
    INT64,
    MAX_NAME,
    MAX_TEXT,
    decode_json,
    load_workflow,
    parse_document,
)

BODY = "request body"
RUN_KEYS = frozenset(
    {"workflow", "path", "backend", "name", "max_concurrent", "config_dir", "no_cache"}
)
WORKFLOW_RUN_KEYS = frozenset({"name", "max_concurrent", "no_cache"})
DRY_RUN_KEYS = frozenset({"no_cache"})
CONFIG_DIR = "config_dir"
DEFAULT_MAX_BODY = 64 * 1024 * 1024  # bytes; a 100,000-task workflow is about 10-30 MB


def decode_body(raw: bytes, limit: int = DEFAULT_MAX_BODY) -> object:
    """The JSON value of a request body (None when empty); 413 or 400 naming the problem."""
    if len(raw) > limit:
        raise PayloadTooLarge(
            f"the request body is {len(raw):,} bytes; this server accepts at most {limit:,} "
            "(ScriptHut.max_body_mb)"
        )
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        message = f"not UTF-8 text ({err.reason} at byte {err.start})"
        raise InvalidInput([Issue(BODY, message)], "invalid request body") from None
    return decode_json(text, source=BODY, title="invalid request body")


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A checked request to start a run."""

    workflow: Workflow
    backend: str | None = None
    name: str | None = None
    max_concurrent: int | None = None
    source: str | None = None
    base_dir: str | None = None
    config_dir: str | None = None  # whose configuration applies (None: base_dir's)
    no_cache: bool = False


@dataclass(frozen=True, slots=True)
class RunOptions:
    name: str | None = None
    max_concurrent: int | None = None
    no_cache: bool = False  # run every task: no result-cache look-ups, nothing stored
    config_dir: str | None = None  # whose configuration applies (None: the server's)


_INTEGER = re.compile(r"-?[0-9]{1,19}")


def parse_int(text: str, where: str, name: str, *, low: int, high: int) -> int:
    """A decimal integer from a query argument or header, within [low, high] (64 bits)."""
    if not _INTEGER.fullmatch(text):
        raise InvalidInput([Issue(where, "must be a decimal integer (64 bits)", name)])
    value = int(text)
    if value < low:
        raise InvalidInput([Issue(where, f"must be at least {low}", name)])
    if value > high:
        raise InvalidInput([Issue(where, f"must be at most {high}", name)])
    return value


def read_run_request(body: object, root_dir: Path | None) -> RunRequest:
    """The run a request body asks for; InvalidInput listing every problem otherwise."""
    data = _object(body)
    issues = _unknown_keys(data, RUN_KEYS)
    options = _options(data, issues)
    backend = _optional_text(data, "backend", issues)
    config_dir = _config_dir(data.get(CONFIG_DIR), issues)
    has_doc, has_path = "workflow" in data, "path" in data
    workflow: Workflow | None = None
    source = base_dir = None
    if has_doc == has_path:
        issues.append(Issue(BODY, "give exactly one of 'workflow' (a task document) or 'path'"))
    elif has_doc:
        workflow = _collect(issues, lambda: parse_document(data["workflow"], source="workflow"))
        base_dir = str(root_dir or Path.cwd())
    else:
        file = _workflow_path(data["path"], root_dir, issues)
        if file is not None:
            workflow = _collect(issues, lambda: load_workflow(file))
            source, base_dir = str(file), str(file.parent)
    if issues or workflow is None:
        raise InvalidInput(issues, "invalid run request")
    return RunRequest(
        workflow,
        backend,
        options.name,
        options.max_concurrent,
        source,
        base_dir,
        config_dir,
        no_cache=options.no_cache,
    )


def read_run_options(body: object, *, dry: bool = False) -> RunOptions:
    """Options for a configured workflow: `config_dir` and `no_cache`; for a run (not `dry`),
    `name` and `max_concurrent` too (all optional), so a run's body can be tried first."""
    data = _object({} if body is None else body)
    allowed = (DRY_RUN_KEYS if dry else WORKFLOW_RUN_KEYS) | {CONFIG_DIR}
    issues = _unknown_keys(data, allowed)
    options = _options(data, issues)
    config_dir = _config_dir(data.get(CONFIG_DIR), issues)
    if issues:
        raise InvalidInput(issues, "invalid run request")
    return replace(options, config_dir=config_dir)


def read_config_dir(value: str | None) -> str | None:
    """A GET's `config_dir` query argument, checked as in a body; InvalidInput naming it."""
    issues: list[Issue] = []
    config_dir = _config_dir(value, issues, "query")
    if issues:
        raise InvalidInput(issues, "invalid query")
    return config_dir


SOURCE_KEYS = frozenset({"file", "branch", "backend", CONFIG_DIR})
SYNC_KEYS = frozenset({"branch", "backend", CONFIG_DIR})


@dataclass(frozen=True, slots=True)
class SourceRequest:
    """A sync, dry-run or run of a source: which file, branch and backend; run options."""

    file: str = ""
    branch: str | None = None
    backend: str | None = None
    options: RunOptions = RunOptions()
    config_dir: str | None = None  # whose configuration names the source (None: the server's)


def read_source_request(body: object, *, file: bool = True, run: bool = False) -> SourceRequest:
    """`file` (required when `file`), `branch`, `backend`, `config_dir`; with `run`, `name`
    and `max_concurrent` too, and (run or dry run) `no_cache`. Every problem is listed."""
    data = _object({} if body is None else body)
    allowed = (SOURCE_KEYS | DRY_RUN_KEYS if file else SYNC_KEYS) | (
        WORKFLOW_RUN_KEYS if run else frozenset()
    )
    issues = _unknown_keys(data, allowed)
    path = _optional_text(data, "file", issues) if file else None
    if file and path is None and "file" not in data:
        issues.append(Issue(BODY, "required: the workflow file, as the source lists it", "file"))
    branch = _optional_text(data, "branch", issues)
    backend = _optional_text(data, "backend", issues)
    options = _options(data, issues) if file else RunOptions()
    config_dir = _config_dir(data.get(CONFIG_DIR), issues)
    if issues:
        raise InvalidInput(issues, "invalid source request")
    return SourceRequest(path or "", branch, backend, options, config_dir)


def _object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput([Issue(BODY, "expected a JSON object")], "invalid run request")
    return body


def _unknown_keys(data: Mapping[str, Any], allowed: frozenset[str]) -> list[Issue]:
    known = ", ".join(sorted(allowed))
    return [
        Issue(BODY, f"unknown key (known: {known})", str(key)[:MAX_NAME])
        for key in data
        if key not in allowed
    ]


def _options(data: Mapping[str, Any], issues: list[Issue]) -> RunOptions:
    name = _optional_text(data, "name", issues)
    limit = data.get("max_concurrent")
    if limit is not None and (
        not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= INT64[1]
    ):
        issues.append(Issue(BODY, f"must be an integer from 1 to {INT64[1]}", "max_concurrent"))
        limit = None
    no_cache = data.get("no_cache")
    if no_cache is None:
        no_cache = False
    elif not isinstance(no_cache, bool):
        issues.append(Issue(BODY, "must be true or false", "no_cache"))
        no_cache = False
    return RunOptions(name, limit, no_cache)


def _optional_text(data: Mapping[str, Any], key: str, issues: list[Issue]) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        issues.append(Issue(BODY, f"must be a non-empty string of at most {MAX_NAME}", key))
        return None
    if not value.isprintable():
        issues.append(Issue(BODY, "must not contain control characters", key))
        return None
    return value


def _workflow_path(value: object, root_dir: Path | None, issues: list[Issue]) -> Path | None:
    if not isinstance(value, str) or not value or "\0" in value or len(value) > MAX_TEXT:
        issues.append(Issue(BODY, f"must be a non-empty string of at most {MAX_TEXT}", "path"))
        return None
    base = root_dir if root_dir is not None else Path.cwd()
    file = Path(os.path.expanduser(value) if root_dir is None else value)
    resolved = (base / file).resolve()
    if root_dir is not None and not resolved.is_relative_to(root_dir.resolve()):
        issues.append(Issue(BODY, "must name a file inside the server's root directory", "path"))
        return None
    if not resolved.is_file():
        issues.append(Issue(BODY, f"no such file: {value}", "path"))
        return None
    return resolved


def _config_dir(value: object, issues: list[Issue], where: str = BODY) -> str | None:
    """The folder whose configuration applies, as it resolves; None when not given."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value or len(value) > MAX_TEXT:
        message = f"must be a non-empty string of at most {MAX_TEXT}"
        issues.append(Issue(where, message, CONFIG_DIR))
        return None
    if not os.path.isabs(value):  # `~` and relative paths: whose home, relative to what?
        issues.append(Issue(where, "must be an absolute path", CONFIG_DIR))
        return None
    try:
        resolved = Path(value).resolve()  # symlinks followed: the folder as it really is
    except (OSError, RuntimeError):  # a symlink loop
        resolved = None
    if resolved is None or not resolved.is_dir():
        issues.append(Issue(where, f"no such directory: {value}", CONFIG_DIR))
        return None
    return str(resolved)


def _collect(issues: list[Issue], read: Callable[[], Workflow]) -> Workflow | None:
    """Run `read`; its validation problems join `issues`."""
    try:
        return read()
    except InvalidInput as exc:
        issues.extend(exc.issues)
        return None
    except NotFound as exc:
        issues.append(Issue(BODY, str(exc), "path"))
        return None
