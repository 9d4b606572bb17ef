"""The PBS backend: qsub/qstat/qdel/pbsnodes through a transport, Torque or PBS Pro dialect.

Every operation costs a fixed number of round trips, whatever the number of jobs:
- `submit`: one generated script per chunk of up to 200 jobs (`remote.submit_script`): each
  job's script is written beside its logs and given to `qsub` as a file; its tag is the job
  name (`-N`, shown by `qstat -f`) and an index file under `<log_dir>/.tags/`, so a crash at
  any instant can be reconciled.
- `poll`: one script running `qstat -f` once (every job the server lists, kept to the
  user's by `Job_Owner` before it crosses the wire); for tracked jobs it shows finished or
  not at all, the same script reads their exit-code files and, on PBS Pro, runs one
  `qstat -x -f` for all of them. At most two scheduler commands per cycle.
- `find`: the tag index, then job names in `qstat -f` (`-x` on PBS Pro), in one script.
- `cancel`: one `qdel` with every id. `info`: `pbsnodes -a` and `qstat -Q` in one script.
- `submit_arrays` (`pbs_arrays`): many tasks of one run with the same resources as one
  `-t`/`-J` array per chunk; elements `123[4]`, listed by `qstat -t -f`.

The dialect (`flavor`) is configured or learnt once from `qstat --version`. A query that
fails is "unknown" (PollResult.ok False, find None), never "failed". A tracked job that
neither qstat nor its exit-code file can place stays UNKNOWN for `missing_grace_s`, then
FAILED with the reason.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Unpack

from scripthut.backends import pbs_arrays as pa
from scripthut.backends import pbs_parse as pp
from scripthut.backends import pbs_script as ps
from scripthut.backends.arrays import read_members
from scripthut.backends.base import (
    BackendInfo,
    JobRef,
    JobSpec,
    JobStatus,
    PollResult,
)
from scripthut.backends.remote import (
    MissingClock,
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
from scripthut.backends.scheduler import (
    SchedulerOptions,
    split_shebang,
)
from scripthut.errors import ScriptHutError
from scripthut.states import JobState
from scripthut.transport import LocalTransport
from scripthut.workflow.script import LOGIN_SHEBANG, SHEBANG

log = logging.getLogger(__name__)

ENDED_GRACE_S = 30.0
JSON_SINCE = 14  # PBS Pro major version from which `qstat -F json` is used
# qsub errors that mean "the server did not answer": nothing may be concluded.
TRANSIENT_ERRORS = (
    "cannot connect to server",
    "Connection refused",
    "Connection timed out",
    "End of File",
    "Unable to contact slurm controller",
    "Socket timed out",
    "temporarily unable to accept",
    "Resource temporarily unavailable",
)
_BENIGN_CANCEL = ("Unknown Job Id", "Job has finished", "invalid state for job - COMPLETE")
_VERSION = re.compile(r"pbs_version\s*=\s*([0-9]+)", re.IGNORECASE)
# The user's records of `qstat -f` (blank-line separated); any other text (errors) passes.
_OWNER_FILTER = (
    'BEGIN { RS = ""; o = "Job_Owner = " u "@" } '
    '!/(^|\\n)Job Id:/ || index($0, o) { print; print "" }'
)
_LIVE_KEYS = '/^Job Id:/ { id = $3; sub(/\\..*/, "", id) } /^[ \\t]+job_state = / { print id, $3 }'


class PBSBackend(pa.PBSArrays):
    """One PBS server (Torque or PBS Pro / OpenPBS), reached through a transport."""

    kind = "pbs"
    submit_name = "qsub"
    transient_errors = TRANSIENT_ERRORS
    script_arg = True  # qsub gets the script as a file (the scheduler's own output: /dev/null)

    def __init__(
        self,
        name: str,
        *,
        flavor: str = "auto",
        queue: str | None = None,
        account: str | None = None,
        bin_dir: str | None = None,
        ended_grace_s: float = ENDED_GRACE_S,
        qstat_json: bool | None = None,
        **options: Unpack[SchedulerOptions],
    ) -> None:
        """`options`: the transport, limits and timings every scheduler takes."""
        if flavor not in (*ps.FLAVORS, "auto"):
            raise ValueError(f"unknown PBS flavor {flavor!r} (torque, pbspro or auto)")
        options.setdefault("arrays", True)
        super().__init__(name, **options)
        self.flavor = flavor
        self.queue = queue
        self.account = account
        self.bin_dir = bin_dir
        self.use_json = bool(qstat_json)
        # Nothing to learn when the dialect is given and, for PBS Pro, whether -F json works.
        self._detected = flavor == "torque" or (flavor == "pbspro" and qstat_json is not None)
        self._ended = MissingClock(ended_grace_s)
        self._deleted: set[str] = set()  # keys of jobs this backend gave to qdel
        self.limits: pa.SiteLimits | None = None
        self.expand_arrays = self.arrays  # `qstat -t`, until the server says it has no -t
        self._array_deletes: dict[str, str] = {}  # array key -> an element given to qdel

    @property
    def dialect(self) -> str:
        """`torque` or `pbspro` (Torque-like until the server says otherwise)."""
        return "torque" if self.flavor == "auto" else self.flavor

    async def learn(self) -> None:
        await self.detect()

    async def ready(self) -> None:
        await self.detect()

    def _path(self, name: str) -> str:
        return f"{self.bin_dir}/{name}" if self.bin_dir else name

    def command(self, name: str) -> str:
        """A PBS command as a shell word: from `bin_dir` when configured."""
        return shlex.quote(self._path(name))

    async def detect(self) -> None:
        """Learn the dialect (flavor auto) and the PBS Pro version once, from `--version`."""
        if self._detected:
            return
        marker = new_marker()
        text = "".join(
            [
                script_start(marker),
                capture("version", f"{self.command('qstat')} --version"),
                capture("nodes", f"{self.command('pbsnodes')} --version"),
                script_end(),
            ]
        )
        sections = await self.host.script(text, marker)
        output = "\n".join(s.body for s in sections)
        found = pp.detect_flavor(output)
        if self.flavor == "auto":
            self.flavor = found
        version = _VERSION.search(output)
        self.use_json = (
            self.flavor == "pbspro" and version is not None and int(version[1]) >= JSON_SINCE
        )
        self._detected = True

    # -- paths and scripts ----------------------------------------------------------------

    def queue_for(self, partition: str | None) -> str | None:
        """The configured `queue` overrides the task's partition."""
        return self.queue or partition

    def render_script(self, spec: JobSpec, body: str) -> str:
        """`body` with #PBS lines after its shebang, then its output sent to its logs."""
        if not is_safe_name(spec.tag):
            raise ScriptHutError(f"tag {spec.tag!r} is not safe as a job name ([A-Za-z0-9._-])")
        shebang, rest = split_shebang(body)
        if self.login_shell and shebang == SHEBANG:
            shebang = LOGIN_SHEBANG
        try:
            header = self.job_header(spec)
        except ValueError as exc:
            raise ScriptHutError(f"task '{spec.task_id}': {exc}") from None
        redirect = ps.log_redirect(spec.paths.stdout, spec.paths.stderr)
        return "\n".join([shebang, *header, redirect, rest])

    def job_header(self, spec: JobSpec) -> list[str]:
        """The #PBS lines of one job."""
        res = ps.Resources(spec.cpus, spec.memory_mb, spec.time_limit_s, spec.gres)
        return ps.job_header(
            self.dialect,
            name=spec.tag,
            queue=self.queue_for(spec.partition),
            account=self.account,
            res=res,
        )

    # -- submitting -----------------------------------------------------------------------

    def submit_command(self) -> Sequence[str]:
        return (self._path("qsub"), "-o", "/dev/null", "-e", "/dev/null")

    def submitted_job_id(self, text: str) -> str | None:
        return pp.submitted_job_id(text)

    # -- polling --------------------------------------------------------------------------

    def qstat_command(self, user: str, *, history: bool = False) -> str:
        """`qstat -f` (`-x` too: finished jobs) kept to the user's records, times in UTC."""
        flags = "-x -f" if history else "-f"
        awk = f"awk -v u={shlex.quote(user)} {shlex.quote(_OWNER_FILTER)}"
        listing = f"TZ=UTC {self.command('qstat')} {flags}"
        if self.expand_arrays:
            listing = pa.expanded_listing(f"TZ=UTC {self.command('qstat')}", flags)
        return f"set -o pipefail; {{ {listing}; }} 2>&1 | {awk}"

    def history_command(self) -> str:
        """PBS Pro: `qstat -x -f` for the tracked jobs qstat -f no longer lists."""
        qstat = f"TZ=UTC {self.command('qstat')} -x{' -t' if self.arrays else ''} -f"
        if self.use_json:
            return f'{qstat} -F json "${{__hut_done[@]}}" 2>/dev/null'
        return f'{qstat} "${{__hut_done[@]}}"'

    def poll_script(self, jobs: Sequence[JobRef], user: str, marker: str) -> str:
        valid = [ref for ref in jobs if pp.is_job_id(ref.job_id)]
        finals = "|".join(pp.FINAL_LETTERS)
        history = [
            'if [ "${#__hut_done[@]}" -gt 0 ]; then\n',
            f"__hut_out=$({self.history_command()})\n",
            "__hut_rc=$?\n",
            'printf \'%s history %s\\n%s\\n\' "$__hut_m" "$__hut_rc" "$__hut_out"\n',
            "fi\n",
        ]
        return "".join(
            [
                script_start(marker),
                capture("qstat", self.qstat_command(user)),
                'if [ "$__hut_rc" -eq 0 ]; then\n',
                "declare -A __hut_live=()\n",
                "while read -r __hut_id __hut_st; do\n",
                f"    case $__hut_st in {finals}) ;; *) __hut_live[$__hut_id]=1 ;; esac\n",
                f'done < <(awk {shlex.quote(_LIVE_KEYS)} <<< "$__hut_out")\n',
                exit_files_script(
                    [pp.job_key(ref.job_id) for ref in valid],
                    [ref.paths.exit_code for ref in valid],
                ),
                *(history if self.flavor == "pbspro" else []),
                "fi\n",
                script_end(),
            ]
        )

    def read_poll(
        self, jobs: Sequence[JobRef], user: str, sections: Sequence[Section]
    ) -> PollResult:
        qstat = next((s for s in sections if s.name == "qstat"), None)
        if qstat is None or qstat.rc() != 0:
            detail = pp.one_line(qstat.body) if qstat is not None else "no output"
            return PollResult(ok=False, error=f"qstat failed: {detail or 'no output'}")
        if pa.NO_T_MARK in qstat.body:
            self.expand_arrays = False
        live = {job.key: job for job in pp.owned_by(pp.parse_qstat_f(qstat.body), user)}
        past, history_ok = self._history(sections)
        exits = exit_codes(sections)
        arrays = pa.array_records({**past, **live}, [ref.job_id for ref in jobs])
        result = PollResult(jobs={})
        for ref in jobs:
            key = pp.job_key(ref.job_id)
            job = live.get(key) or past.get(key)
            if ref.job_id in arrays:
                status = self._element_status(ref, arrays[ref.job_id], exits.get(key))
                result.jobs[ref.job_id] = status
                continue
            result.jobs[ref.job_id] = self._status(ref, job, exits.get(key), history_ok)
        tracked = {pp.job_key(ref.job_id) for ref in jobs}
        bases = {pa.split_id(ref.job_id)[0] for ref in jobs}
        self._array_deletes = {b: e for b, e in self._array_deletes.items() if b in bases}
        self._missing.keep_only({ref.job_id for ref in jobs})
        self._ended.keep_only({ref.job_id for ref in jobs})
        self._deleted &= tracked
        result.external = [
            pp.external_status(job)
            for key, job in live.items()
            if key not in tracked and not pp.is_hut_tag(job.name)
        ]
        return result

    def _history(self, sections: Sequence[Section]) -> tuple[dict[str, pp.PBSJob], bool]:
        """Finished jobs from `qstat -x` (PBS Pro); ok is False when it did not answer.

        Exit 153 only says some ids are unknown (purged): the others are still listed.
        """
        section = next((s for s in sections if s.name == "history"), None)
        if section is None:
            return {}, True
        if section.rc() not in (0, pp.UNKNOWN_JOB_RC):
            if self.use_json and section.rc() == 2:  # no -F json here after all
                self.use_json = False
            return {}, False
        try:
            jobs = pp.parse_qstat(section.body)
        except ValueError as exc:
            log.info("backend '%s': qstat -x output unreadable: %s", self.name, exc)
            return {}, False
        return {job.key: job for job in jobs}, True

    def _status(
        self, ref: JobRef, job: pp.PBSJob | None, exit_file: int | None, history_ok: bool
    ) -> JobStatus:
        if job is not None and not pp.is_final(job.state):
            self._missing.seen(ref.job_id)
            return pp.live_status(job, ref.job_id)
        status = pp.final_status(ref.job_id, job, exit_file)
        if status is not None:
            self._missing.seen(ref.job_id)
            return status
        if job is not None:
            return self._ended_without_code(ref, job)
        if not history_ok:
            reason = "not listed by qstat, and qstat -x did not answer: unknown for now"
            return JobStatus(ref.job_id, JobState.UNKNOWN, "UNKNOWN", reason=reason)
        return self.unaccounted(
            ref,
            "not listed by qstat and no exit code yet",
            f"the job left the PBS server's list and its exit-code file "
            f"({ref.paths.exit_code}) says nothing",
        )

    def _element_status(self, ref: JobRef, array: pp.PBSJob, exit_file: int | None) -> JobStatus:
        """An element the server lists no record of (see `pbs_arrays.element_status`)."""
        key = pp.job_key(ref.job_id)
        status = pa.element_status(
            ref.job_id,
            array,
            exit_file,
            deleted=key in self._deleted,
            sibling_deleted=self._array_deletes.get(pa.split_id(key)[0]),
        )
        if status is None:
            return self._ended_without_code(ref, array)
        self._missing.seen(ref.job_id)
        return status

    def _ended_without_code(self, ref: JobRef, job: pp.PBSJob) -> JobStatus:
        """Finished per the server, no exit status, no exit-code file (yet): a shared file
        system may show the file late; after the grace, the job never ran its command."""
        self._missing.seen(ref.job_id)
        if job.key in self._deleted:
            reason = "cancelled (qdel) before its script could record an exit code"
            return JobStatus(ref.job_id, JobState.CANCELLED, job.state, reason=reason)
        over, waited = self._ended.over(ref.job_id)
        if not over:
            reason = f"finished; waiting for its exit-code file (for {waited:.0f} s)"
            return JobStatus(ref.job_id, JobState.UNKNOWN, job.state, reason=reason)
        reason = (
            "finished without an exit code: it was deleted before it ran, or killed "
            f"before its script could record one ({ref.paths.exit_code})"
        )
        return JobStatus(
            ref.job_id,
            JobState.FAILED,
            job.state,
            reason=reason,
            name=job.name,
            user=job.owner,
            partition=job.get("queue"),
        )

    # -- finding jobs again ---------------------------------------------------------------

    def find_script(self, tags: Sequence[str], user: str, marker: str) -> str:
        history = self.flavor == "pbspro"
        return "".join(
            [
                script_start(marker),
                index_script(tags, self._index_dir()),
                'if [ "$__hut_missing" = 1 ]; then\n',
                *(pa.find_members(tags, self.log_dir) if self.arrays else []),
                capture("qstat", self.qstat_command(user, history=history)),
                "fi\n",
                script_end(),
            ]
        )

    def read_find(
        self, tags: Sequence[str], user: str, sections: Sequence[Section]
    ) -> dict[str, str] | None:
        members = read_members(sections)
        arrays = {array for places in members.values() for array, _ in places}
        wanted = set(tags) | arrays
        found: dict[str, str] = {}
        for tag, text in indexed(sections).items():
            job_id = pp.submitted_job_id(text)
            if tag in wanted and job_id is not None:
                found[tag] = job_id
        resolved = pa.with_elements(tags, members, found)
        if len(resolved) == len(tags):
            return resolved
        qstat = next((s for s in sections if s.name == "qstat"), None)
        if qstat is None or qstat.rc() != 0:
            return None
        records = pp.owned_by(pp.parse_qstat_f(qstat.body), user)
        for job in records:
            if job.name in wanted and job.name not in found and job.name not in arrays:
                found[job.name] = job.job_id
        found.update(pa.arrays_by_name(records, arrays - found.keys()))
        return pa.with_elements(tags, members, found)

    # -- cancelling, logs, info -----------------------------------------------------------

    async def cancel(self, job_ids: Sequence[str]) -> None:
        """One `qdel` per 500 ids; jobs that already ended are not an error."""
        ids = [job_id for job_id in dict.fromkeys(job_ids) if pp.is_job_id(job_id)]
        self._deleted.update(pp.job_key(job_id) for job_id in ids)
        if not self.expand_arrays:  # the server lists no elements: qdel deletes whole arrays
            for job_id in ids:
                self._array_deletes.setdefault(pa.split_id(job_id)[0], job_id)
        await self.cancel_in_chunks(self._path("qdel"), ids, _BENIGN_CANCEL)

    def inherited_env(self) -> tuple[dict[str, str] | None, str]:
        """qsub does not pass the submitter's environment on (no -V): PBS starts each job in
        a login environment on its node, over the local shell as over SSH."""
        where = (
            "this host"
            if isinstance(self.transport, LocalTransport)
            else (self.transport.description)
        )
        return None, f"the login environment PBS gives jobs on {where} (not known here)"

    def info_script(self, user: str, marker: str) -> str:
        """CPUs from `pbsnodes -a`, queues and their counts from `qstat -Q`."""
        return "".join(
            [
                script_start(marker),
                capture("nodes", f"{self.command('pbsnodes')} -a"),
                capture("queues", f"{self.command('qstat')} -Q"),
                script_end(),
            ]
        )

    def read_info(self, sections: Sequence[Section]) -> BackendInfo:
        by_name: Mapping[str, Section] = {s.name: s for s in sections}
        nodes, queues = by_name.get("nodes"), by_name.get("queues")
        if nodes is None or nodes.rc() != 0:
            why = pp.one_line(nodes.body) if nodes is not None else "no output"
            return BackendInfo(self.name, self.kind, reachable=False, message=f"pbsnodes: {why}")
        cpus = pp.parse_pbsnodes(nodes.body)
        parts, queued, running = pp.parse_queues(queues.body if queues is not None else "")
        message = f"PBS ({self.flavor})"
        if queued is not None and running is not None:
            message += f": {queued} queued, {running} running on the cluster"
        return BackendInfo(
            name=self.name,
            kind=self.kind,
            reachable=True,
            message=message,
            cpus_idle=cpus[0] if cpus else None,
            cpus_total=cpus[1] if cpus else None,
            queue_depth=queued,
            partitions=tuple(parts),
        )
