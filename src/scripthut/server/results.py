"""A task's outputs and a run's summary as the API gives them: listings from the store,
contents read through the task's backend, only for files a listing recorded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scripthut.backends.registry import BackendRegistry
from scripthut.errors import NotFound
from scripthut.outputs import (
    CONTENT_LIMIT,
    OutputListing,
    check_relative,
    kind_of,
    media_type,
)
from scripthut.sanitize import sanitize_html
from scripthut.server.errors import PayloadTooLarge
from scripthut.store import Store


@dataclass(frozen=True, slots=True)
class OutputContent:
    data: bytes
    media_type: str


def outputs_json(store: Store, run_id: str, task_id: str, attempt: int | None) -> dict[str, Any]:
    """The listing of a task's attempt (the latest by default)."""
    store.task(run_id, task_id)
    record = store.attempt(run_id, task_id, attempt)
    head = {"run": run_id, "task": task_id, "attempt": record.attempt}
    if record.cached:  # no job ran: no output folder; its declared outputs were restored
        return {**head, **OutputListing("", ()).to_json(), "cached": True}
    listing = store.outputs(run_id, task_id, record.attempt)
    return {**head, **listing.to_json()}


async def read_output(
    store: Store,
    registry: BackendRegistry,
    run_id: str,
    task_id: str,
    path: str,
    attempt: int | None,
) -> OutputContent:
    """One recorded output's bytes; HTML comes sanitised, never as written."""
    check_relative(path)
    store.task(run_id, task_id)
    record = store.attempt(run_id, task_id, attempt)
    listing = store.outputs(run_id, task_id, record.attempt)
    if listing.find(path) is None:
        raise NotFound(f"task '{task_id}' of run '{run_id}' recorded no output '{path}'")
    backend = registry.get(record.backend)
    chunk = await backend.read_log(f"{listing.directory}/{path}", 0, CONTENT_LIMIT + 1)
    if chunk.missing:
        raise NotFound(f"output '{path}' of task '{task_id}' is no longer there")
    if chunk.size > CONTENT_LIMIT:
        raise PayloadTooLarge(f"output '{path}' is larger than {CONTENT_LIMIT} bytes")
    if kind_of(path) == "html":
        text = sanitize_html(chunk.data.decode("utf-8", errors="replace"))
        return OutputContent(text.encode(), media_type(path))
    return OutputContent(chunk.data, media_type(path))


def summary_json(store: Store, run_id: str) -> dict[str, Any]:
    """Every task's summary text and outputs, and the whole as one Markdown document."""
    run = store.get_run(run_id)
    tasks = [
        {"task": task_id, "attempt": attempt, **listing.to_json()}
        for task_id, attempt, listing in store.run_outputs(run_id)
    ]
    return {
        "run": run_id,
        "name": run.name,
        "tasks": tasks,
        "markdown": summary_markdown(run.name, tasks),
    }


def summary_markdown(name: str, tasks: list[dict[str, Any]]) -> str:
    """Each task's summary text, then an index of its outputs."""
    parts = [f"# {name}\n"]
    for task in tasks:
        if not task["summary"] and not task["files"]:
            continue
        parts.append(f"## {task['task']}\n")
        if task["summary"]:
            parts.append(task["summary"].rstrip() + "\n")
        if task["files"]:
            parts.append("\n".join(f"- `{f['path']}` ({_size(f['size'])})" for f in task["files"]))
            parts.append("")
    return "\n".join(parts)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
