"""A run's tasks read, specs parsed and DAG built, off the event loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scripthut.engine.graph import Node, RunGraph
from scripthut.states import TaskState
from scripthut.store import (
    Store,
    TaskRecord,
    release,
)
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.parse import parse_document


def parse_specs(run_id: str, specs: list[dict[str, Any]]) -> dict[str, TaskSpec]:
    """Task specs stored with a run, parsed again (their deps are stored expanded)."""
    workflow = parse_document(
        [{k: v for k, v in s.items() if k != "deps"} for s in specs], source=f"run {run_id}"
    )
    return {task.id: task for task in workflow.tasks}


@dataclass(slots=True)
class LoadedRun:
    """A run's tasks read, specs parsed and DAG built: nothing the engine shares yet, so it
    can be prepared in a worker thread and adopted on the loop."""

    graph: RunGraph
    specs: dict[str, TaskSpec]
    seqs: dict[str, int]
    attempts: dict[str, int]
    next_seq: int
    doomed: list[tuple[str, str]]  # (task, failed dependency): to commit as dep_failed
    again: list[str]  # with rerun=True: the tasks made pending again


def load_run(
    store: Store,
    run_id: str,
    tasks: list[TaskRecord] | None = None,
    specs: dict[str, TaskSpec] | None = None,
    *,
    rerun: bool = False,
) -> LoadedRun:
    read = tasks is None
    if tasks is None:
        tasks = store.tasks(run_id)
    if specs is None:
        specs = parse_specs(run_id, [t.spec for t in tasks])
    nodes = [Node(t.task_id, list(t.deps), t.state, in_flight=t.state.is_active) for t in tasks]
    graph = RunGraph(nodes)
    failed = (TaskState.FAILED, TaskState.CANCELLED, TaskState.DEP_FAILED)
    doomed = [
        (task_id, node.task_id)
        for node in nodes
        if node.state in failed
        for task_id in graph._cascade_from(node.task_id, include_root=False)
    ]
    again = graph.rerun() if rerun else []
    loaded = LoadedRun(
        graph=graph,
        specs=specs,
        seqs={t.task_id: t.seq for t in tasks},
        attempts={t.task_id: t.attempt for t in tasks},
        next_seq=max((t.seq for t in tasks), default=-1) + 1,
        doomed=[] if rerun else doomed,  # a rerun makes them pending again anyway
        again=again,
    )
    if read:
        release(tasks)  # in pieces: this runs in the reader thread, beside the loop
    return loaded
