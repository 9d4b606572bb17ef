"""What the engine keeps in memory: active runs, jobs it tracks per backend, the changes
of one step, and the pure helpers that turn records into jobs and back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scripthut.backends.base import Backend, JobPaths, JobRef, JobSpec, JobStatus
from scripthut.engine.graph import RunGraph
from scripthut.engine.jobs import BuiltJob, RunContext
from scripthut.states import JobState, TaskState
from scripthut.store import (
    AttemptRecord,
    RunRecord,
)
from scripthut.store.store import AttemptKey
from scripthut.workflow.model import TaskSpec

GENERATED_SOURCE_LIMIT = 64 << 20
RETRY_FIRST = 2.0  # seconds before an unreachable backend is tried again; doubles up to
RETRY_MAX = 60.0

JOB_TO_TASK = {
    JobState.PENDING: TaskState.SUBMITTED,
    JobState.RUNNING: TaskState.RUNNING,
    JobState.COMPLETED: TaskState.COMPLETED,
    JobState.FAILED: TaskState.FAILED,
    JobState.CANCELLED: TaskState.CANCELLED,
}


@dataclass(slots=True)
class ActiveRun:
    """A run the engine drives: its record, DAG state and task specs."""

    record: RunRecord
    graph: RunGraph
    specs: dict[str, TaskSpec]
    seqs: dict[str, int]
    attempts: dict[str, int]
    context: RunContext
    next_seq: int


@dataclass(slots=True)
class Tracked:
    """A job on a backend that belongs to a task of an active run."""

    run_id: str
    task_id: str
    attempt: int
    ref: JobRef
    state: TaskState
    started_at: float | None = None
    cancel_sent: bool = False

    @property
    def key(self) -> AttemptKey:
        return self.run_id, self.task_id, self.attempt


@dataclass(slots=True)
class Intent:
    """A submission recorded but not confirmed: the job may or may not exist."""

    run_id: str
    task_id: str
    spec: JobSpec


@dataclass(slots=True)
class Zombie:
    """A job that may exist for a task already final: its run was cancelled while the
    backend could not be reached. It is looked up (if its submission was never confirmed)
    and cancelled once the backend answers; its attempt row stays open until then."""

    run_id: str
    task_id: str
    attempt: int
    job_id: str | None  # None: the submission was never confirmed

    @property
    def key(self) -> AttemptKey:
        return self.run_id, self.task_id, self.attempt


@dataclass(slots=True)
class BackendSlot:
    """Per-backend loop state."""

    backend: Backend
    runs: list[str] = field(default_factory=list)
    tracked: dict[str, Tracked] = field(default_factory=dict)
    intents: dict[str, Intent] = field(default_factory=dict)
    needs_find: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    interval: float = 1.0
    next_poll: float = 0.0
    external: list[JobStatus] | None = None
    started: bool = False
    polls: int = 0
    task: asyncio.Task[None] | None = None
    zombies: dict[str, Zombie] = field(default_factory=dict)
    down_since: float | None = None  # wall time of the first failure in a row
    down_error: str = ""
    retry_delay: float = RETRY_FIRST
    retry_at: float = 0.0  # monotonic; no traffic to the backend before this while down

    @property
    def active(self) -> int:
        return len(self.tracked) + len(self.intents)


class Changes:
    """State changes gathered during one step, committed in one transaction."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, str, dict[str, Any]]] = []
        self.attempts: list[tuple[AttemptKey, dict[str, Any]]] = []
        self.events: list[tuple[str, str | None, str | None, dict[str, Any]]] = []
        self.runs_touched: set[str] = set()

    def task(self, run_id: str, task_id: str, **fields: Any) -> None:
        self.tasks.append((run_id, task_id, fields))
        data = {k: (v.value if isinstance(v, TaskState) else v) for k, v in fields.items()}
        self.events.append(("task", run_id, task_id, data))
        self.runs_touched.add(run_id)

    def attempt(self, key: AttemptKey, **fields: Any) -> None:
        self.attempts.append((key, fields))

    def __bool__(self) -> bool:
        return bool(self.tasks or self.attempts or self.events)


def clock(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def is_backend_notice(message: str | None) -> bool:
    """A run message the engine set about its backend (cleared when the backend is back)."""
    return (
        bool(message)
        and str(message).startswith("backend '")
        and (" unreachable since " in str(message) or str(message).endswith(" is not configured"))
    )


def task_key(change: tuple[str, str, Mapping[str, Any]]) -> tuple[str, str]:
    return change[0], change[1]


def attempt_key(change: tuple[AttemptKey, Mapping[str, Any]]) -> AttemptKey:
    return change[0]


def spec_key(spec: JobSpec) -> AttemptKey:
    return spec.run_id, spec.task_id, spec.attempt


def attempt_record(job: BuiltJob, backend: str, now: float) -> AttemptRecord:
    spec = job.spec
    return AttemptRecord(
        run_id=spec.run_id,
        task_id=spec.task_id,
        attempt=spec.attempt,
        tag=spec.tag,
        backend=backend,
        state="intent",
        script=spec.script,
        env=job.env,
        stdout_path=spec.paths.stdout,
        stderr_path=spec.paths.stderr,
        exit_path=spec.paths.exit_code,
        script_path=spec.paths.script,
        time_limit_s=spec.time_limit_s,
        created_at=now,
    )


def ref_from(attempt: AttemptRecord) -> JobRef:
    paths = JobPaths(
        attempt.stdout_path, attempt.stderr_path, attempt.exit_path, attempt.script_path
    )
    return JobRef(
        attempt.job_id or attempt.tag,
        attempt.tag,
        paths,
        attempt.time_limit_s,
        attempt.submitted_at or attempt.created_at,
    )


def spec_from(attempt: AttemptRecord, run: ActiveRun) -> JobSpec:
    """The spec of a recorded intent, rebuilt exactly from what the store holds."""
    task = run.specs[attempt.task_id]
    return JobSpec(
        tag=attempt.tag,
        run_id=attempt.run_id,
        task_id=attempt.task_id,
        attempt=attempt.attempt,
        name=task.name,
        script=attempt.script,
        paths=ref_from(attempt).paths,
        working_dir=run.context.working_dir(task),
        cpus=task.cpus,
        memory_mb=task.memory_mb,
        time_limit_s=task.time_limit_s,
        partition=task.partition,
        gres=task.gres,
        image=task.image,
        env={k: v["value"] for k, v in attempt.env.get("values", {}).items()}
        if isinstance(attempt.env.get("values"), dict)
        else {},
    )
