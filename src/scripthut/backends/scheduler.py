"""`SchedulerBackend`: what the Slurm, Grid Engine and PBS backends share; each keeps its dialect.

Shared here, once: the transport and the host (home and user, asked once), the log folder and
its tag index, submission in chunks of one generated script each (`remote.submit_script`, a
few chunks in flight), job arrays packed into round trips, the one-round-trip skeletons of
`poll`, `find` and `info` (a failed query is unknown, never failed), a job nothing can place
(UNKNOWN for `missing_grace_s`, then FAILED), cancelling in chunks, and logs, files and
outputs read through the host.

A dialect gives its commands and parsing through a few hooks: `submit_command`,
`submitted_job_id`, `poll_script`/`read_poll`, `find_script`/`read_find`,
`info_script`/`read_info`, and for arrays `array_wrapper`/`element_id` (the array job's
files, its element scripts as one bundle, are built here: `array_submission`).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from typing import Required, TypedDict

from scripthut.backends.arrays import ARRAYS_DIR, ArrayFiles, array_files, bundled_submission
from scripthut.backends.base import (
    ArrayGroup,
    Backend,
    BackendInfo,
    JobPaths,
    JobRef,
    JobSpec,
    JobStatus,
    LogChunk,
    PollResult,
    SubmitOutcome,
)
from scripthut.backends.remote import (
    MissingClock,
    RemoteHost,
    Section,
    Submission,
    SubmitReply,
    check_name,
    in_chunks,
    is_safe_name,
    job_dirs,
    new_marker,
    submit_replies,
    submit_script,
)
from scripthut.backends.slurm_arrays import packed
from scripthut.errors import ScriptHutError
from scripthut.outputs import OutputListing
from scripthut.states import JobState
from scripthut.transport import Transport, TransportError
from scripthut.workflow.script import SHEBANG

log = logging.getLogger(__name__)

SUBMIT_CHUNK = 200
SUBMIT_PARALLEL = 4
CANCEL_CHUNK = 500
MISSING_GRACE_S = 180.0
POLL_TIMEOUT = 120.0
TAGS_DIR = ".tags"


def one_line(text: str, limit: int = 500) -> str:
    """Command output as one line for a message."""
    joined = " / ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return joined[:limit]


def split_shebang(body: str) -> tuple[str, str]:
    """(`#!` line, the rest) of a script body; bash's shebang when it has none."""
    shebang, _, rest = body.partition("\n")
    return (shebang, rest) if shebang.startswith("#!") else (SHEBANG, body)


def regroup(
    flat: Sequence[SubmitOutcome], groups: Sequence[ArrayGroup]
) -> list[list[SubmitOutcome]]:
    """Outcomes in submission order, one list per group."""
    out: list[list[SubmitOutcome]] = []
    start = 0
    for group in groups:
        out.append(list(flat[start : start + len(group.jobs)]))
        start += len(group.jobs)
    return out


class SchedulerOptions(TypedDict, total=False):
    """What every scheduler backend is built with, besides its dialect's own options."""

    transport: Required[Transport]
    max_concurrent: Required[int]
    log_dir: Required[str]
    login_shell: bool
    missing_grace_s: float
    submit_chunk: int
    submit_parallel: int
    arrays: bool
    max_array_size: int | None


