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

import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Unpack

from scripthut.backends import slurm_arrays as sa
from scripthut.backends import slurm_parse as sp
from scripthut.backends.arrays import ArrayFiles, element_id, split_group
from scripthut.backends.base import (
    ArrayGroup,
    BackendInfo,
    JobRef,
    JobSpec,
    JobStatus,
    PollResult,
    SubmitOutcome,
)
from scripthut.backends.remote import (
    Section,
    capture,
    exit_codes,
    exit_files_script,
    index_script,
    indexed,
    is_safe_name,
    new_marker,
    script_end,
    script_start,
)
from scripthut.backends.scheduler import SUBMIT_PARALLEL as SUBMIT_PARALLEL  # bench/ uses it
from scripthut.backends.scheduler import (
    SchedulerBackend,
    SchedulerOptions,
    first_failure,
    split_shebang,
)
from scripthut.errors import ScriptHutError
from scripthut.states import JobState
from scripthut.transport import LocalTransport
from scripthut.workflow.script import LOGIN_SHEBANG, SHEBANG

FIND_DAYS = 14
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


class SlurmBackend(SchedulerBackend):
    """One Slurm cluster, reached through a transport."""

    kind = "slurm"
    submit_name = "sbatch"
    transient_errors = TRANSIENT_ERRORS

    def __init__(
        self,
        name: str,
        *,
        account: str | None = None,
        partition_map: Mapping[str, str] | None = None,
        default_partition: str | None = None,
        find_days: int = FIND_DAYS,
        **options: Unpack[SchedulerOptions],
    ) -> None:
        """`options`: the transport, limits and timings every scheduler takes (arrays on by
        default here)."""
        options.setdefault("arrays", True)
        super().__init__(name, **options)
        self.account = account
        self.partition_map = dict(partition_map or {})
        self.default_partition = default_partition
        self.find_days = find_days
        self.configured_max_concurrent = self.max_concurrent
        self.limits: sa.SiteLimits | None = None

    async def learn(self) -> None:
        await self.site_limits()

    # -- paths and scripts ----------------------------------------------------------------

    def partition_for(self, partition: str | None) -> str | None:
        """The task's partition through `partition_map`, else `default_partition`, else as is."""
        if partition is not None and partition in self.partition_map:
            return self.partition_map[partition]
        return self.default_partition or partition

    def render_script(self, spec: JobSpec, body: str) -> str:
        """`body` with #SBATCH lines after its shebang (a login shell if configured)."""
        if not is_safe_name(spec.tag):
            raise ScriptHutError(f"tag {spec.tag!r} is not safe for --comment ([A-Za-z0-9._-])")
        shebang, rest = split_shebang(body)
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

    # -- submitting -----------------------------------------------------------------------

    def submit_command(self) -> Sequence[str]:
        return ("sbatch", "--parsable")

    def submitted_job_id(self, text: str) -> str | None:
        return sp.submitted_job_id(text)

    # -- arrays -----------------------------------------------------------------------------

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
        return await self.submit_array_chunks(chunks, groups)

    def array_wrapper(self, group: ArrayGroup, files: ArrayFiles) -> str:
        header = self._directives(files.head(group.jobs))
        return sa.wrapper_script(header, group.jobs, group.throttle, files.bundle)

    def element_id(self, job_id: str, index: int) -> str:
        return element_id(job_id, index)

    # -- polling --------------------------------------------------------------------------

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
                '    [ -n "$__hut_id" ] || continue  # no jobs: one empty line\n',
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

    def read_poll(
        self, jobs: Sequence[JobRef], user: str, sections: Sequence[Section]
    ) -> PollResult:
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
        return self.unaccounted(
            ref,
            "not in squeue or sacct and no exit code yet",
            f"the job left Slurm's queue and neither sacct nor its exit-code file "
            f"({ref.paths.exit_code}) says how it ended",
        )

    # -- finding jobs again ---------------------------------------------------------------

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

    def read_find(
        self, tags: Sequence[str], user: str, sections: Sequence[Section]
    ) -> dict[str, str] | None:
        """Plain jobs by their own tag; array elements by (array tag, index) from the
        wrappers' tags lines, the array's job id from its index file or its comment.

        None when squeue fails, or sacct fails for another reason than accounting being
        disabled: a job accepted by sbatch must never be taken for missing."""
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
        await self.cancel_in_chunks("scancel", ids, _BENIGN_CANCEL)

    def inherited_env(self) -> tuple[dict[str, str] | None, str]:
        """Over the local shell, sbatch exports this server's environment (credentials
        withheld) to the job; over SSH it is the login environment on the cluster."""
        if isinstance(self.transport, LocalTransport):
            return dict(os.environ), "this server's environment, exported by sbatch"
        return None, f"the login environment on {self.transport.description} (not known here)"

    def info_script(self, user: str, marker: str) -> str:
        """Partitions (sinfo %C), idle/total CPUs of distinct nodes, pending/running counts."""
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

    def read_info(self, sections: Sequence[Section]) -> BackendInfo:
        why = first_failure(sections)
        if why is not None:
            return self.unreachable(why)
        by_name = {s.name: s for s in sections}
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
