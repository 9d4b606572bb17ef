"""The shapes of names in API paths.

Strict on purpose: a path segment matches only plain names, so `..`, `/` and any
percent-encoded form (`%2e%2e`, `%2f`) never reach a handler; they get 404.
Tornado matches routes against the raw, still-encoded path.
"""

from __future__ import annotations

import re

_NO_DOTDOT = r"(?![^/]*\.\.)"
RUN_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}"
TASK_ID = _NO_DOTDOT + r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}"
BACKEND = _NO_DOTDOT + r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
JOB_ID = _NO_DOTDOT + r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,199}"
WORKFLOW = _NO_DOTDOT + r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}"
SOURCE = WORKFLOW
LOG_STREAM = r"output|error"


def addressable_workflow(name: str) -> bool:
    """True when a configured workflow's name can appear in an API path."""
    return re.fullmatch(WORKFLOW, name) is not None


def addressable_source(name: str) -> bool:
    """True when a source's name can appear in an API path."""
    return re.fullmatch(SOURCE, name) is not None
