"""A job of the local backend, and the watching and stopping of its process.

`LocalJob` is what the backend knows of one job: its own (spec set) or adopted from an
earlier engine process; `finish` and `status` turn its record into a final state and a
`JobStatus`. `Reaper` calls back when a job's process ends (a pidfd per child, else a
waiting thread) and stops process groups: SIGTERM now, SIGKILL after a grace if they linger.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from scripthut.backends import local_proc
from scripthut.backends.base import JobPaths, JobSpec, JobStatus
from scripthut.states import JobState

KILL_GRACE_S = 10.0
_GROUP_CHECK_S = 0.05
LOST = "process ended without recording an exit code (killed?)"


@dataclass(slots=True, eq=False)
class LocalJob:
    """One job this process knows of: its own (spec set) or adopted from an earlier one."""

    job_id: str
    paths: JobPaths
    time_limit_s: int
    spec: JobSpec | None = None
    cpus: int = 1
    state: JobState = JobState.PENDING
    raw_state: str = "QUEUED"
    reason: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    cancelled: bool = False
    timed_out: bool = False
    missing_since: float | None = None
    timer: asyncio.TimerHandle | None = None
    watch_fd: int | None = None
    reported: bool = False

    def finish(self, code: int | None, reason: str | None, raw: str = "FAILED") -> None:
        """Make the job final: exit code and reason, or cancellation and time limit first."""
        self.ended_at = time.time()
        self.exit_code = code
        if self.cancelled:
            self.state, self.raw_state, self.reason = JobState.CANCELLED, "CANCELLED", "cancelled"
        elif self.timed_out:
            self.state, self.raw_state = JobState.FAILED, "TIMEOUT"
            self.reason = f"time limit exceeded ({self.time_limit_s} s)"
        elif code == 0:
            self.state, self.raw_state, self.reason = JobState.COMPLETED, "COMPLETED", None
        else:
            self.state, self.raw_state = JobState.FAILED, raw
            self.reason = reason or (local_proc.describe_exit(code) if code is not None else LOST)

    def status(self, node: str) -> JobStatus:
        reason = self.reason
        if self.state is JobState.PENDING and reason is None:
            starting = self.raw_state == "STARTING"
            reason = "starting" if starting else "waiting for free cpus or a free slot"
        return JobStatus(
            job_id=self.job_id,
            state=self.state,
            raw_state=self.raw_state,
            exit_code=self.exit_code,
            reason=reason,
            name=self.spec.name if self.spec else None,
            node=node,
            submitted_at=self.submitted_at,
            started_at=self.started_at,
            ended_at=self.ended_at,
            cpus=self.cpus if self.spec else None,
        )


class Reaper:
    """Watches job processes end, and stops process groups."""

    def __init__(self, kill_grace_s: float = KILL_GRACE_S) -> None:
        self.kill_grace_s = kill_grace_s
        self._killers: dict[int, asyncio.Task[None]] = {}

    def watch(self, job: LocalJob, on_gone: Callable[[LocalJob], None]) -> None:
        """Call `on_gone(job)` when the job's process ends: a pidfd, else a waiting thread."""
        assert job.pid is not None
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(job.pid)
        except (AttributeError, OSError):
            if job.popen is not None:
                _wait_in_thread(loop, job, job.popen, on_gone)
            return
        job.watch_fd = fd
        loop.add_reader(fd, on_gone, job)

    @staticmethod
    def unwatch(job: LocalJob) -> None:
        if job.watch_fd is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(job.watch_fd)
            os.close(job.watch_fd)
            job.watch_fd = None

    def terminate(self, job: LocalJob) -> None:
        """SIGTERM to the job's process group now, SIGKILL after the grace if it lingers."""
        assert job.pid is not None
        pgid = job.pid
        local_proc.signal_group(pgid, signal.SIGTERM)
        if pgid not in self._killers:
            task = asyncio.get_running_loop().create_task(self._kill_after_grace(pgid))
            self._killers[pgid] = task

    async def _kill_after_grace(self, pgid: int) -> None:
        deadline = time.monotonic() + self.kill_grace_s
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(_GROUP_CHECK_S)
                if not local_proc.group_exists(pgid):
                    return
            local_proc.signal_group(pgid, signal.SIGKILL)
        finally:
            self._killers.pop(pgid, None)

    async def kill_now(self) -> None:
        """SIGKILL to every group still within its grace (the backend is closing)."""
        killers = list(self._killers.items())
        for pgid, task in killers:
            local_proc.signal_group(pgid, signal.SIGKILL)
            task.cancel()
        await asyncio.gather(*(task for _, task in killers), return_exceptions=True)


def _wait_in_thread(
    loop: asyncio.AbstractEventLoop,
    job: LocalJob,
    popen: subprocess.Popen[bytes],
    on_gone: Callable[[LocalJob], None],
) -> None:
    def wait() -> None:
        popen.wait()
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(on_gone, job)

    threading.Thread(target=wait, name=f"scripthut-wait-{popen.pid}", daemon=True).start()
