"""Rows of runs, tasks and jobs as a table: a pandas DataFrame when pandas is installed.

pandas is optional: without it a table is the list of dicts itself, and `text_table`
renders rows for a terminal or a notebook cell.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scripthut.states import TaskState

#: a pandas DataFrame, or a list of dicts when pandas is not installed
Table = Any

TASK_STATES = tuple(state.value for state in TaskState)
RUN_COLUMNS = (
    "id",
    "name",
    "backend",
    "state",
    "total",
    *TASK_STATES,
    "created_at",
    "started_at",
    "ended_at",
    "max_concurrent",
    "source",
    "message",
)
TASK_COLUMNS = (
    "id",
    "name",
    "state",
    "deps",
    "attempt",
    "job_id",
    "exit_code",
    "reason",
    "submitted_at",
    "started_at",
    "ended_at",
)
JOB_COLUMNS = ("backend", "job_id", "state", "source", "run", "task", "name")
SYNC_COLUMNS = ("source", "backend", "branch", "sha", "synced_at", "error", "files")
SOURCE_COLUMNS = (
    "source",
    "type",
    "backend",
    "branch",
    "sha",
    "synced_at",
    "error",
    "file",
    "title",
    "tasks",
    "valid",
    "issues",
)


def sync_row(state: Mapping[str, Any]) -> dict[str, Any]:
    """A sync's outcome: the commit (or folder) found, or why it failed; its file count."""
    row = {key: state.get(key) for key in SYNC_COLUMNS if key != "files"}
    row["files"] = len(state.get("files") or [])
    return row


def source_rows(sources: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per workflow file of each source's latest sync (one row for a source never
    synced), so a table shows title, task count and validity beside the commit."""
    rows: list[dict[str, Any]] = []
    for source in sources:
        syncs = source.get("syncs") or [{}]
        for state in syncs:
            base = {
                "source": source["name"],
                "type": source.get("type"),
                "backend": state.get("backend") or source.get("backend"),
                "branch": state.get("branch") or source.get("branch"),
                "sha": state.get("sha"),
                "synced_at": state.get("synced_at"),
                "error": state.get("error"),
            }
            files = state.get("files") or [{}]
            for file in files:
                issues = "; ".join(file.get("issues") or [])
                rows.append(
                    {
                        **base,
                        "file": file.get("path"),
                        "title": file.get("title"),
                        "tasks": file.get("tasks"),
                        "valid": file.get("valid"),
                        "issues": issues,
                    }
                )
    return rows


def run_row(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run's JSON with its task counts as one column per task state."""
    counts = run.get("counts") or {}
    row = {key: value for key, value in run.items() if key != "counts"}
    row.update({state: int(counts.get(state, 0)) for state in TASK_STATES})
    return row


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Table:
    """A DataFrame (known columns first, times as UTC timestamps), or the rows as dicts."""
    plain = [dict(row) for row in rows]
    try:
        pandas = importlib.import_module("pandas")
    except ImportError:
        return plain
    frame = pandas.DataFrame(plain, columns=ordered_columns(plain, columns))
    for column in frame.columns:
        if str(column).endswith("_at"):
            frame[column] = pandas.to_datetime(frame[column], unit="s", utc=True)
    return frame


def ordered_columns(rows: Iterable[Mapping[str, Any]], preferred: Sequence[str]) -> list[str]:
    """`preferred`, then any other key of the rows in the order first seen."""
    seen = dict.fromkeys(preferred)
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as aligned plain text (for when pandas is not there)."""
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = [list(columns), *cells]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)
