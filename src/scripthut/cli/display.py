"""What the CLI shows: live progress, summary tables, run lists."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scripthut.cost import RunCost
from scripthut.secrets import SecretMasker, document_pairs, spec_pairs
from scripthut.states import TaskState
from scripthut.store import RunRecord, TaskRecord

STATE_STYLE = {
    "pending": "dim",
    "submitted": "cyan",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "dep_failed": "magenta",
    "cancelled": "yellow",
}
SUMMARY_ROWS = 40

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def counts_text(counts: Mapping[str, int]) -> str:
    parts = [
        f"[{STATE_STYLE[s.value]}]{s.value} {counts[s.value]}[/]"
        for s in TaskState
        if counts.get(s.value)
    ]
    return "  ".join(parts)


class LiveProgress:
    """A progress bar with counts per state on a terminal; periodic lines elsewhere."""

    def __init__(self, run: RunRecord, total: int, *, enabled: bool) -> None:
        self.run = run
        self.total = total
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._progress: Progress | None = None
        self._task_id: Any = None
        self._last_line = 0.0
        self._last_text = ""

    def __enter__(self) -> LiveProgress:
        if self.enabled and self.tty:
            self._progress = Progress(
                TextColumn(f"[bold]{self.run.name}[/] {self.run.id}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=err,
                transient=False,
            )
            self._progress.__enter__()
            self._task_id = self._progress.add_task("", total=self.total)
        elif self.enabled:
            err.print(
                f"run {self.run.id} ({self.run.name}) on {self.run.backend}: {self.total} tasks"
            )
        return self

    def update(self, counts: Mapping[str, int], total: int) -> None:
        done = sum(counts.get(s.value, 0) for s in TaskState if s.is_final)
        if self._progress is not None:
            self._progress.update(
                self._task_id, completed=done, total=total, description=counts_text(counts)
            )
            return
        if not self.enabled:
            return
        text = counts_text(counts)
        now = time.monotonic()
        if text != self._last_text and now - self._last_line >= 2.0:
            err.print(f"{done}/{total}  {text}")
            self._last_line, self._last_text = now, text

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)


def masked(run: RunRecord, tasks: Sequence[TaskRecord]) -> tuple[RunRecord, list[TaskRecord]]:
    """The run and tasks with secret values (scripthut.secrets) masked in shown text."""
    masker = SecretMasker(
        [*document_pairs(run.document), *(p for t in tasks for p in spec_pairs(t.spec))]
    )
    shown = replace(run, name=masker.text(run.name), message=_text(masker, run.message))
    out = []
    for task in tasks:
        name = task.spec.get("name")
        spec = {**task.spec, "name": masker.text(name)} if isinstance(name, str) else task.spec
        out.append(replace(task, spec=spec, reason=_text(masker, task.reason)))
    return shown, out


def _text(masker: SecretMasker, text: str | None) -> str | None:
    return None if text is None else masker.text(text)


def cost_json(cost: RunCost, *, priced: bool) -> dict[str, Any]:
    """A run's cost for `show --json`: the totals (each task's cost is on its task)."""
    doc = cost.to_json()
    del doc["items"]
    return {"priced": priced, **doc}


def summary_table(
    run: RunRecord, tasks: Sequence[TaskRecord], costs: Mapping[str, float | None] | None = None
) -> Table:
    """Failed tasks first, then the rest, at most SUMMARY_ROWS rows; a cost column when
    `costs` (task -> USD, None: not costed) is given."""
    order = {
        "failed": 0,
        "dep_failed": 1,
        "cancelled": 2,
        "running": 3,
        "submitted": 4,
        "pending": 5,
    }
    rows = sorted(tasks, key=lambda t: (order.get(t.state.value, 9), t.seq))
    table = Table(title=f"run {run.id} ({run.name}) — {run.state.value}", title_justify="left")
    columns = ("task", "state", "exit", "time", *(("cost",) if costs is not None else ()))
    for column in (*columns, "reason"):
        table.add_column(column, overflow="fold")
    for task in rows[:SUMMARY_ROWS]:
        cells = [
            task.task_id,
            f"[{STATE_STYLE[task.state.value]}]{task.state.value}[/]",
            "" if task.exit_code is None else str(task.exit_code),
            duration(task.started_at, task.ended_at),
        ]
        if costs is not None:
            cells.append(money(costs.get(task.task_id)))
        table.add_row(*cells, task.reason or "")
    if len(rows) > SUMMARY_ROWS:
        table.caption = f"{len(rows) - SUMMARY_ROWS} more tasks not shown (scripthut show {run.id})"
    return table


def runs_table(runs: Sequence[tuple[RunRecord, Mapping[str, int]]]) -> Table:
    table = Table()
    table.add_column("run", no_wrap=True)
    for column in ("name", "backend", "state", "tasks", "created"):
        table.add_column(column)
    for run, counts in runs:
        table.add_row(
            run.id,
            run.name,
            run.backend,
            f"[{STATE_STYLE.get(run.state.value, '')}]{run.state.value}[/]",
            counts_text(counts),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created_at)),
        )
    return table


def money(value: float | None) -> str:
    return "not costed" if value is None else f"${value:,.2f}"


def duration(start: float | None, end: float | None) -> str:
    if start is None:
        return ""
    seconds = int((end or time.time()) - start)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
