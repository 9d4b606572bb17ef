"""Notebook tasks: `"notebook": "fit.ipynb"` with `"parameters"` instead of a command.

Checked here when the document is read; run by `notebook_runner.py`, which the task's
script carries (see `workflow.script`), on the backend in the task's environment.
"""

from __future__ import annotations

import json
import keyword
from functools import cache
from importlib import resources
from typing import Any

MAX_PATH = 4096
MAX_PARAMETERS = 65_536  # bytes of the parameters as JSON


def check_notebook(value: object) -> str:
    """A notebook path: a string ending in .ipynb (relative to the task's working_dir)."""
    if not isinstance(value, str):
        raise ValueError(f"must be a path to a .ipynb file, not {type(value).__name__}")
    if not value.endswith(".ipynb") or value.endswith("/.ipynb"):
        raise ValueError(f"'{value[:200]}' is not a notebook: the path must end in .ipynb")
    if len(value) > MAX_PATH or any(c in value for c in "\0\n\r"):
        raise ValueError("must be a single-line path of at most 4,096 characters")
    return value


def check_parameters(value: object) -> dict[str, Any]:
    """Notebook parameters: an object whose names are Python identifiers."""
    if not isinstance(value, dict):
        raise ValueError(
            f"must be an object of parameter names to values, not {type(value).__name__}"
        )
    for name in value:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"'{name}' is not a Python variable name")
    if len(json.dumps(value)) > MAX_PARAMETERS:
        raise ValueError(f"more than {MAX_PARAMETERS} bytes as JSON")
    return dict(value)


@cache
def runner_source() -> str:
    """The runner's source, which the task's script passes to `python3 -c`."""
    return resources.files("scripthut.workflow").joinpath("notebook_runner.py").read_text("utf-8")
