"""The one interface every backend implements, and the values that cross it.

The engine owns all scheduler traffic and talks to backends only through `Backend`:
submit many jobs at once (or as job arrays: `submit_arrays`, see backends/arrays.py),
poll every tracked job in one query, find jobs again by tag after a crash, cancel, read
logs and files, describe the cluster.

Rules every backend keeps:
- A failed or timed-out scheduler query is "unknown" (JobState.UNKNOWN or a missing
  entry in PollResult.jobs), never "failed" and never "empty queue".
- `submit` gets jobs whose intent (tag, script) the engine already committed; it
  returns one outcome per job, in order. If it raises, the engine treats every job of
  the batch as "maybe submitted" and calls `find` with their tags before retrying.
- Nothing user-supplied reaches a shell unquoted.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scripthut.outputs import OutputListing
from scripthut.states import JobState


@dataclass(frozen=True, slots=True)
class JobPaths:
    """Where one attempt's files live on the backend (paths as the backend sees them)."""

    stdout: str
    stderr: str
    exit_code: str
    script: str


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One attempt of one task, ready to submit. `script` is final (headers included)."""

    tag: str
    run_id: str
    task_id: str
    attempt: int
    name: str
    script: str
    paths: JobPaths
    working_dir: str
    cpus: int = 1
    memory_mb: int = 4096
    time_limit_s: int = 3600
    partition: str | None = None
    gres: str | None = None
    image: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ArrayGroup:
    """Jobs to submit as one array; element `i` is `jobs[i]`."""

    jobs: tuple[JobSpec, ...]
    throttle: int | None = None  # at most this many elements running at once

    def __len__(self) -> int:
        return len(self.jobs)


@dataclass(frozen=True, slots=True)
class JobRef:
    """What the engine knows of a job it tracks, handed back to `poll`."""

    job_id: str
    tag: str
    paths: JobPaths
    time_limit_s: int = 3600
    submitted_at: float = 0.0


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """The result of submitting one job: a job id, or an error message (not both)."""

    job_id: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A backend's view of one job."""

    job_id: str
    state: JobState
    raw_state: str = ""
    exit_code: int | None = None
    reason: str | None = None
    name: str | None = None
    user: str | None = None
    partition: str | None = None
    node: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    cpus: int | None = None
    external: bool = False
    # Resource use of a finished job, when the scheduler's accounting reports it:
    # cpu_efficiency (cpu time / (elapsed * cpus)), max_rss_mb, elapsed_s, ...
    efficiency: dict[str, float] | None = None


@dataclass(slots=True)
class PollResult:
    """One poll of every tracked job.

    `jobs` holds a status for each tracked job the backend could determine; a job
    missing from it is unknown this cycle. `external` lists the user's other jobs
    (None when the backend does not report them). `ok` is False when the query
    failed as a whole: nothing may be concluded from this cycle.
    """

    jobs: dict[str, JobStatus] = field(default_factory=dict)
    external: list[JobStatus] | None = None
    ok: bool = True
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LogChunk:
    """Bytes `[offset, offset + len(data))` of a log, and the file's size when read."""

    data: bytes
    offset: int
    size: int
    missing: bool = False

    @property
    def next_offset(self) -> int:
        return self.offset + len(self.data)


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    name: str
    cpus_idle: int | None = None
    cpus_total: int | None = None
    state: str | None = None


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """What a backend can say about itself and its cluster."""

    name: str
    kind: str
    reachable: bool
    message: str | None = None
    cpus_idle: int | None = None
    cpus_total: int | None = None
    queue_depth: int | None = None
    partitions: tuple[PartitionInfo, ...] = ()


class Backend(ABC):
    """One scheduler behind one interface. Instances are built from config entries."""

    kind: str = ""

    def __init__(self, name: str, max_concurrent: int) -> None:
        self.name = name
        self.max_concurrent = max_concurrent
        # Set by the backend when it learns of a change without being polled (a local
        # process exited). The engine waits on it as well as on its poll timer.
        self.changed = asyncio.Event()

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections; called once before any other coroutine."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; jobs keep running on the scheduler."""

    @abstractmethod
    def job_paths(self, run_id: str, task_id: str, attempt: int) -> JobPaths:
        """Default places for an attempt's logs, exit-code file and script."""

    @abstractmethod
    def render_script(self, spec: JobSpec, body: str) -> str:
        """The final script: `body` (from workflow.script) with this scheduler's header."""

    @abstractmethod
    async def submit(self, jobs: Sequence[JobSpec]) -> list[SubmitOutcome]:
        """Submit every job, in as few round trips as possible; one outcome per job."""

    @abstractmethod
    async def poll(self, jobs: Sequence[JobRef]) -> PollResult:
        """The state of every tracked job, in one query per cycle."""

    @abstractmethod
    async def find(self, tags: Sequence[str]) -> dict[str, str] | None:
        """Jobs already on the scheduler for these tags (tag -> job id).

        None means the lookup failed (an exception: the backend could not be reached): the
        engine must not resubmit these tags yet.
        """

    @abstractmethod
    async def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel these jobs (whole process groups / scheduler jobs)."""

    @abstractmethod
    async def read_log(self, path: str, offset: int = 0, limit: int = 1 << 20) -> LogChunk:
        """Up to `limit` bytes of a file from `offset`; a negative offset counts from the end."""

    @abstractmethod
    async def read_text(self, path: str, limit: int = 16 << 20) -> str:
        """A whole text file (for generates_source), at most `limit` bytes."""

    @abstractmethod
    async def info(self) -> BackendInfo:
        """Reachability and capacity, for views."""

    async def list_outputs(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[str, OutputListing] | None:
        """What each attempt wrote: (output folder, summary file) pairs -> listing by folder,
        all in one round trip. None: this backend cannot list files where its jobs run."""
        return None

    async def run_store_script(self, script: bytes) -> bytes | None:
        """Run a cache-store script (`bash -s`) where the jobs run, in one round trip; its
        output. None: this backend cannot run one. Raises when it could not be run."""
        return None

    def host_path(self, path: str) -> str:
        """`path` as the machine that runs the jobs sees it: `~` is the home there.

        Backends that know that home return `~/x` (and a relative `x`, which a job's
        shell reads from its home) as an absolute path; others return `path` as is.
        """
        return path

    def inherited_env(self) -> tuple[dict[str, str] | None, str]:
        """The environment jobs start from, before `task_env` withholds the server's
        credentials, and whose it is; None when it is not known here (a login shell on
        another host)."""
        return None, "the environment of the scheduler's job (not known here)"

    # -- job arrays (see backends/arrays.py) --------------------------------------------

    def arrays_enabled(self) -> bool:
        """Whether `submit_arrays` submits real array jobs (else the engine submits plainly)."""
        return False

    async def submit_arrays(self, groups: Sequence[ArrayGroup]) -> list[list[SubmitOutcome]]:
        """Submit each group as array jobs (chunked around the site's limits); one outcome
        per element, in order: the element's own job id (`123_4` on Slurm) or an error.

        The engine has committed every element's intent (its own tag) before the call. If
        it raises, the engine calls `find` with the element tags: a backend finds elements
        by tag after a crash. The default submits the elements as plain jobs.
        """
        flat = [spec for group in groups for spec in group.jobs]
        outcomes = await self.submit(flat)
        out: list[list[SubmitOutcome]] = []
        start = 0
        for group in groups:
            out.append(outcomes[start : start + len(group.jobs)])
            start += len(group.jobs)
        return out

    def free_slots(self) -> int | None:
        """How many more jobs the backend can take right now, if it knows (else None)."""
        return None
