"""The task keys of the result cache (`inputs`, `outputs`, `cache`, `cache_scope`), checked
when a document is read, and the part of a cache key that is known before any file is read.

Only tasks with `outputs` take part. The key is the sha256 of the command (or notebook and
parameters), the resolved environment without ScriptHut's own `SCRIPTHUT_*` values, the
commit (scope `commit`) and, added on the backend, the sha256 of every input file.
Resources (cpus, memory, partition, time limit) are not in it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from scripthut.env_rules import PROTECTED_PREFIX

SCOPES = ("commit", "inputs")
MAX_PATTERNS = 1000
MAX_PATTERN = 4096


def check_paths(value: object) -> tuple[str, ...]:
    """`inputs`/`outputs`: paths or glob patterns, relative to the task's working_dir."""
    if not isinstance(value, list):
        raise ValueError("must be an array of paths or glob patterns")
    if len(value) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} entries")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError("every entry must be a non-empty string")
        if len(item) > MAX_PATTERN or any(c in item for c in "\0\n\r"):
            raise ValueError(f"'{item[:100]}' must be one line of at most {MAX_PATTERN} characters")
        if item.startswith("/") or ".." in item.split("/"):
            raise ValueError(f"'{item}' must stay inside the task's working_dir (no '/…', no '..')")
    return tuple(value)


def check_flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def check_scope(value: object) -> str:
    if value not in SCOPES:
        raise ValueError(f"must be one of {', '.join(repr(s) for s in SCOPES)}")
    return str(value)


def key_prefix(
    *,
    command: str,
    notebook: str | None,
    parameters: Mapping[str, Any] | None,
    env: Mapping[str, str],
    commit: str | None,
    scope: str,
) -> str:
    """sha256 of what the key holds besides the inputs (volatile SCRIPTHUT_* left out)."""
    stable = {k: v for k, v in sorted(env.items()) if not k.startswith(PROTECTED_PREFIX)}
    body = {
        "version": 1,
        "command": command,
        "notebook": notebook,
        "parameters": dict(parameters or {}),
        "env": stable,
        "commit": commit if scope == "commit" else None,
        "scope": scope,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def final_key(prefix: str, input_sums: str) -> str:
    """The cache key: sha256 of the prefix line and the inputs' `sha256sum` lines (sorted by
    path), exactly as the backend's script computes it."""
    return hashlib.sha256(f"{prefix}\n{input_sums}".encode()).hexdigest()
