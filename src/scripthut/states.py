"""Task, run and job states shared by every layer."""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    """Where one task of a run stands."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DEP_FAILED = "dep_failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self is not TaskState.PENDING and not self.is_active

    @property
    def is_active(self) -> bool:
        """Holds a job on a backend (counts against max_concurrent)."""
        return self is TaskState.SUBMITTED or self is TaskState.RUNNING


FINAL_TASK_STATES = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.DEP_FAILED, TaskState.CANCELLED}
)
RERUNNABLE_TASK_STATES = frozenset({TaskState.FAILED, TaskState.DEP_FAILED, TaskState.CANCELLED})


class RunState(StrEnum):
    """Where a whole run stands."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self is not RunState.PENDING and self is not RunState.RUNNING


class JobState(StrEnum):
    """A backend's view of one job, in scheduler-neutral words.

    UNKNOWN means the backend could not tell (a failed query, accounting not yet
    written): the engine keeps the task as it was and asks again later.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self is JobState.COMPLETED or self is JobState.FAILED or self is JobState.CANCELLED