class SchedulerBackend(Backend):
    """A batch scheduler reached through a transport; subclasses speak its dialect."""

    submit_name = ""  # the submit command, as messages name it (sbatch, qsub)
    transient_errors: tuple[str, ...] = ()  # submit errors that mean "no answer"
    script_arg = False  # the submit command takes the script as a file, not on stdin

    def __init__(
        self,
        name: str,
        *,
        transport: Transport,
        max_concurrent: int,
        log_dir: str,
        login_shell: bool = False,
        missing_grace_s: float = MISSING_GRACE_S,
        submit_chunk: int = SUBMIT_CHUNK,
        submit_parallel: int = SUBMIT_PARALLEL,
        arrays: bool = False,
        max_array_size: int | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        super().__init__(name, max_concurrent)
        self.host = RemoteHost(transport)
        self.log_dir = log_dir.rstrip("/") or "/"
        self.login_shell = login_shell
        self.submit_chunk = max(1, submit_chunk)
        self.submit_parallel = max(1, submit_parallel)
        self.arrays = arrays
        self.max_array_size = max_array_size
        self._missing = MissingClock(missing_grace_s)

    @property
    def transport(self) -> Transport:
        return self.host.transport

    @property
    def missing_grace_s(self) -> float:
        """How long a job nothing can place stays UNKNOWN before it is FAILED."""
        return self._missing.grace_s

    @missing_grace_s.setter
    def missing_grace_s(self, seconds: float) -> None:
        self._missing.grace_s = seconds

    async def start(self) -> None:
        """Learn home and user now; if the cluster is unreachable, on first use instead."""
        try:
            await self.host.identify()
            await self.learn()
        except TransportError as exc:
            # The engine reports reachability once per change; this is detail.
            log.debug("backend '%s': %s (will retry on first use)", self.name, exc)

    async def learn(self) -> None:
        """What the backend learns of its cluster once, at start (site limits, dialect)."""

    async def ready(self) -> None:
        """What poll and find need learnt before their query."""

    async def close(self) -> None:
        await self.host.close()

    async def _user(self) -> str:
        """The user on the cluster, once the backend is ready to query it."""
        _home, user = await self.host.identify()
        await self.ready()
        return user

    # -- paths ----------------------------------------------------------------------------

    def job_paths(self, run_id: str, task_id: str, attempt: int) -> JobPaths:
        """`<log_dir>/<run_id>/<task_id>.<attempt>.{out,err,exit,sh}`, `~` resolved when known."""
        check_name("run id", run_id)
        check_name("task id", task_id)
        base = f"{self.host.absolute(self.log_dir)}/{run_id}/{task_id}.{attempt}"
        return JobPaths(f"{base}.out", f"{base}.err", f"{base}.exit", f"{base}.sh")

    def _index_dir(self) -> str:
        return f"{self.log_dir}/{TAGS_DIR}"

    def host_path(self, path: str) -> str:
        """`~/x` and relative paths under the cluster's home once it is known (else as is:
        the job's shell, which starts in home, expands them)."""
        return self.host.absolute(path) if path else path

    # -- submitting -----------------------------------------------------------------------

    @abstractmethod
    def submit_command(self) -> Sequence[str]:
        """The submit command's words (the script follows on stdin, or as `script_arg`)."""

    @abstractmethod
    def submitted_job_id(self, text: str) -> str | None:
        """The job id in the submit command's output, else None."""

    async def submit(self, jobs: Sequence[JobSpec]) -> list[SubmitOutcome]:
        """Every job through the submit command, at most `submit_chunk` jobs per round trip.

        A large batch is split into chunks run `submit_parallel` at a time over the one
        connection (a submission is mostly process start-up and an RPC: parallel streams use
        the login node's cores). A rejected job (bad queue, account...) is an error outcome.
        When the scheduler does not answer, or a script's output is cut, TransportError
        once every chunk has finished: the engine then calls `find`.
        """
        return await in_chunks(
            jobs, self._submit_chunk, largest=self.submit_chunk, parallel=self.submit_parallel
        )

    async def _submit_chunk(self, jobs: Sequence[JobSpec]) -> list[SubmitOutcome]:
        outcomes: list[SubmitOutcome | None] = [None] * len(jobs)
        items: list[Submission] = []
        positions: list[int] = []
        for position, spec in enumerate(jobs):
            if not is_safe_name(spec.tag):
                outcomes[position] = SubmitOutcome(error=f"unsafe tag {spec.tag!r}")
                continue
            items.append(self.submission(spec))
            positions.append(position)
        if items:
            marker = new_marker()
            text = self.submit_script(items, marker)
            sections = await self.host.script(text, marker, timeout=60.0 + 0.5 * len(items))
            replies = submit_replies(sections, len(items))
            for position, reply in zip(positions, replies, strict=True):
                outcomes[position] = self.outcome(reply)
            unsure = sum(outcome is None for outcome in outcomes)
            if unsure:
                raise TransportError(
                    f"{self.transport.description}: the outcome of {unsure} of {len(jobs)} "
                    f"submissions is unknown ({self._why_unsure(replies)})"
                )
        return [outcome for outcome in outcomes if outcome is not None]

    def submit_script(self, items: Sequence[Submission], marker: str) -> str:
        return submit_script(
            items,
            command=self.submit_command(),
            index_dir=self._index_dir(),
            marker=marker,
            transient=self.transient_errors,
            script_arg=self.script_arg,
        )

    @staticmethod
    def submission(spec: JobSpec) -> Submission:
        """One job for `submit_script`: its script, the folders of its files, its logs."""
        paths = spec.paths
        dirs = tuple(sorted(job_dirs(paths)))
        return Submission(spec.tag, spec.script, paths.script, dirs, (paths.stdout, paths.stderr))

    def outcome(self, reply: SubmitReply | None) -> SubmitOutcome | None:
        """The outcome of one reply; None when it is unknown."""
        if reply is None or reply.kind == "skipped":
            return None
        if reply.kind == "error":
            return SubmitOutcome(error=one_line(reply.text) or "not submitted")
        job_id = self.submitted_job_id(reply.text)
        if reply.kind == "known" or reply.rc == 0:
            return SubmitOutcome(job_id=job_id) if job_id is not None else None
        if any(text in reply.text for text in self.transient_errors):
            return None
        text = one_line(reply.text) or f"exit {reply.rc}"
        prefix = f"{self.submit_name}:"
        return SubmitOutcome(error=text if text.startswith(prefix) else f"{prefix} {text}")

    def _why_unsure(self, replies: Sequence[SubmitReply | None]) -> str:
        for reply in replies:
            if reply is not None and reply.kind == "rc" and reply.rc != 0:
                return f"{self.submit_name}: {one_line(reply.text, 300)}"
        return "the submission script stopped early"

    # -- arrays -----------------------------------------------------------------------------

    def arrays_enabled(self) -> bool:
        return self.arrays

    def array_submission(self, group: ArrayGroup) -> Submission:
        """The one array job of `group` (within the site's limits) for `submit_script`: the
        wrapper `<log_dir>/.arrays/<array tag>.sh` (its log beside it), the element scripts
        written before the one submit command as one file beside it (`arrays.ArrayFiles`)."""
        jobs = group.jobs
        files = array_files(jobs, self.host.absolute(f"{self.log_dir}/{ARRAYS_DIR}"))
        try:
            wrapper = self.array_wrapper(group, files)
        except ValueError as exc:
            raise ScriptHutError(f"task '{jobs[0].task_id}': {exc}") from None
        return bundled_submission(files, wrapper, jobs)

    def array_wrapper(self, group: ArrayGroup, files: ArrayFiles) -> str:
        """The array job's script: the scheduler's header for `files.head(group.jobs)`, its
        array lines, then `arrays.wrapper_body` indexed by the scheduler's variable with
        `bundle=files.bundle`. ValueError when a value has no spelling in the header."""
        raise NotImplementedError(f"backend '{self.name}' submits no arrays")

    def element_id(self, job_id: str, index: int) -> str:
        """The id of element `index` (from 0) of array job `job_id`."""
        raise NotImplementedError(f"backend '{self.name}' submits no arrays")

    def element_ids(self, job_id: str, size: int) -> list[str]:
        """The ids of the `size` elements of array job `job_id`."""
        return [self.element_id(job_id, index) for index in range(size)]

    async def submit_array_chunks(
        self, chunks: Sequence[ArrayGroup], groups: Sequence[ArrayGroup]
    ) -> list[list[SubmitOutcome]]:
        """`chunks` (the `groups` split within the site's limits) as array jobs, about
        `submit_chunk` * 5 elements per round trip; one outcome per element of each group."""
        trips = packed(chunks, self.submit_chunk * 5)
        results = await in_chunks(
            trips, self._submit_arrays_trip, largest=1, parallel=self.submit_parallel
        )
        return regroup([outcome for outcomes in results for outcome in outcomes], groups)

    async def _submit_arrays_trip(
        self, trips: Sequence[list[ArrayGroup]]
    ) -> list[list[SubmitOutcome]]:
        (chunks,) = trips
        items = [self.array_submission(chunk) for chunk in chunks]
        marker = new_marker()
        timeout = 60.0 + 0.05 * sum(len(chunk) for chunk in chunks)
        sections = await self.host.script(self.submit_script(items, marker), marker, timeout)
        replies = submit_replies(sections, len(items))
        outcomes: list[SubmitOutcome] = []
        for chunk, reply in zip(chunks, replies, strict=True):
            outcome = self.outcome(reply)
            if outcome is None:
                raise TransportError(
                    f"{self.transport.description}: the outcome of an array of {len(chunk)} "
                    f"is unknown ({self._why_unsure(replies)})"
                )
            if outcome.job_id is None:
                outcomes.extend([SubmitOutcome(error=outcome.error)] * len(chunk))
            else:
                ids = self.element_ids(outcome.job_id, len(chunk))
                outcomes.extend(SubmitOutcome(job_id=job_id) for job_id in ids)
        return [outcomes]

    # -- polling and finding ----------------------------------------------------------------

    @abstractmethod
    def poll_script(self, jobs: Sequence[JobRef], user: str, marker: str) -> str:
        """The one script of a poll: the queue, then exit files and history of ended jobs."""

    @abstractmethod
    def read_poll(
        self, jobs: Sequence[JobRef], user: str, sections: Sequence[Section]
    ) -> PollResult:
        """The poll script's sections as a PollResult (ok False when the queue query failed)."""

    async def poll(self, jobs: Sequence[JobRef]) -> PollResult:
        """Every tracked job's state, and the user's other jobs, in one round trip."""
        try:
            user = await self._user()
            marker = new_marker()
            sections = await self.host.script(
                self.poll_script(jobs, user, marker), marker, timeout=POLL_TIMEOUT
            )
        except TransportError as exc:
            return PollResult(ok=False, error=str(exc))
        return self.read_poll(jobs, user, sections)

    def unaccounted(self, ref: JobRef, waiting: str, lost: str) -> JobStatus:
        """A job nothing can place: UNKNOWN (`waiting`) for the grace period, then FAILED
        (`lost`, raw state LOST)."""
        over, waited = self._missing.over(ref.job_id)
        if not over:
            reason = f"{waiting} (for {waited:.0f} s)"
            return JobStatus(ref.job_id, JobState.UNKNOWN, "UNKNOWN", reason=reason)
        reason = f"{lost} (waited {waited:.0f} s)"
        return JobStatus(ref.job_id, JobState.FAILED, "LOST", reason=reason)

    @abstractmethod
    def find_script(self, tags: Sequence[str], user: str, marker: str) -> str:
        """The one script of a find: the tag index, then the scheduler's own records."""

    @abstractmethod
    def read_find(
        self, tags: Sequence[str], user: str, sections: Sequence[Section]
    ) -> dict[str, str] | None:
        """tag -> job id from the find script's sections; None when a query failed."""

    async def find(self, tags: Sequence[str]) -> dict[str, str] | None:
        """Jobs for these tags: the tag index, then what the scheduler still knows.

        None when the scheduler's query fails: a job it accepted must never be taken for
        missing. TransportError when the cluster cannot be reached (the caller retries).
        """
        wanted = [tag for tag in dict.fromkeys(tags) if is_safe_name(tag)]
        if not wanted:
            return {}
        user = await self._user()
        marker = new_marker()
        sections = await self.host.script(
            self.find_script(wanted, user, marker), marker, timeout=POLL_TIMEOUT
        )
        return self.read_find(wanted, user, sections)

    # -- cancelling, logs, info -----------------------------------------------------------

    async def cancel_in_chunks(
        self, command: str, ids: Sequence[str], benign: Sequence[str]
    ) -> None:
        """`command` with at most CANCEL_CHUNK ids at a time; stderr lines containing one of
        `benign` (the job already ended) are not an error."""
        label = command.rsplit("/", 1)[-1]
        for start in range(0, len(ids), CANCEL_CHUNK):
            result = await self.transport.run([command, *ids[start : start + CANCEL_CHUNK]])
            errors = [
                line
                for line in result.stderr.splitlines()
                if line.strip() and not any(text in line for text in benign)
            ]
            if not result.ok and errors:
                raise ScriptHutError(f"{label} failed: {one_line(chr(10).join(errors))}")

    async def read_log(self, path: str, offset: int = 0, limit: int = 1 << 20) -> LogChunk:
        return await self.host.read_log(path, offset, limit)

    async def read_text(self, path: str, limit: int = 16 << 20) -> str:
        return await self.host.read_text(path, limit)

    async def list_outputs(self, pairs: Sequence[tuple[str, str]]) -> dict[str, OutputListing]:
        return await self.host.list_outputs(pairs)

    async def run_store_script(self, script: bytes) -> bytes:
        return await self.host.run_store_script(script)

    @abstractmethod
    def info_script(self, user: str, marker: str) -> str:
        """The one script of `info`: partitions or queues, CPUs, queue counts."""

    @abstractmethod
    def read_info(self, sections: Sequence[Section]) -> BackendInfo:
        """The info script's sections as a BackendInfo."""

    async def info(self) -> BackendInfo:
        """Reachability, CPUs and queue counts, in one round trip."""
        try:
            _home, user = await self.host.identify()
            marker = new_marker()
            sections = await self.host.script(self.info_script(user, marker), marker)
        except TransportError as exc:
            return BackendInfo(self.name, self.kind, reachable=False, message=str(exc))
        return self.read_info(sections)

    def unreachable(self, message: str) -> BackendInfo:
        return BackendInfo(self.name, self.kind, reachable=False, message=message)


def first_failure(sections: Sequence[Section]) -> str | None:
    """`<name>: <output>` of the first section whose command failed, else None."""
    by_name = {s.name: s for s in sections}
    failed = [s for s in by_name.values() if s.name != "end" and s.rc() != 0]
    if not failed:
        return None
    return f"{failed[0].name}: {one_line(failed[0].body) or 'failed'}"
