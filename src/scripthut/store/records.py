"""Plain records read from and written to the store.

Their `to_json` is what every view shows, so URL credentials and webhook paths in names,
messages and reasons are masked there (scripthut.secrets); the records keep them as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scripthut.secrets import mask_urls
from scripthut.states import RunState, TaskState


@dataclass(slots=True)
class RunRecord:
    id: str
    name: str
    backend: str
    state: RunState
    created_at: float
    max_concurrent: int | None = None
    source: str | None = None
    base_dir: str | None = None
    document: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None
    cancel_requested: bool = False
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": mask_urls(self.name),
            "backend": self.backend,
            "state": self.state.value,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "max_concurrent": self.max_concurrent,
            "source": self.source,
            "cancel_requested": self.cancel_requested,
            "message": None if self.message is None else mask_urls(self.message),
            "provenance": self.provenance(),
        }

    @property
    def config_dir(self) -> str | None:
        """The folder whose configuration (global file plus the project file found from it)
        the run uses: the one its request named, else its base dir."""
        named = self.document.get("config_dir")
        return named if isinstance(named, str) else self.base_dir

    def provenance(self) -> dict[str, Any] | None:
        """Where a run from a source or a configured workflow's clone came from: the source,
        file and folder, and the repository, branch and commit (URL passwords masked)."""
        source = self.document.get("source")
        if not isinstance(source, dict):
            return None
        git = self.document.get("git")
        if isinstance(git, dict):
            git = {**git, "repo": mask_urls(str(git.get("repo") or ""))}
        return {**source, "git": git}


@dataclass(slots=True)
class TaskRecord:
    run_id: str
    task_id: str
    seq: int
    spec: dict[str, Any]
    deps: list[str]
    state: TaskState = TaskState.PENDING
    attempt: int = 0
    job_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    generated_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "id": self.task_id,
            "name": mask_urls(self.spec.get("name", self.task_id)),
            "state": self.state.value,
            "deps": self.deps,
            "attempt": self.attempt,
            "job_id": self.job_id,
            "exit_code": self.exit_code,
            "reason": None if self.reason is None else mask_urls(self.reason),
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "generated_by": self.generated_by,
        }


@dataclass(slots=True)
class AttemptRecord:
    """One submission of one task: the intent first, then what the scheduler said."""

    run_id: str
    task_id: str
    attempt: int
    tag: str
    backend: str
    state: str  # "intent", then a TaskState value
    script: str
    env: dict[str, Any]
    stdout_path: str
    stderr_path: str
    exit_path: str
    script_path: str
    time_limit_s: int
    created_at: float
    job_id: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    raw_state: str | None = None
    efficiency: dict[str, float] | None = None
    # result cache: {"key", "scope", "inputs"} of a cacheable attempt; "hit": True when the
    # cache completed it (no job, no script, no logs)
    cache: dict[str, Any] | None = None

    @property
    def cached(self) -> bool:
        """Completed by the result cache: nothing ran, no job, no logs."""
        return bool(self.cache and self.cache.get("hit"))

    def cache_note(self) -> str:
        """What a cached attempt's script and log views say instead of a file's text."""
        key = (self.cache or {}).get("key") or "?"
        return f"restored from cache {key}: no job ran, so there is no script or log\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "task": self.task_id,
            "attempt": self.attempt,
            "efficiency": self.efficiency,
            "tag": self.tag,
            "backend": self.backend,
            "state": self.state,
            "job_id": self.job_id,
            "stdout_path": self.stdout_path,
            "stderr_path": self.stderr_path,
            "created_at": self.created_at,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "raw_state": self.raw_state,
            "cached": self.cached,
            "cache_key": (self.cache or {}).get("key"),
        }


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A change, as views see it. `id` increases; a client resumes from the last id seen."""

    id: int
    ts: float
    kind: str
    run_id: str | None
    task_id: str | None
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts,
            "kind": self.kind,
            "run": self.run_id,
            "task": self.task_id,
            **self.data,
        }
