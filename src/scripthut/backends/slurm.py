"""The Slurm backend: sbatch/squeue/sacct/scancel/sinfo through a transport (SSH or local).

Every operation costs a fixed number of round trips, whatever the number of jobs:
- `submit`: one generated script per chunk of up to 200 jobs (`remote.submit_script`, a few
  chunks at a time over the one connection): each job's
  script goes to `sbatch --parsable` on stdin; its tag is in `--comment` and in an index
  file under `<log_dir>/.tags/`, so a crash at any instant can be reconciled.
- `poll`: one script running `squeue` once (all the user's jobs, all states); for tracked jobs
  that squeue shows ended or no longer lists, the same script reads their exit-code files and
  runs one `sacct` for all of them. At most two scheduler commands per cycle.
- `find`: the tag index, then squeue and sacct comments, in one script.
- `cancel`: one `scancel` with every id. `info`: sinfo and a queue count in one script.
- `submit_arrays`: many tasks of one run with the same resources as one `--array` job per
  chunk (`slurm_arrays`): each element runs its own task script; its id is `123_4`, which
  squeue (`-r`, `JobArrayID`), sacct and scancel take like any job id. Site limits are read
  once (`scontrol show config`).

A query that fails is "unknown" (PollResult.ok False, find None), never "failed". A tracked
job that neither squeue, sacct nor its exit-code file can place stays UNKNOWN for
`missing_grace_s`, then FAILED with the reason.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping, Sequence

from scripthut.backends import slurm_arrays as sa
from scripthut.backends import slurm_parse as sp
from scripthut.backends.arrays import ARRAYS_DIR, element_id, split_group
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
    capture,
    check_name,
    exit_codes,
    exit_files_script,
    in_chunks,
    index_script,
    indexed,
    is_safe_name,
    new_marker,
    parent_dir,
    script_end,
    script_start,
    submit_replies,
    submit_script,
)
from scripthut.errors import ScriptHutError
from scripthut.outputs import OutputListing
from scripthut.states import JobState
from scripthut.transport import LocalTransport, Transport, TransportError
from scripthut.workflow.script import LOGIN_SHEBANG, SHEBANG

log = logging.getLogger(__name__)

SUBMIT_CHUNK = 200
SUBMIT_PARALLEL = 4
CANCEL_CHUNK = 500
MISSING_GRACE_S = 180.0
FIND_DAYS = 14
POLL_TIMEOUT = 120.0
TAGS_DIR = ".tags"
# sbatch errors that mean "the controller did not answer": nothing may be concluded.
TRANSIENT_ERRORS = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "temporarily unable to accept",
    "Resource temporarily unavailable",
    "Zero Bytes were transmitted",
    "Connection refused",
    "not responding",
)
_BENIGN_CANCEL = ("already completing or completed", "Invalid job id specified")


class SlurmBackend(Backend):
    """One Slurm cluster, reached through a transport."""

    kind = "slurm"

    def __init__(
        self,
        name: str,
        *,
        transport: Transport,
        max_concurrent: int,
        log_dir: str,
        account: str | None = None,
        partition_map: Mapping[str, str] | None = None,
        default_partition: str | None = None,
        login_shell: bool = False,
        missing_grace_s: float = MISSING_GRACE_S,
        submit_chunk: int = SUBMIT_CHUNK,
        submit_parallel: int = SUBMIT_PARALLEL,
        find_days: int = FIND_DAYS,
        arrays: bool = True,
        max_array_size: int | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        super().__init__(name, max_concurrent)
        self.host = RemoteHost(transport)
        self.log_dir = log_dir.rstrip("/") or "/"
        self.account = account
        self.partition_map = dict(partition_map or {})
        self.default_partition = default_partition
        self.login_shell = login_shell
        self.submit_chunk = max(1, submit_chunk)
        self.submit_parallel = max(1, submit_parallel)
        self.find_days = find_days
        self._missing = MissingClock(missing_grace_s)
        self.arrays = arrays
        self.max_array_size = max_array_size
        self.configured_max_concurrent = max_concurrent
        self.limits: sa.SiteLimits | None = None

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
            await self.site_limits()
        except TransportError as exc:
            # The engine reports reachability once per change; this is detail.
            log.debug("backend '%s': %s (will retry on first use)", self.name, exc)

    async def close(self) -> None:
        await self.host.close()

    # -- paths and scripts ----------------------------------------------------------------

    def job_paths(self, run_id: str, task_id: str, attempt: int) -> JobPaths:
        """`<log_dir>/<run_id>/<task_id>.<attempt>.{out,err,exit,sh}`, `~` resolved when known."""
        check_name("run id", run_id)
        check_name("task id", task_id)
        base = f"{self.host.absolute(self.log_dir)}/{run_id}/{task_id}.{attempt}"
        return JobPaths(
            stdout=f"{base}.out",
            stderr=f"{base}.err",
            exit_code=f"{base}.exit",
            script=f"{base}.sh",
        )

    def partition_for(self, partition: str | None) -> str | None:
        """The task's partition through `partition_map`, else `default_partition`, else as is."""
        if partition is not None and partition in self.partition_map:
            return self.partition_map[partition]
        return self.default_partition or partition

    def render_script(self, spec: JobSpec, body: str) -> str:
        """`body` with #SBATCH lines after its shebang (a login shell if configured)."""
        if not is_safe_name(spec.tag):
            raise ScriptHutError(f"tag {spec.tag!r} is not safe for --comment ([A-Za-z0-9._-])")
        shebang, _, rest = body.partition("\n")
        if not shebang.startswith("#!"):
            shebang, rest = SHEBANG, body
        if self.login_shell and shebang == SHEBANG:
            shebang = LOGIN_SHEBANG
        try:
            header = self._directives(spec)
        except ValueError as exc:
            raise ScriptHutError(f"task '{spec.task_id}': {exc}") from None
        return "\n".join([shebang, *header, rest])

    def _directives(self, spec: JobSpec) -> list[str]:
        partition = self.partition_for(spec.partition)
        return sp.directives(
            [
                ("job-name", sp.sbatch_value(spec.name)),
                ("partition", sp.sbatch_value(partition) if partition else None),
                ("account", sp.sbatch_value(self.account) if self.account else None),
                ("cpus-per-task", str(max(1, spec.cpus))),
                ("mem", f"{max(1, spec.memory_mb)}M"),
                ("time", sp.slurm_time(spec.time_limit_s)),
                ("gres", sp.sbatch_value(spec.gres) if spec.gres else None),
                ("output", sp.sbatch_path(self._header_path(spec.paths.stdout))),
                ("error", sp.sbatch_path(self._header_path(spec.paths.stderr))),
                ("comment", spec.tag),
            ]
        )

    def _header_path(self, path: str) -> str:
        """Slurm does not expand `~`: absolute under home, or relative to the submit dir (home)."""
        if self.host.home is not None:
            return self.host.absolute(path)
        return self.host.relative_to_home(path)

    def _index_dir(self) -> str:
        return f"{self.log_dir}/{TAGS_DIR}"

    # -- submitting -----------------------------------------------------------------------

    async def submit(self, jobs: Sequence[JobSpec]) -> list[SubmitOutcome]:
        """Every job through sbatch, at most `submit_chunk` jobs per round trip.

        A large batch is split into chunks run `submit_parallel` at a time over the one
        connection (sbatch is mostly process start-up and an RPC: parallel streams use the
        login node's cores). A rejected job (bad partition, account...) is an error outcome.
        When the controller does not answer, or a script's output is cut, TransportError
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
            items.append(self._submission(spec))
            positions.append(position)
        if items:
            marker = new_marker()
            text = self.submit_script(items, marker)
            timeout = 60.0 + 0.5 * len(items)
            sections = await self.host.script(text, marker, timeout=timeout)
            replies = submit_replies(sections, len(items))
            for position, reply in zip(positions, replies, strict=True):
                outcomes[position] = self._outcome(reply)
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
            command=("sbatch", "--parsable"),
            index_dir=self._index_dir(),
            marker=marker,
            transient=TRANSIENT_ERRORS,
        )

    # -- arrays -----------------------------------------------------------------------------

    def arrays_enabled(self) -> bool:
        return self.arrays

    async def site_limits(self) -> sa.SiteLimits:
        """MaxArraySize, MaxJobCount, MaxSubmitJobs: asked once, then kept; `max_concurrent`
        is lowered to what they allow. TransportError when the cluster cannot be reached."""
        if self.limits is None:
            _home, user = await self.host.identify()
            marker = new_marker()
            text = script_start(marker) + sa.limits_script(user) + script_end()
            limits = sa.read_limits(await self.host.script(text, marker))
            if limits is None:  # scontrol did not answer: Slurm's defaults, asked again later
                return sa.SiteLimits()
            self.limits = limits
            self.max_concurrent = limits.concurrency(self.configured_max_concurrent)
        return self.limits

    async def submit_arrays(self, groups: Sequence[ArrayGroup]) -> list[list[SubmitOutcome]]:
        """Each group as `--array` jobs of at most the site's array size, a few round trips
        at a time (about `submit_chunk` * 5 elements per round trip)."""
        limits = await self.site_limits()
        largest = limits.largest_array(self.max_array_size)
        chunks = [chunk for group in groups for chunk in split_group(group, largest)]
        trips = sa.packed(chunks, self.submit_chunk * 5)
        results = await in_chunks(
            trips, self._submit_arrays_trip, largest=1, parallel=self.submit_parallel
        )
        flat = [outcome for outcomes in results for outcome in outcomes]
        out: list[list[SubmitOutcome]] = []
        for group in groups:
            out.append(flat[: len(group.jobs)])
            flat = flat[len(group.jobs) :]
        return out

    async def _submit_arrays_trip(
        self, trips: Sequence[list[ArrayGroup]]
    ) -> list[list[SubmitOutcome]]:
        (chunks,) = trips
        items = [self._array_submission(chunk) for chunk in chunks]
        marker = new_marker()
        timeout = 60.0 + 0.05 * sum(len(chunk) for chunk in chunks)
        sections = await self.host.script(self.submit_script(items, marker), marker, timeout)
        replies = submit_replies(sections, len(items))
        outcomes: list[SubmitOutcome] = []
        for chunk, reply in zip(chunks, replies, strict=True):
            outcome = self._outcome(reply)
            if outcome is None:
                raise TransportError(
                    f"{self.transport.description}: the outcome of an array of {len(chunk)} "
                    f"is unknown ({self._why_unsure(replies)})"
                )
            for index in range(len(chunk)):
                job_id = outcome.job_id
                outcomes.append(
                    SubmitOutcome(job_id=element_id(job_id, index))
                    if job_id is not None
                    else SubmitOutcome(error=outcome.error)
                )
        return [outcomes]

    def _array_submission(self, group: ArrayGroup) -> Submission:
        folder = self.host.absolute(f"{self.log_dir}/{ARRAYS_DIR}")
        first = group.jobs[0]
        try:
            return sa.array_submission(group, folder, self._directives, self._submission)
        except ValueError as exc:
            raise ScriptHutError(f"task '{first.task_id}': {exc}") from None

    def _submission(self, spec: JobSpec) -> Submission:
        paths = spec.paths
        dirs = {parent_dir(p) for p in (paths.stdout, paths.stderr, paths.exit_code, paths.script)}
        return Submission(
            spec.tag,
            spec.script,
            paths.script,
            tuple(sorted(d for d in dirs if d is not None)),
            (paths.stdout, paths.stderr),
        )

    @staticmethod
    def _outcome(reply: SubmitReply | None) -> SubmitOutcome | None:
        """The outcome of one reply; None when it is unknown."""
        if reply is None or reply.kind == "skipped":
            return None
        if reply.kind == "error":
            return SubmitOutcome(error=sp.one_line(reply.text) or "not submitted")
        job_id = sp.submitted_job_id(reply.text)
        if reply.kind == "known" or reply.rc == 0:
            return SubmitOutcome(job_id=job_id) if job_id is not None else None
        if any(text in reply.text for text in TRANSIENT_ERRORS):
            return None
        text = sp.one_line(reply.text) or f"exit {reply.rc}"
        return SubmitOutcome(error=text if text.startswith("sbatch:") else f"sbatch: {text}")

    @staticmethod
    def _why_unsure(replies: Sequence[SubmitReply | None]) -> str:
        for reply in replies:
            if reply is not None and reply.kind == "rc" and reply.rc != 0:
                return f"sbatch: {sp.one_line(reply.text, 300)}"
        return "the submission script stopped early"

    # -- polling --------------------------------------------------------------------------

    async def poll(self, jobs: Sequence[JobRef]) -> PollResult:
        """Every tracked job's state, and the user's other jobs, in one round trip."""
        try:
            _home, user = await self.host.identify()
            marker = new_marker()
            sections = await self.host.script(
                self.poll_script(jobs, user, marker), marker, timeout=POLL_TIMEOUT
            )
        except TransportError as exc:
            return PollResult(ok=False, error=str(exc))
        return self._read_poll(jobs, sections)

    def poll_script(self, jobs: Sequence[JobRef], user: str, marker: str) -> str:
        """squeue once; for tracked jobs it shows ended or not at all: exit files, one sacct."""
        valid = [ref for ref in jobs if sp.is_job_id(ref.job_id)]
        ended = "|".join([*sp.FINAL_STATES, "CANCELLED*"])
        return "".join(
            [
                script_start(marker),
                capture("squeue", self._squeue_command(user)),
                'if [ "$__hut_rc" -eq 0 ]; then\n',
                "declare -A __hut_live=()\n",
                "while IFS=$'\\x1f' read -r __hut_id __hut_st __hut_rest; do\n",
                f"    case $__hut_st in {ended}) ;; *) __hut_live[$__hut_id]=1 ;; esac\n",
                'done <<< "$__hut_out"\n',
                exit_files_script(
                    [ref.job_id for ref in valid], [ref.paths.exit_code for ref in valid]
                ),
                'if [ "${#__hut_done[@]}" -gt 0 ]; then\n',
                '    __hut_list=$(IFS=,; printf "%s" "${__hut_done[*]}")\n',
                capture("sacct", self._sacct_command()),
                "fi\n",
                "fi\n",
                script_end(),
            ]
        )

    @staticmethod
    def _squeue_command(user: str) -> str:
        argv = ["squeue", "--noheader", "--all", "--array", "--states=all", f"--user={user}"]
        argv.append(f"--Format={sp.squeue_format()}")
        return "SLURM_TIME_FORMAT=%s " + shlex.join(argv)

    @staticmethod
    def _sacct_command() -> str:
        argv = ["sacct", "--noheader", "--parsable2", f"--delimiter={sp.FIELD_SEP}"]
        argv.append(f"--format={sp.sacct_format()}")
        return "SLURM_TIME_FORMAT=%s " + shlex.join(argv) + ' --jobs="$__hut_list"'

    def _read_poll(self, jobs: Sequence[JobRef], sections: Sequence[Section]) -> PollResult:
        squeue = next((s for s in sections if s.name == "squeue"), None)
        if squeue is None or squeue.rc() != 0:
            detail = sp.one_line(squeue.body) if squeue is not None else "no output"
            return PollResult(ok=False, error=f"squeue failed: {detail}")
        rows = {row.job_id: row for row in sp.parse_squeue(squeue.body)}
        exits = exit_codes(sections)
        acct, acct_state = _accounting(sections)
        result = PollResult(jobs={})
        for ref in jobs:
            result.jobs[ref.job_id] = self._status(
                ref, rows.get(ref.job_id), acct, exits, acct_state
            )
        tracked = {ref.job_id for ref in jobs}
        self._missing.keep_only(tracked)
        result.external = [
            sp.external_status(row)
            for row in rows.values()
            # A job named by a tag is ScriptHut's too: its PBS backend names jobs so, and
            # Torque-like wrappers over Slurm give it no comment.
            if row.job_id not in tracked
            and not sp.is_hut_tag(row.comment)
            and not sp.is_hut_tag(row.name)
        ]
        return result

    def _status(
        self,
        ref: JobRef,
        row: sp.QueueRow | None,
        acct: Mapping[str, sp.AcctJob],
        exits: Mapping[str, int | None],
        acct_state: str,
    ) -> JobStatus:
        if row is not None and not sp.is_final(row.state):
            status: JobStatus | None = sp.live_status(row)
        else:
            status = sp.final_status(ref.job_id, row, acct.get(ref.job_id), exits.get(ref.job_id))
        if status is None:
            return self._unaccounted(ref, acct_state)
        self._missing.seen(ref.job_id)
        return status

    def _unaccounted(self, ref: JobRef, acct_state: str) -> JobStatus:
        """A job nothing can place: UNKNOWN for the grace period, then FAILED."""
        if acct_state == "failed":
            reason = "not in squeue, and sacct did not answer: unknown for now"
            return JobStatus(ref.job_id, JobState.UNKNOWN, "UNKNOWN", reason=reason)
        over, waited = self._missing.over(ref.job_id)
        if not over:
            reason = f"not in squeue or sacct and no exit code yet (for {waited:.0f} s)"
            return JobStatus(ref.job_id, JobState.UNKNOWN, "UNKNOWN", reason=reason)
        reason = (
            f"the job left Slurm's queue and neither sacct nor its exit-code file "
            f"({ref.paths.exit_code}) says how it ended (waited {waited:.0f} s)"
        )
        return JobStatus(ref.job_id, JobState.FAILED, "LOST", reason=reason)

    # -- finding jobs again ---------------------------------------------------------------

    async def find(self, tags: Sequence[str]) -> dict[str, str] | None:
        """Jobs for these tags: the tag index, then squeue and sacct `--comment`s.

        None when squeue fails, or sacct fails for another reason than accounting being
        disabled: a job accepted by sbatch must never be taken for missing. TransportError
        when the cluster cannot be reached.
        """
        wanted = [tag for tag in dict.fromkeys(tags) if is_safe_name(tag)]
        if not wanted:
            return {}
        _home, user = await self.host.identify()  # TransportError: the caller retries
        marker = new_marker()
        sections = await self.host.script(
            self.find_script(wanted, user, marker), marker, timeout=POLL_TIMEOUT
        )
        return self._read_find(wanted, sections)

    def find_script(self, tags: Sequence[str], user: str, marker: str) -> str:
        sacct = [
            "sacct",
            "--noheader",
            "--parsable2",
            "--allocations",
            f"--delimiter={sp.FIELD_SEP}",
            f"--starttime=now-{self.find_days}days",
            f"--user={user}",
            "--format=JobID,Comment,State",
        ]
        awk = 'BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) k[w[i]] = 1 } ($2 in k)'
        return "".join(
            [
                script_start(marker),
                index_script(tags, self._index_dir()),
                'if [ "$__hut_missing" = 1 ]; then\n',
                sa.members_script(tags, self.log_dir),
                'for __hut_t in $__hut_arrays; do if [ -s "$__hut_idx/$__hut_t" ]; then\n',
                '    __hut_j=; read -r __hut_j < "$__hut_idx/$__hut_t"\n',
                '    printf \'%s index %s %s\\n\' "$__hut_m" "$__hut_t" "$__hut_j"\n',
                "fi; done\n",
                f'__hut_want={shlex.quote(" ".join(tags))}" $__hut_arrays"\n',
                capture("squeue", self._squeue_command(user)),
                f"__hut_out=$({shlex.join(sacct)} 2>&1)\n",
                "__hut_rc=$?\n",
                'if [ "$__hut_rc" -eq 0 ]; then\n',
                f"    __hut_out=$(awk -F $'\\x1f' -v want=\"$__hut_want\" "
                f'{shlex.quote(awk)} <<< "$__hut_out")\n',
                "fi\n",
                'printf \'%s found %s\\n%s\\n\' "$__hut_m" "$__hut_rc" "$__hut_out"\n',
                "fi\n",
                script_end(),
            ]
        )

    def _read_find(self, tags: Sequence[str], sections: Sequence[Section]) -> dict[str, str] | None:
        """Plain jobs by their own tag; array elements by (array tag, index) from the
        wrappers' tags lines, the array's job id from its index file or its comment."""
        members = sa.read_members(sections)
        wanted = set(tags) | {array for places in members.values() for array, _ in places}
        ids: dict[str, str] = {}
        for tag, text in indexed(sections).items():
            job_id = sp.submitted_job_id(text)
            if tag in wanted and job_id is not None:
                ids[tag] = job_id
        squeue = next((s for s in sections if s.name == "squeue"), None)
        accounted = next((s for s in sections if s.name == "found"), None)
        if squeue is None and accounted is None:
            return sa.found_tags(tags, members, ids)
        if squeue is None or squeue.rc() != 0 or accounted is None:
            return None
        for row in sp.parse_squeue(squeue.body):
            if row.comment in wanted and row.comment not in ids:
                ids[row.comment] = sa.base_job_id(row.job_id)
        acct_state = sp.accounting_state(accounted.rc() or 0, accounted.body)
        if acct_state == "ok":
            for job_id, comment in sp.parse_comment_rows(accounted.body):
                if comment in wanted and comment not in ids:
                    ids[comment] = job_id
        found = sa.found_tags(tags, members, ids)
        if acct_state == "failed" and len(found) < len(set(tags)):
            return None
        return found

    # -- cancelling, logs, info -----------------------------------------------------------

    async def cancel(self, job_ids: Sequence[str]) -> None:
        """One `scancel` per 500 ids; jobs that already ended are not an error."""
        ids = [job_id for job_id in dict.fromkeys(job_ids) if sp.is_job_id(job_id)]
        for start in range(0, len(ids), CANCEL_CHUNK):
            result = await self.transport.run(["scancel", *ids[start : start + CANCEL_CHUNK]])
            errors = [
                line
                for line in result.stderr.splitlines()
                if line.strip() and not any(text in line for text in _BENIGN_CANCEL)
            ]
            if not result.ok and errors:
                raise ScriptHutError(f"scancel failed: {sp.one_line(chr(10).join(errors))}")

    async def read_log(self, path: str, offset: int = 0, limit: int = 1 << 20) -> LogChunk:
        return await self.host.read_log(path, offset, limit)

    async def read_text(self, path: str, limit: int = 16 << 20) -> str:
        return await self.host.read_text(path, limit)

    async def list_outputs(self, pairs: Sequence[tuple[str, str]]) -> dict[str, OutputListing]:
        return await self.host.list_outputs(pairs)

    async def run_store_script(self, script: bytes) -> bytes:
        return await self.host.run_store_script(script)

    def host_path(self, path: str) -> str:
        """`~/x` and relative paths under the cluster's home once it is known (else as is:
        the job's shell, which starts in home, expands them)."""
        return self.host.absolute(path) if path else path

    def inherited_env(self) -> tuple[dict[str, str] | None, str]:
        """Over the local shell, sbatch exports this server's environment (credentials
        withheld) to the job; over SSH it is the login environment on the cluster."""
        if isinstance(self.transport, LocalTransport):
            return dict(os.environ), "this server's environment, exported by sbatch"
        return None, f"the login environment on {self.transport.description} (not known here)"

    async def info(self) -> BackendInfo:
        """Partitions (sinfo %C), idle/total CPUs of distinct nodes, pending/running counts."""
        try:
            _home, user = await self.host.identify()
            marker = new_marker()
            sections = await self.host.script(self.info_script(user, marker), marker)
        except TransportError as exc:
            return BackendInfo(self.name, self.kind, reachable=False, message=str(exc))
        return self._read_info(sections)

    @staticmethod
    def info_script(user: str, marker: str) -> str:
        sep = "$'\\x1f'"
        nodes = (
            "set -o pipefail; sinfo --noheader --Node --format='%N %C' | "
            "awk '!s[$1]++ { split($2, a, \"/\"); i += a[2]; t += a[4] } END { print i+0, t+0 }'"
        )
        queue = (
            "set -o pipefail; squeue --noheader --all --states=PENDING,RUNNING --format='%t %u' | "
            f"awk -v u={shlex.quote(user)} '{{ n[$1]++; if ($2 == u) m[$1]++ }} "
            'END { print n["PD"]+0, n["R"]+0, m["PD"]+0, m["R"]+0 }\''
        )
        return "".join(
            [
                script_start(marker),
                capture("partitions", f"sinfo --noheader --format=%R{sep}%a{sep}%C"),
                capture("nodes", nodes),
                capture("queue", queue),
                script_end(),
            ]
        )

    def _read_info(self, sections: Sequence[Section]) -> BackendInfo:
        by_name = {s.name: s for s in sections}
        failed = [s for s in by_name.values() if s.name != "end" and s.rc() != 0]
        if failed:
            why = f"{failed[0].name}: {sp.one_line(failed[0].body) or 'failed'}"
            return BackendInfo(self.name, self.kind, reachable=False, message=why)
        cpus = sp.parse_counts(by_name["nodes"].body, 2) if "nodes" in by_name else None
        queue = sp.parse_counts(by_name["queue"].body, 4) if "queue" in by_name else None
        message: str | None = None
        if queue is not None:
            message = (
                f"{queue[0]} pending, {queue[1]} running on the cluster "
                f"({queue[2]} pending, {queue[3]} running are yours)"
            )
        return BackendInfo(
            name=self.name,
            kind=self.kind,
            reachable=True,
            message=message,
            cpus_idle=cpus[0] if cpus else None,
            cpus_total=cpus[1] if cpus else None,
            queue_depth=queue[0] if queue else None,
            partitions=tuple(sp.parse_partitions(by_name["partitions"].body))
            if "partitions" in by_name
            else (),
        )


def _accounting(sections: Sequence[Section]) -> tuple[dict[str, sp.AcctJob], str]:
    section = next((s for s in sections if s.name == "sacct"), None)
    if section is None:
        return {}, "ok"
    state = sp.accounting_state(section.rc() or 0, section.body)
    return (sp.parse_sacct(section.body) if state == "ok" else {}), state
