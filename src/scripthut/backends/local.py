"""The local backend: each job is a bash process on this machine, in a session of its own.

Jobs this process started are watched directly (a pidfd per child, no polling): their end
is recorded at once, `changed` is set and the next queued job starts. They are spawned with
subprocess.Popen on a few threads, so that several spawns overlap and the event loop stays
free (asyncio's subprocess transport spawns on the loop, and on Python 3.11 adds a waiting
thread per child). Jobs started by an earlier engine process keep running (they are
detached sessions) and are adopted by `poll`, which finds them again in /proc by their
script path (unique per attempt).

Before a job is launched its tag is written to `log_dir/.tags/<tag>` (the job's paths);
after the launch its pid is appended. `find` reads that index, so a crash at any instant
can be reconciled without starting a job twice.

A job's record and the watching and stopping of its process are in `local_jobs`; files
and /proc in `local_proc`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scripthut import task_env
from scripthut.backends import local_proc
from scripthut.backends.base import (
    Backend,
    BackendInfo,
    JobPaths,
    JobRef,
    JobSpec,
    LogChunk,
    PollResult,
    SubmitOutcome,
)
from scripthut.backends.local_jobs import KILL_GRACE_S, LOST, LocalJob, Reaper
from scripthut.errors import ScriptHutError
from scripthut.outputs import OutputListing, list_local
from scripthut.private import PRIVATE_FILE, make_private_dirs
from scripthut.states import JobState

MISSING_GRACE_S = 30.0
SPAWN_THREADS = 8
SUBMIT_CHUNK = 16
TAGS_DIR = ".tags"
_NEVER_STARTED = "never started: it was still queued when its engine process ended"


class LocalBackend(Backend):
    """Runs each job as `bash <script>` on this machine, within a CPU capacity.

    Jobs queue (PENDING) while their CPUs are short or `max_concurrent` jobs run; the
    queue is first in, first out. A job needing more CPUs than the capacity runs alone
    once the machine is idle. Jobs survive `close()` and an engine restart.
    """

    kind = "local"

    def __init__(
        self,
        name: str,
        *,
        max_concurrent: int,
        log_dir: Path,
        cpus: int | None = None,
        login_shell: bool = False,
        kill_grace_s: float = KILL_GRACE_S,
        missing_grace_s: float = MISSING_GRACE_S,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        super().__init__(name, max_concurrent)
        self.log_dir = Path(log_dir).expanduser().absolute()
        self.cpus = max(1, cpus if cpus is not None else (os.cpu_count() or 1))
        self._reaper = Reaper(kill_grace_s)
        self.missing_grace_s = missing_grace_s
        self._argv = ["bash", "-l"] if login_shell else ["bash"]
        self._home = str(Path.home())
        self._node = socket.gethostname()
        self._jobs: dict[str, LocalJob] = {}
        self._queue: deque[LocalJob] = deque()
        self._running: set[LocalJob] = set()
        self._used_cpus = 0
        self._made_dirs: set[Path] = set()
        self._env: dict[bytes, bytes] = {}
        self._closed = False
        self._spawner = ThreadPoolExecutor(SPAWN_THREADS, thread_name_prefix="scripthut-spawn")

    # -- paths and scripts

    def job_paths(self, run_id: str, task_id: str, attempt: int) -> JobPaths:
        """`log_dir/<run_id>/<task_id>.<attempt>.{out,err,exit,sh}`."""
        local_proc.check_name("run id", run_id)
        local_proc.check_name("task id", task_id)
        base = self.log_dir / run_id / f"{task_id}.{attempt}"
        return JobPaths(
            stdout=f"{base}.out",
            stderr=f"{base}.err",
            exit_code=f"{base}.exit",
            script=f"{base}.sh",
        )

    def render_script(self, spec: JobSpec, body: str) -> str:
        """The body as it is: running locally needs no scheduler header."""
        return body

    def _tag_path(self, tag: str) -> Path:
        return self.log_dir / TAGS_DIR / tag

    # -- submitting and starting

    async def submit(self, jobs: Sequence[JobSpec]) -> list[SubmitOutcome]:
        """Write each script and tag entry, then start what fits now and queue the rest.

        The job id is the tag. An outcome is an error only when the job's files cannot be
        written or its tag is unsafe or already active here.
        """
        outcomes: list[SubmitOutcome] = []
        seen: set[str] = set()
        # Jobs get the environment of their submit without the server's credentials, plus the tag.
        self._env = task_env.inherited(os.environb)
        for start in range(0, len(jobs), SUBMIT_CHUNK):
            # Files are written on a thread, a chunk at a time: jobs of earlier chunks
            # start, end and free their slots meanwhile.
            chunk = [
                (spec, self._problem(spec, seen)) for spec in jobs[start : start + SUBMIT_CHUNK]
            ]
            errors = await asyncio.to_thread(self._write_chunk, chunk)
            outcomes.extend(map(self._accept, [spec for spec, _ in chunk], errors))
            self._pump()
        return outcomes

    def _problem(self, spec: JobSpec, seen: set[str]) -> str | None:
        """Why this job cannot be accepted (an unsafe or active tag), else None."""
        if not local_proc.is_safe_name(spec.tag):
            return "tag is not a safe file name ([A-Za-z0-9_.-])"
        paths = (spec.paths.script, spec.paths.stdout, spec.paths.stderr, spec.paths.exit_code)
        if any("\n" in path for path in paths):
            return "a job's paths cannot contain a newline"
        old = self._jobs.get(spec.tag)
        busy = old is not None and (old.spec is not None or old.pid is not None)
        if spec.tag in seen or (busy and old is not None and not old.state.is_final):
            return "a job with this tag is already queued or running here"
        seen.add(spec.tag)
        return None

    def _write_chunk(self, chunk: list[tuple[JobSpec, str | None]]) -> list[str | None]:
        """Write the files of each acceptable job; the error of each job (None: written)."""
        errors: list[str | None] = []
        for spec, problem in chunk:
            try:
                if problem is None:
                    self._write_files(spec)
            except (OSError, ValueError) as exc:
                problem = str(exc)
            errors.append(problem)
        return errors

    def _accept(self, spec: JobSpec, error: str | None) -> SubmitOutcome:
        if error is not None:
            return SubmitOutcome(error=f"{spec.tag}: {error}")
        job = LocalJob(spec.tag, spec.paths, spec.time_limit_s, spec, max(1, spec.cpus))
        job.submitted_at = time.time()
        if job.cpus > self.cpus:
            job.reason = f"needs {job.cpus} cpus, more than the {self.cpus} here: runs alone"
        self._jobs[spec.tag] = job
        self._queue.append(job)
        return SubmitOutcome(job_id=spec.tag)

    def _write_files(self, spec: JobSpec) -> None:
        paths = spec.paths
        for path in (paths.script, paths.stdout, paths.stderr, paths.exit_code):
            self._make_dir(Path(path).parent)
        local_proc.write_file(paths.script, spec.script.encode(), PRIVATE_FILE)
        self._make_dir(self.log_dir / TAGS_DIR)
        local_proc.write_tag(self._tag_path(spec.tag), paths, max(1, spec.cpus))

    def _make_dir(self, path: Path) -> None:
        if path not in self._made_dirs:
            make_private_dirs(path)
            self._made_dirs.add(path)

    def _fits(self, job: LocalJob) -> bool:
        if len(self._running) >= self.max_concurrent:
            return False
        return not self._running or self._used_cpus + job.cpus <= self.cpus

    def _pump(self) -> None:
        """Start queued jobs, first in first out, while they fit."""
        while self._queue and not self._closed and self._fits(self._queue[0]):
            self._launch(self._queue.popleft())

    def _launch(self, job: LocalJob) -> None:
        """Hold the job's slot and start it on a spawning thread (STARTING until then).

        A spawn blocks its caller until the child has exec'd; threads let several
        overlap, and keep the event loop free meanwhile.
        """
        assert job.spec is not None
        self._hold(job)
        job.raw_state = "STARTING"
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._spawner, self._spawn, job.spec)
        future.add_done_callback(functools.partial(self._started, job))

    def _started(self, job: LocalJob, future: asyncio.Future[subprocess.Popen[bytes]]) -> None:
        error = "cancelled" if future.cancelled() else future.exception()
        if error is not None:
            self._end(job, None, f"could not start: {error}")
            self._pump()
            return
        popen = future.result()
        job.popen, job.pid, job.started_at = popen, popen.pid, time.time()
        job.state, job.raw_state = JobState.RUNNING, "RUNNING"
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        job.timer = loop.call_later(job.time_limit_s, self._time_up, job)
        self._reaper.watch(job, self._on_gone)
        if job.cancelled:
            self._reaper.terminate(job)
        self.changed.set()

    def _spawn(self, spec: JobSpec) -> subprocess.Popen[bytes]:
        """Open the logs and start `bash <script>` in a new session (on a spawning thread).

        The logs are created 0600 and never through a symbolic link (the job fails to start).
        """
        out = local_proc.open_log(spec.paths.stdout)
        try:
            err = local_proc.open_log(spec.paths.stderr)
            try:
                popen = subprocess.Popen(
                    [*self._argv, spec.paths.script],
                    cwd=self._home,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    env={**self._env, b"SCRIPTHUT_TAG": spec.tag.encode()},
                )
                local_proc.note_launch(self._tag_path(spec.tag), popen.pid)
                return popen
            finally:
                os.close(err)
        finally:
            os.close(out)

    def _hold(self, job: LocalJob) -> None:
        self._running.add(job)
        self._used_cpus += min(job.cpus, self.cpus)

    def _release(self, job: LocalJob) -> None:
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        self._reaper.unwatch(job)
        if job in self._running:
            self._running.discard(job)
            self._used_cpus -= min(job.cpus, self.cpus)

    def _on_gone(self, job: LocalJob) -> None:
        self._reaper.unwatch(job)
        if self._closed or job.state.is_final:
            return
        if job.popen is not None:
            self._child_ended(job, job.popen.wait())
        else:
            job.pid = None
            self._take_exit_file(job)
        self._pump()
        self.changed.set()

    def _child_ended(self, job: LocalJob, returncode: int) -> None:
        """Record a child's end: its exit-code file if written, else its return code."""
        code = local_proc.read_exit_code(job.paths.exit_code)
        if code is not None:
            self._end(job, code, None)
        elif returncode < 0:
            reason = f"killed by signal {-returncode} ({local_proc.signal_name(-returncode)})"
            self._end(job, 128 - returncode, reason)
        else:
            self._end(job, returncode, None)
        job.popen = None

    def _end(
        self, job: LocalJob, code: int | None, reason: str | None, raw: str = "FAILED"
    ) -> None:
        """Make the job final (`LocalJob.finish`) and free its slot."""
        self._release(job)
        job.finish(code, reason, raw)
        self.changed.set()

    def _take_exit_file(self, job: LocalJob) -> bool:
        code = local_proc.read_exit_code(job.paths.exit_code)
        if code is None:
            return False
        self._end(job, code, None)
        return True

    # -- stopping processes

    def _time_up(self, job: LocalJob) -> None:
        job.timer = None
        if job.state is JobState.RUNNING and not job.timed_out:
            job.timed_out = True
            self._reaper.terminate(job)

    async def cancel(self, job_ids: Sequence[str]) -> None:
        """Queued jobs are dropped; running ones get SIGTERM, then SIGKILL after the grace.

        Signals go to the whole process group, so background children go too. A job
        from an earlier engine process is found through its tag entry.
        """
        jobs = [job for job in map(self._job_for_cancel, job_ids) if job is not None]
        self._refresh_adopted([job for job in jobs if job.spec is None and job.pid is None])
        for job in jobs:
            self._cancel_one(job)
        self._pump()

    def _job_for_cancel(self, job_id: str) -> LocalJob | None:
        job = self._jobs.get(job_id)
        if job is not None or not local_proc.is_safe_name(job_id):
            return job
        with contextlib.suppress(OSError):
            entry = local_proc.read_tag(self._tag_path(job_id))
            if entry is not None:
                return self._adopt(JobRef(job_id=job_id, tag=job_id, paths=entry.paths))
        return None

    def _cancel_one(self, job: LocalJob) -> None:
        if job.state.is_final:
            return
        job.cancelled = True
        if job in self._queue:
            self._queue.remove(job)
            self._end(job, None, None)
        elif job.pid is not None:
            self._reaper.terminate(job)
        elif job.spec is None:
            self._end(job, None, None)

    # -- polling

    async def poll(self, jobs: Sequence[JobRef]) -> PollResult:
        """The state of each job, in one pass; never blocks on a job.

        Jobs this process started are answered from memory. Others (adopted after an
        engine restart) are looked for in /proc by script path (RUNNING, and watched from
        then on), else their exit-code file gives the final state. With neither, the job
        is UNKNOWN ("no process and no exit code") for `missing_grace_s`, then FAILED
        (raw state LOST): a never-started job (its tag entry has no launch: it was still
        queued when its engine ended) or one killed before it could record its code.
        The grace keeps a passing oddity from failing a task; past it, UNKNOWN forever
        would leave the task hanging. When /proc cannot be read they stay UNKNOWN.
        Adopted jobs past `time_limit_s` (from the process's start time, else the
        ref's `submitted_at`) are terminated and end FAILED with raw state TIMEOUT.
        """
        records = [self._jobs.get(ref.job_id) or self._adopt(ref) for ref in jobs]
        self._refresh_adopted([job for job in records if job.spec is None])
        self._pump()
        result = PollResult(jobs={job.job_id: job.status(self._node) for job in records})
        self._forget_reported({job.job_id for job in records})
        for job in records:
            job.reported = job.state.is_final
        return result

    def _adopt(self, ref: JobRef) -> LocalJob:
        job = LocalJob(ref.job_id, ref.paths, ref.time_limit_s, state=JobState.UNKNOWN)
        job.raw_state = "UNKNOWN"
        job.submitted_at = ref.submitted_at or None
        self._jobs[ref.job_id] = job
        return job

    def _refresh_adopted(self, jobs: list[LocalJob]) -> None:
        """Update adopted jobs from /proc and their exit-code files (one /proc scan at most)."""
        unresolved = [job for job in jobs if not job.state.is_final and not self._settled(job)]
        if unresolved:
            procs = local_proc.scan({job.paths.script for job in unresolved})
            for job in unresolved:
                proc = procs.get(job.paths.script) if procs is not None else None
                if proc is not None:
                    self._adopt_running(job, proc)
                elif not self._take_exit_file(job):
                    self._missing(job, procs is not None)
        for job in jobs:
            self._check_time_limit(job)

    def _settled(self, job: LocalJob) -> bool:
        """Whether a known pid still runs the job, or its exit-code file ends it."""
        if job.pid is not None and local_proc.runs_script(job.pid, job.paths.script):
            return True
        if job.pid is not None:
            self._reaper.unwatch(job)
            job.pid = None
        return self._take_exit_file(job)

    def _adopt_running(self, job: LocalJob, proc: local_proc.Proc) -> None:
        job.pid, job.missing_since = proc.pid, None
        job.started_at = proc.started_at or job.submitted_at or time.time()
        job.state, job.raw_state, job.reason = JobState.RUNNING, "RUNNING", None
        if job not in self._running:
            self._hold(job)
        if job.watch_fd is None:
            self._reaper.watch(job, self._on_gone)

    def _missing(self, job: LocalJob, can_tell: bool) -> None:
        job.state, job.raw_state = JobState.UNKNOWN, "UNKNOWN"
        if not can_tell:
            job.reason = "cannot list processes (/proc unreadable)"
            return
        if job.cancelled or job.timed_out:  # we signalled it: it may end before its trap is set
            self._end(job, None, None)
            return
        entry = self._entry(job.job_id)
        if entry is not None and not entry.launched and os.path.exists(entry.paths.script):
            self._requeue(job, entry)
            return
        now = time.monotonic()
        job.missing_since = job.missing_since or now
        job.reason = "no process and no exit code"
        if now - job.missing_since >= self.missing_grace_s:
            self._end(job, None, self._lost_reason(job.job_id), raw="LOST")

    def _entry(self, tag: str) -> local_proc.TagEntry | None:
        try:
            return (
                local_proc.read_tag(self._tag_path(tag)) if local_proc.is_safe_name(tag) else None
            )
        except OSError:
            return None

    def _requeue(self, job: LocalJob, entry: local_proc.TagEntry) -> None:
        """A job accepted by an earlier engine but never started: it joins this queue.

        It never ran (no launch in its entry, no process, no exit code), so starting it
        now runs it exactly once.
        """
        job.spec = JobSpec(
            tag=job.job_id, run_id="", task_id="", attempt=0, name=job.job_id, script="",
            paths=entry.paths, working_dir="", cpus=entry.cpus, time_limit_s=job.time_limit_s,
        )  # fmt: skip
        job.cpus, job.missing_since = entry.cpus, None
        job.state, job.raw_state = JobState.PENDING, "QUEUED"
        job.reason = "queued again: accepted before an engine restart, never started"
        self._queue.append(job)

    def _lost_reason(self, tag: str) -> str:
        entry = self._entry(tag)
        return _NEVER_STARTED if entry is not None and not entry.launched else LOST

    def _check_time_limit(self, job: LocalJob) -> None:
        start = job.started_at
        if job.state is not JobState.RUNNING or job.timed_out or start is None:
            return
        if time.time() - start > job.time_limit_s:
            job.timed_out = True
            self._reaper.terminate(job)

    def _forget_reported(self, polled: set[str]) -> None:
        """Drop jobs whose final state was reported and that are no longer polled."""
        stale = [key for key, job in self._jobs.items() if job.reported and key not in polled]
        for key in stale:
            del self._jobs[key]

    # -- finding jobs again

    async def find(self, tags: Sequence[str]) -> dict[str, str] | None:
        """Tags of jobs that were submitted here (tag -> job id, which is the tag).

        Found: a job this process accepted, or one whose tag entry records a launch, or
        whose exit-code file exists, or whose script runs now (a crash right after the
        launch). Not found: no tag entry, or an entry whose job never started (it was
        queued, or the crash came before the launch); such a tag may be submitted again.
        None when the tag index or /proc cannot be read.
        """
        found: dict[str, str] = {}
        unsure: dict[str, tuple[str, JobPaths]] = {}
        for tag in tags:
            job = self._jobs.get(tag)
            if job is not None and job.spec is not None:
                found[tag] = tag
                continue
            try:
                entry = (
                    local_proc.read_tag(self._tag_path(tag))
                    if local_proc.is_safe_name(tag)
                    else None
                )
            except OSError:
                return None
            if entry is not None and (entry.launched or os.path.exists(entry.paths.exit_code)):
                found[tag] = tag
            elif entry is not None:
                unsure[entry.paths.script] = (tag, entry.paths)
        return self._find_running(unsure, found)

    @staticmethod
    def _find_running(
        unsure: dict[str, tuple[str, JobPaths]], found: dict[str, str]
    ) -> dict[str, str] | None:
        if not unsure:
            return found
        procs = local_proc.scan(set(unsure))
        if procs is None:
            return None
        for script, (tag, paths) in unsure.items():
            if script in procs or os.path.exists(paths.exit_code):
                found[tag] = tag
        return found

    # -- logs, capacity, shutdown

    async def read_log(self, path: str, offset: int = 0, limit: int = 1 << 20) -> LogChunk:
        """Up to `limit` bytes from `offset` (negative: from the end); a missing file is
        a chunk with `missing=True`."""
        return await asyncio.to_thread(local_proc.read_chunk, path, offset, limit)

    async def read_text(self, path: str, limit: int = 16 << 20) -> str:
        """The file as text; NotFound if absent, ScriptHutError if over `limit` bytes."""
        return await asyncio.to_thread(local_proc.read_text, path, limit)

    async def list_outputs(self, pairs: Sequence[tuple[str, str]]) -> dict[str, OutputListing]:
        """Each attempt's output folder and summary, read here (symbolic links skipped)."""

        def listings() -> dict[str, OutputListing]:
            return {d: list_local(d, s) for d, s in pairs}

        return await asyncio.to_thread(listings)

    async def run_store_script(self, script: bytes) -> bytes:
        """A cache-store script, run here as the jobs are (their environment)."""
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-s",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**task_env.inherited(os.environ), "SCRIPTHUT_STORE_PYTHON": sys.executable},
            cwd=self._home,
        )
        out, err = await proc.communicate(script)
        if proc.returncode != 0:
            raise ScriptHutError(f"cache store: {err.decode(errors='replace').strip()[-300:]}")
        return out

    def host_path(self, path: str) -> str:
        """`~` expanded to this user's home; a relative path is under home, as a job's shell
        (which starts there) reads it."""
        if path == "~" or path.startswith("~/"):
            path = self._home + path[1:]
        return os.path.normpath(os.path.join(self._home, path)) if path else self._home

    def inherited_env(self) -> tuple[dict[str, str] | None, str]:
        return dict(os.environ), "this server's environment"

    async def info(self) -> BackendInfo:
        """This machine: always reachable; cpus from the capacity and the running jobs."""
        return BackendInfo(
            name=self.name,
            kind=self.kind,
            reachable=True,
            message=f"{len(self._running)} running, {len(self._queue)} queued",
            cpus_idle=max(0, self.cpus - self._used_cpus),
            cpus_total=self.cpus,
            queue_depth=len(self._queue),
        )

    def free_slots(self) -> int:
        """Jobs of one cpu each that would start now (none while some are queued)."""
        if self._queue:
            return 0
        slots = min(self.max_concurrent - len(self._running), self.cpus - self._used_cpus)
        return max(0, slots)

    async def close(self) -> None:
        """Stop watching; running jobs keep running (a later instance adopts them).

        Queued jobs are not started (a spawn under way completes). Jobs being cancelled
        or past their time limit get SIGKILL now instead of after the grace.
        """
        self._closed = True
        await asyncio.to_thread(self._spawner.shutdown, wait=True, cancel_futures=True)
        for job in self._jobs.values():
            if job.timer is not None:
                job.timer.cancel()
                job.timer = None
            self._reaper.unwatch(job)
        await self._reaper.kill_now()
