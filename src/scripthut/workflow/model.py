"""The parsed, validated shape of a workflow document (the original task JSON format)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scripthut.env_rules import EnvRule

DEFAULT_WORKING_DIR = "~"
DEFAULT_PARTITION = "normal"
DEFAULT_CPUS = 1
DEFAULT_MEMORY = "4G"
DEFAULT_TIME_LIMIT = "1:00:00"


@dataclass(slots=True)
class TaskSpec:
    """One task as the user wrote it, after validation (defaults filled in).

    `deps` holds the patterns as written; the expanded dependency ids live in
    `Workflow.deps`. `memory_mb` and `time_limit_s` are the parsed forms of
    `memory` and `time_limit`.
    """

    id: str
    command: str
    name: str
    deps: tuple[str, ...] = ()
    working_dir: str = DEFAULT_WORKING_DIR
    partition: str = DEFAULT_PARTITION
    cpus: int = DEFAULT_CPUS
    memory: str = DEFAULT_MEMORY
    time_limit: str = DEFAULT_TIME_LIMIT
    output_file: str | None = None
    error_file: str | None = None
    env: tuple[EnvRule, ...] = ()
    generates_source: str | None = None
    gres: str | None = None
    image: str | None = None
    notebook: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    cache: bool = True
    cache_scope: str = "commit"
    memory_mb: int = 4096
    time_limit_s: int = 3600
    working_dir_given: bool = field(default=False, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The task in the original JSON shape (fields at their default are omitted)."""
        out: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.notebook is None:
            out["command"] = self.command
        else:
            out["notebook"] = self.notebook
            if self.parameters:
                out["parameters"] = self.parameters
        if self.deps:
            out["deps"] = list(self.deps)
        if self.working_dir != DEFAULT_WORKING_DIR:
            out["working_dir"] = self.working_dir
        if self.partition != DEFAULT_PARTITION:
            out["partition"] = self.partition
        if self.cpus != DEFAULT_CPUS:
            out["cpus"] = self.cpus
        if self.memory != DEFAULT_MEMORY:
            out["memory"] = self.memory
        if self.time_limit != DEFAULT_TIME_LIMIT:
            out["time_limit"] = self.time_limit
        for key in ("output_file", "error_file", "generates_source", "gres", "image"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.env:
            out["env"] = [
                rule.model_dump(by_alias=True, exclude_defaults=True) for rule in self.env
            ]
        for key in ("inputs", "outputs"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        if not self.cache:
            out["cache"] = False
        if self.cache_scope != "commit":
            out["cache_scope"] = self.cache_scope
        return out


@dataclass(slots=True)
class Workflow:
    """A validated workflow: tasks in document order and their expanded dependencies.

    `deps[task_id]` lists the ids the task waits for (wildcards already expanded,
    duplicates removed, in first-seen order). `title`, `env` and `env_groups` are the
    document-level parts of the `{"tasks": [...]}` form (empty for a bare array).
    """

    tasks: list[TaskSpec]
    deps: dict[str, list[str]]
    env: list[EnvRule] = field(default_factory=list)
    env_groups: dict[str, list[EnvRule]] = field(default_factory=dict)
    title: str | None = None
    _positions: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def task(self, task_id: str) -> TaskSpec:
        """The task with this id (KeyError if none); a dict lookup, rebuilt if `tasks` changed."""
        found = self._lookup(task_id)
        if found is None:
            self._positions = {}
            for position, task in enumerate(self.tasks):
                self._positions.setdefault(task.id, position)
            found = self._lookup(task_id)
        if found is None:
            raise KeyError(task_id)
        return found

    def _lookup(self, task_id: str) -> TaskSpec | None:
        position = self._positions.get(task_id)
        if position is None or position >= len(self.tasks):
            return None
        task = self.tasks[position]
        return task if task.id == task_id else None

    def to_document(self) -> dict[str, Any]:
        """The workflow in the original `{"tasks": [...]}` shape."""
        doc: dict[str, Any] = {"title": self.title} if self.title else {}
        doc["tasks"] = [task.to_dict() for task in self.tasks]
        if self.env:
            doc["env"] = [
                rule.model_dump(by_alias=True, exclude_defaults=True) for rule in self.env
            ]
        if self.env_groups:
            doc["env_groups"] = {
                name: [rule.model_dump(by_alias=True, exclude_defaults=True) for rule in rules]
                for name, rules in self.env_groups.items()
            }
        return doc
