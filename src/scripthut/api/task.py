"""`Task`: one task of a workflow, built in Python; and the inputs `run()` accepts."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scripthut.client import WorkflowInput
from scripthut.workflow.model import Workflow


class Task:
    """A task in the workflow JSON format: an id, a shell command, dependencies, fields.

    `fields` are the format's other keys (`cpus`, `memory`, `time_limit`, `partition`,
    `working_dir`, `env`, `generates_source`, ...); they are checked, with every other
    task, by the same parser as a workflow file when the run is submitted.
    """

    __slots__ = ("command", "deps", "fields", "id")

    def __init__(
        self, id: str, command: str, deps: Iterable[str] | str = (), **fields: Any
    ) -> None:
        self.id = id
        self.command = command
        self.deps: tuple[str, ...] = (deps,) if isinstance(deps, str) else tuple(deps)
        self.fields: dict[str, Any] = fields

    def to_dict(self) -> dict[str, Any]:
        """The task as a workflow document writes it."""
        out: dict[str, Any] = {"id": self.id, "command": self.command}
        if self.deps:
            out["deps"] = list(self.deps)
        out.update(self.fields)
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash((self.id, self.command, self.deps))

    def __repr__(self) -> str:
        extra = "".join(f", {key}={value!r}" for key, value in self.fields.items())
        deps = f", deps={list(self.deps)!r}" if self.deps else ""
        return f"Task({self.id!r}, {self.command!r}{deps}{extra})"


RunInput = (
    str
    | os.PathLike[str]
    | Workflow
    | Task
    | Mapping[str, Any]
    | Sequence[Task | Mapping[str, Any]]
)


def workflow_input(workflow: RunInput) -> WorkflowInput:
    """What the client submits: a path, a `Workflow`, or a document with `Task`s as dicts."""
    if isinstance(workflow, str | os.PathLike | Workflow):
        return workflow
    if isinstance(workflow, Task):
        return [workflow.to_dict()]
    if isinstance(workflow, Mapping):
        document = dict(workflow)
        tasks = document.get("tasks")
        if isinstance(tasks, list | tuple):
            document["tasks"] = [_task_json(task) for task in tasks]
        return document
    return [_task_json(task) for task in workflow]


def _task_json(task: object) -> object:
    """A `Task` as a dict; anything else as it is, for the parser to judge."""
    return task.to_dict() if isinstance(task, Task) else task
