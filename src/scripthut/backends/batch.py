"""The AWS Batch backend: one container job per task attempt, through boto3.

- `submit`: SubmitJob per job (Batch takes one job per call), against the definition its
  image needs (`batch_defs`); the attempt tag is the job's name and a job tag. A call that
  is throttled or does not get through leaves the outcome unknown: `submit` raises once the
  batch is done, and the engine calls `find` before anything is submitted again, so there
  is exactly one Batch job per attempt.
- `submit_arrays`: a group of tasks with the same resources as Batch array jobs
  (`batch_arrays`): one SubmitJob per chunk, element `i` is the child `<id>:<i>`.
- Every job's container overrides fit ECS's limit (`batch_arrays.plain_overrides`): a
  script too long for `bash -c` goes compressed, one too long even so fails at submission.
- `poll`: DescribeJobs for the tracked jobs (array elements by their child ids), 100 ids
  per call; the queue's other jobs (ListJobs by active state) at most every
  `external_every` seconds.
- `find`: ListJobs with a `JOB_NAME` filter per run (`hut_<run>_*`), any state, on every
  queue this backend knows (the configured one and those tasks asked for); the run's
  arrays are described and their elements read back from their bundles.
- `cancel`: CancelJob for jobs not yet started, TerminateJob for STARTING/RUNNING ones.
- `read_log`: the job's CloudWatch stream (`batch_logs`). A log "path" is
  `cloudwatch:<log group>/<run>/<task>.<attempt>`; stdout and stderr are the one stream.

Throttling and network failures are "unknown" (a failed poll, a raised lookup): the
engine backs off; no task fails for them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from scripthut.backends import batch_arrays as ba
from scripthut.backends import batch_jobs as bj
from scripthut.backends.aws import AwsTransientError, call, describe, is_transient, pages
from scripthut.backends.base import (
    ArrayGroup,
    Backend,
    BackendInfo,
    JobPaths,
    JobRef,
    JobSpec,
    JobStatus,
    LogChunk,
    PartitionInfo,
    PollResult,
    SubmitOutcome,
)
from scripthut.backends.batch_defs import JobDefinitions
from scripthut.backends.batch_logs import LogStreams
from scripthut.backends.remote import MissingClock, check_name
from scripthut.errors import ScriptHutError
from scripthut.states import JobState
from scripthut.workflow.model import DEFAULT_PARTITION

log = logging.getLogger(__name__)

DESCRIBE_CHUNK = 100
SUBMIT_PARALLEL = 8
MISSING_GRACE_S = 300.0
EXTERNAL_EVERY_S = 60.0
LOG_SETTLE_S = 30.0  # CloudWatch may still receive a job's last lines this long after it ends
CONTAINER_DIR = "/tmp/scripthut"
LOG_SCHEME = "cloudwatch:"
_LOG_PATH = re.compile(r"^cloudwatch:(?P<group>.+)/(?P<run>[^/]+)/(?P<task>[^/]+)\.(?P<n>[0-9]+)$")


class BatchBackend(Backend):
    """One AWS Batch job queue (and the queues tasks name as partitions)."""

    kind = "batch"

    def __init__(
        self,
        name: str,
        *,
        batch: Callable[[], Any],
        logs: Callable[[], Any],
        job_queue: str,
        definitions: JobDefinitions,
        max_concurrent: int,
        retry_attempts: int = 1,
        log_group: str = "/aws/batch/job",
        missing_grace_s: float = MISSING_GRACE_S,
        external_every_s: float = EXTERNAL_EVERY_S,
        arrays: bool = True,
        max_array_size: int | None = None,
    ) -> None:
        super().__init__(name, max_concurrent)
        self._batch = batch
        self._logs = logs
        self.job_queue = job_queue
        self.definitions = definitions
        self.retry_attempts = retry_attempts
        self.log_group = log_group
        self.external_every_s = external_every_s
        self.arrays = arrays
        self.max_array_size = max_array_size
        self.queues: set[str] = {job_queue}
        self._missing = MissingClock(missing_grace_s)
        self._cancelled: set[str] = set()
        self._log_jobs: dict[str, str] = {}  # log path -> job id
        self._external: list[JobStatus] | None = None
        self._external_at = float("-inf")
        self._streams = LogStreams()
        self.calls: dict[str, int] = {}  # AWS calls made, by operation (for views and tests)

    @property
    def missing_grace_s(self) -> float:
        return self._missing.grace_s

    @missing_grace_s.setter
    def missing_grace_s(self, seconds: float) -> None:
        self._missing.grace_s = seconds

    async def _aws(self, operation: str, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        return await call(f"AWS Batch {operation}", fn, **kwargs)

    # -- paths and scripts ----------------------------------------------------------------

    def job_paths(self, run_id: str, task_id: str, attempt: int) -> JobPaths:
        """The CloudWatch stream stands for both logs; exit file and script are in the container."""
        check_name("run id", run_id)
        check_name("task id", task_id)
        stream = f"{LOG_SCHEME}{self.log_group}/{run_id}/{task_id}.{attempt}"
        base = f"{CONTAINER_DIR}/{task_id}.{attempt}"
        return JobPaths(stdout=stream, stderr=stream, exit_code=f"{base}.exit", script=f"{base}.sh")

    def queue_for(self, partition: str | None) -> str:
        """A task's partition is its job queue; none (or the default partition, which the
        engine passes for a task that names none) means the configured `aws.job_queue`."""
        return self.job_queue if partition in (None, "", DEFAULT_PARTITION) else str(partition)

    def render_script(self, spec: JobSpec, body: str) -> str:
        """`body` with the env values moved out (they travel as container variables)."""
        bj.job_name(spec.tag)  # ScriptHutError: the task fails with the reason
        try:
            bj.gpus(spec.gres)
        except ScriptHutError as exc:
            raise ScriptHutError(f"task '{spec.task_id}': {exc}") from None
        return bj.env_out_of_script(body, spec.env).script

    # -- submitting -----------------------------------------------------------------------

    async def submit(self, jobs: Sequence[JobSpec]) -> list[SubmitOutcome]:
        """One SubmitJob per job, `SUBMIT_PARALLEL` at a time; raise if any outcome is unknown."""
        gate = asyncio.Semaphore(SUBMIT_PARALLEL)

        async def one(spec: JobSpec) -> SubmitOutcome | None:
            async with gate:
                return await self._submit_one(spec)

        results = await asyncio.gather(*(one(spec) for spec in jobs))
        unknown = sum(result is None for result in results)
        if unknown:
            raise AwsTransientError(
                f"AWS Batch: the outcome of {unknown} of {len(jobs)} submissions is unknown"
            )
        return [result for result in results if result is not None]

    async def _submit_one(self, spec: JobSpec) -> SubmitOutcome | None:
        queue = self.queue_for(spec.partition)
        self.queues.add(queue)
        try:
            definition = await asyncio.to_thread(self.definitions.resolve, spec.image)
            args = bj.submit_args(
                spec,
                queue=queue,
                definition=definition,
                backend=self.name,
                retry_attempts=self.retry_attempts,
                overrides=ba.plain_overrides(spec),
            )
            reply = await self._aws("SubmitJob", self._batch().submit_job, **args)
        except AwsTransientError as exc:
            log.info("backend '%s': %s", self.name, exc)
            return None
        except ScriptHutError as exc:
            return SubmitOutcome(error=str(exc))
        except Exception as exc:
            if is_transient(exc):
                return None
            return SubmitOutcome(error=f"AWS Batch SubmitJob: {describe(exc)}")
        return SubmitOutcome(job_id=str(reply["jobId"]))

    # -- arrays ---------------------------------------------------------------------------

    def arrays_enabled(self) -> bool:
        return self.arrays

    async def submit_arrays(self, groups: Sequence[ArrayGroup]) -> list[list[SubmitOutcome]]:
        """Each group as array jobs (chunks within Batch's size, `max_array_size`, the
        throttle and the overrides budget; a chunk of one as a plain job), one outcome per
        element; raise once all are sent if any array's outcome is unknown."""
        gate = asyncio.Semaphore(SUBMIT_PARALLEL)

        async def one(chunk: ArrayGroup) -> list[SubmitOutcome] | None:
            async with gate:
                if len(chunk) == 1:
                    single = await self._submit_one(chunk.jobs[0])
                    return None if single is None else [single]
                return await self._submit_array(chunk)

        chunks = [
            chunk
            for group in groups
            for chunk in ba.fitting_chunks(
                group, ba.largest_chunk(self.max_array_size, group.throttle)
            )
        ]
        results = await asyncio.gather(*(one(chunk) for chunk in chunks))
        unknown = sum(len(c) for c, r in zip(chunks, results, strict=True) if r is None)
        if unknown:
            raise AwsTransientError(
                f"AWS Batch: the outcome of {unknown} array elements is unknown"
            )
        flat = [outcome for result in results if result is not None for outcome in result]
        out: list[list[SubmitOutcome]] = []
        for group in groups:
            out.append(flat[: len(group)])
            flat = flat[len(group) :]
        return out

    async def _submit_array(self, chunk: ArrayGroup) -> list[SubmitOutcome] | None:
        first = chunk.jobs[0]
        queue = self.queue_for(first.partition)
        self.queues.add(queue)
        try:
            definition = await asyncio.to_thread(self.definitions.resolve, first.image)
            args = ba.submit_args(
                chunk,
                queue=queue,
                definition=definition,
                backend=self.name,
                retry_attempts=self.retry_attempts,
            )
            reply = await self._aws("SubmitJob", self._batch().submit_job, **args)
        except AwsTransientError as exc:
            log.info("backend '%s': %s", self.name, exc)
            return None
        except ScriptHutError as exc:
            return [SubmitOutcome(error=str(exc))] * len(chunk)
        except Exception as exc:
            if is_transient(exc):
                return None
            return [SubmitOutcome(error=f"AWS Batch SubmitJob: {describe(exc)}")] * len(chunk)
        parent = str(reply["jobId"])
        return [SubmitOutcome(job_id=ba.element_id(parent, i)) for i in range(len(chunk))]

    # -- polling --------------------------------------------------------------------------

    async def poll(self, jobs: Sequence[JobRef]) -> PollResult:
        """DescribeJobs for every tracked job (100 per call), and the queue's other jobs."""
        ids = list(dict.fromkeys(ref.job_id for ref in jobs))
        try:
            described = await self._describe(ids)
            external = await self._external_jobs()
        except AwsTransientError as exc:
            return PollResult(ok=False, error=str(exc))
        except Exception as exc:
            return PollResult(ok=False, error=f"AWS Batch DescribeJobs: {describe(exc)}")
        result = PollResult(jobs={}, external=external)
        for ref in jobs:
            self._log_jobs[ref.paths.stdout] = ref.job_id
            self._log_jobs[ref.paths.stderr] = ref.job_id
            job = described.get(ref.job_id)
            result.jobs[ref.job_id] = self._status(ref, job)
        self._missing.keep_only(set(ids))
        return result

    async def _describe(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), DESCRIBE_CHUNK):
            chunk = list(ids[start : start + DESCRIBE_CHUNK])
            reply = await self._aws("DescribeJobs", self._batch().describe_jobs, jobs=chunk)
            for job in reply.get("jobs") or []:
                found[str(job.get("jobId"))] = job
        return found

    def _status(self, ref: JobRef, job: dict[str, Any] | None) -> JobStatus:
        if job is None:
            over, waited = self._missing.over(ref.job_id)
            if not over:
                reason = f"AWS Batch does not describe the job (for {waited:.0f} s)"
                return JobStatus(ref.job_id, JobState.UNKNOWN, "UNKNOWN", reason=reason)
            reason = f"AWS Batch no longer knows the job (not described for {waited:.0f} s)"
            return JobStatus(ref.job_id, JobState.FAILED, "LOST", reason=reason)
        self._missing.seen(ref.job_id)
        return bj.status_of(job, cancelled=ref.job_id in self._cancelled)

    async def _external_jobs(self) -> list[JobStatus] | None:
        """The configured queue's active jobs ScriptHut did not submit, refreshed now and then."""
        if time.monotonic() - self._external_at < self.external_every_s:
            return self._external
        client = self._batch()
        listed: list[dict[str, Any]] = []
        for status in bj.ACTIVE:
            self.calls["ListJobs"] = self.calls.get("ListJobs", 0) + 1
            listed += await call(
                "AWS Batch ListJobs",
                pages,
                client.list_jobs,
                "jobSummaryList",
                jobQueue=self.job_queue,
                jobStatus=status,
            )
        self._external = [
            bj.status_of(job, external=True)
            for job in listed
            if bj.tag_of(str(job.get("jobName") or "")) is None
            and not ba.is_array_name(str(job.get("jobName") or ""))
        ]
        self._external_at = time.monotonic()
        return self._external

    # -- finding jobs again ---------------------------------------------------------------

    async def find(self, tags: Sequence[str]) -> dict[str, str] | None:
        """Jobs named after these tags, any state, on every queue known (one ListJobs per run)."""
        wanted = {tag for tag in tags if bj.tag_of(tag.replace(".", "_")) is not None}
        if not wanted:
            return {}
        listed = await self._list_runs({bj.run_prefix(tag) for tag in wanted})
        found = bj.created_per_tag(listed, wanted)
        parents = await self._describe(self._array_parents(listed))
        for tag, (created, job_id) in ba.elements_per_tag(list(parents.values()), wanted).items():
            if tag not in found or created < found[tag][0]:
                found[tag] = (created, job_id)
        return {tag: job_id for tag, (_, job_id) in found.items()}

    @staticmethod
    def _array_parents(listed: Sequence[dict[str, Any]]) -> list[str]:
        """The ids of the array jobs among listed jobs (not their children, which some
        endpoints list under the same name)."""
        ids = [
            str(job["jobId"])
            for job in listed
            if ba.is_array_name(str(job.get("jobName") or "")) and ":" not in str(job["jobId"])
        ]
        return list(dict.fromkeys(ids))

    async def _list_runs(self, prefixes: set[str]) -> list[dict[str, Any]]:
        client = self._batch()
        listed: list[dict[str, Any]] = []
        for queue in sorted(self.queues):
            for prefix in sorted(prefixes):
                self.calls["ListJobs"] = self.calls.get("ListJobs", 0) + 1
                listed += await call(
                    "AWS Batch ListJobs",
                    pages,
                    client.list_jobs,
                    "jobSummaryList",
                    jobQueue=queue,
                    filters=[{"name": "JOB_NAME", "values": [prefix]}],
                )
        return listed

    # -- cancelling -----------------------------------------------------------------------

    async def cancel(self, job_ids: Sequence[str]) -> None:
        """CancelJob before a job starts, TerminateJob once it is STARTING or RUNNING."""
        ids = list(dict.fromkeys(job_ids))
        described = await self._describe(ids)
        self._cancelled.update(ids)
        for job_id in ids:
            status = str((described.get(job_id) or {}).get("status") or "")
            if status in ("SUCCEEDED", "FAILED"):
                continue
            client = self._batch()
            if status in ("STARTING", "RUNNING"):
                await self._aws(
                    "TerminateJob", client.terminate_job, jobId=job_id, reason=bj.CANCEL_REASON
                )
            else:
                await self._aws(
                    "CancelJob", client.cancel_job, jobId=job_id, reason=bj.CANCEL_REASON
                )

    # -- logs -----------------------------------------------------------------------------

    async def read_log(self, path: str, offset: int = 0, limit: int = 1 << 20) -> LogChunk:
        """Bytes of the job's CloudWatch stream; `missing` before the job has one."""
        job_id = self._log_jobs.get(path) or await self._job_for_path(path)
        if job_id is None:
            return LogChunk(b"", max(0, offset), 0, missing=True)
        jobs = await self._describe([job_id])
        job = jobs.get(job_id)
        stream = bj.log_stream(job) if job else None
        if job is None or stream is None:
            return LogChunk(b"", max(0, offset), 0, missing=True)
        stopped = job.get("stoppedAt")
        final = isinstance(stopped, int | float) and time.time() - stopped / 1000 > LOG_SETTLE_S
        group = self._group_of(path)
        self.calls["GetLogEvents"] = self.calls.get("GetLogEvents", 0) + 1
        try:
            return await call(
                "CloudWatch Logs GetLogEvents",
                self._streams.read,
                client=self._logs(),
                group=group,
                stream=stream,
                offset=offset,
                limit=limit,
                final=final,
            )
        except Exception as exc:
            if is_transient(exc) or "ResourceNotFound" not in describe(exc):
                raise
            return LogChunk(b"", max(0, offset), 0, missing=True)

    def _group_of(self, path: str) -> str:
        match = _LOG_PATH.fullmatch(path)
        return match["group"] if match else self.log_group

    async def _job_for_path(self, path: str) -> str | None:
        """After a restart: the run's jobs by name, their tags say which task and attempt."""
        match = _LOG_PATH.fullmatch(path)
        if match is None:
            return None
        listed = await self._list_runs({f"hut_{match['run']}_*"})
        plain = [str(job["jobId"]) for job in listed if ":" not in str(job["jobId"])]
        described = await self._describe(list(dict.fromkeys(plain)))
        prefix = f"{LOG_SCHEME}{self._group_of(path)}/{match['run']}/"
        for job_id, job in described.items():
            tags = job.get("tags") or {}
            task, attempt = tags.get(bj.TASK_KEY), tags.get(bj.ATTEMPT_KEY)
            if task is not None and attempt is not None:
                self._log_jobs.setdefault(f"{prefix}{task}.{attempt}", job_id)
            for element in ba.elements_of(job):
                attempt = element.tag.rsplit(".", 1)[-1]
                child = ba.element_id(job_id, element.index)
                self._log_jobs.setdefault(f"{prefix}{element.task}.{attempt}", child)
        return self._log_jobs.get(path)

    async def read_text(self, path: str, limit: int = 16 << 20) -> str:
        raise ScriptHutError(
            f"{path}: files written inside an AWS Batch container cannot be read back; "
            "a task of a Batch backend cannot use generates_source"
        )

    # -- info -----------------------------------------------------------------------------

    async def info(self) -> BackendInfo:
        """The known queues' state and status (DescribeJobQueues)."""
        try:
            reply = await self._aws(
                "DescribeJobQueues",
                self._batch().describe_job_queues,
                jobQueues=sorted(self.queues),
            )
        except Exception as exc:
            return BackendInfo(self.name, self.kind, reachable=False, message=describe(exc))
        queues = reply.get("jobQueues") or []
        partitions = tuple(
            PartitionInfo(
                name=str(q.get("jobQueueName")),
                state=f"{q.get('state', '?')}/{q.get('status', '?')}".lower(),
            )
            for q in queues
        )
        missing = sorted(self.queues - {p.name for p in partitions})
        message = f"job queue(s) not found: {', '.join(missing)}" if missing else None
        return BackendInfo(
            self.name, self.kind, reachable=True, message=message, partitions=partitions
        )
