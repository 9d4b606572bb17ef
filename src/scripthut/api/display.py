"""How a run shows itself: the `RunView` widget in a notebook, else a text summary.

The widgets are optional here: when `scripthut.widgets` cannot be imported, or there is
no kernel (plain IPython in a terminal), a run shows as text.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, cast

from scripthut.client import Client

FAILED_FIRST = {"failed": 0, "dep_failed": 1, "cancelled": 2}


def in_kernel() -> bool:
    """True inside a Jupyter kernel (where widgets have a frontend to show them)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def silent_echo() -> bool:
    """True where a cell result that shows nothing leaves no trace: in a kernel.

    (A terminal prints the `Out[n]:` prompt before it asks the result to show itself.)
    """
    return in_kernel()


def execution_count() -> int | None:
    """The number of the cell IPython is running now (None outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else int(shell.execution_count)


def run_view(run_id: str, client: Client) -> Any | None:
    """A `RunView` of the run, or None where widgets cannot show (or are not installed)."""
    widget = _widget("RunView")
    return None if widget is None else widget(run_id, client=client)


def job_table(
    client: Client, backend: str | None, state: str | None, run: str | None
) -> Any | None:
    """A live `JobTable`, or None where widgets cannot show (or are not installed)."""
    widget = _widget("JobTable")
    return None if widget is None else widget(client=client, backend=backend, state=state, run=run)


def _widget(name: str) -> Any | None:
    """A widget class of `scripthut.widgets`, when there is a kernel and it imports."""
    if not in_kernel():
        return None
    try:
        return getattr(importlib.import_module("scripthut.widgets"), name)
    except (ImportError, AttributeError):
        return None


def publish(obj: object, *, raw: bool = False) -> None:
    """IPython's `display` (a mime bundle as it is with `raw=True`)."""
    from IPython.display import display

    cast(Callable[..., None], display)(obj, raw=raw)


def run_summary(run: Mapping[str, Any], tasks: list[dict[str, Any]] | None = None) -> str:
    """A run in a few lines: id, name, backend, state, counts; then its tasks, failed first."""
    counts = run.get("counts") or {}
    shown = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()) if n)
    lines = [
        f"run {run['id']}  {run.get('name', '')}  on {run.get('backend', '?')}: "
        f"{run['state']} ({shown or 'no tasks'})"
    ]
    if run.get("message"):
        lines.append(f"  {run['message']}")
    for task in sorted(tasks or [], key=lambda t: FAILED_FIRST.get(t["state"], 3)):
        lines.append(f"  {task['id']}: {task['state']}{_why(task)}")
    return "\n".join(lines)


def _why(task: Mapping[str, Any]) -> str:
    if task.get("reason"):
        return f" ({task['reason']})"
    if task.get("exit_code") not in (None, 0):
        return f" (exit {task['exit_code']})"
    return ""
