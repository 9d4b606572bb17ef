"""The Grid Engine backend (Son of Grid Engine, Univa, Altair GE) through a transport.

Every operation costs a fixed number of round trips, whatever the number of jobs:
- `submit`: one generated script per chunk of up to 200 jobs (`remote.submit_script`): each
  job's script goes to `qsub -terse` on stdin; its tag is in the job context
  (`-ac scripthut_tag=<tag>`, shown by `qstat -j`) and in an index file under
  `<log_dir>/.tags/`, written before the reply, so a crash at any instant can be reconciled.
- `poll`: one script running `qstat -xml` once (the user's pending, running, suspended and
  zombie jobs); for tracked jobs it shows ended or no longer lists, the same script reads their
  exit-code files and runs one `qacct` for the user's recent jobs, filtered to those. At most
  two scheduler commands per cycle.
- `find`: the tag index, then the contexts of the user's queued jobs (`qstat -xml -j`).
- `submit_arrays`: many tasks of one run with the same resources as one `-t 1-<n>` job per
  chunk (`sge_arrays`, within `max_aj_tasks`, `-tc` within `max_aj_instances`); element
  `i` is task `i + 1`, its id `123.4` as qstat and qacct name it.
- `cancel`: one `qdel` with every id (`qdel 123 -t 4` for an array element).
- `info`: `qstat -g c -xml`, `qhost -xml`, queue counts.

A query that fails is "unknown" (PollResult.ok False, find None), never "failed". A tracked job
that nothing can place stays UNKNOWN for `missing_grace_s`, then FAILED. A zombie (a job that
ended) with neither accounting nor an exit-code file never ran (deleted while pending): it is
CANCELLED once `zombie_grace_s` has passed, so that lagging accounting is waited for.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, timezone
from typing import Unpack

from scripthut.backends import sge_arrays as ga
from scripthut.backends import sge_parse as gp
from scripthut.backends import sge_scripts as scripts
from scripthut.backends import slurm_arrays as sa
from scripthut.backends.arrays import ArrayFiles, split_group
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
    MissingClock,
    Section,
    exit_codes,
    indexed,
    is_safe_name,
    new_marker,
    script_end,
    script_start,
)
from scripthut.backends.scheduler import (
    CANCEL_CHUNK,
    SchedulerBackend,
    SchedulerOptions,
    first_failure,
    split_shebang,
)
from scripthut.errors import ScriptHutError
from scripthut.states import JobState
from scripthut.workflow.model import DEFAULT_PARTITION
from scripthut.workflow.script import shell_path, shell_quote

ZOMBIE_GRACE_S = 60.0
ACCT_DAYS = 14
TAG_CONTEXT = "scripthut_tag"
# qsub/qstat errors that mean "the qmaster did not answer": nothing may be concluded.
TRANSIENT_ERRORS = (
    "unable to contact qmaster",
    "unable to send message to qmaster",
    "commlib error",
    "Error reading answer list from qmaster",
    "failed receiving gdi request",
    "can't connect",
    "Connection refused",
)
_BENIGN_CANCEL = ("does not exist", "has already been deleted", "is already in deletion")


class SGEBackend(SchedulerBackend):
    """One Grid Engine cluster, reached through a transport."""

    kind = "sge"
    submit_name = "qsub"
    transient_errors = TRANSIENT_ERRORS

    def __init__(
        self,
        name: str,
        *,
        account: str | None = None,
        queue: str | None = None,
        partition_map: Mapping[str, str] | None = None,
        parallel_env: str | None = None,
        memory_resource: str | None = "h_vmem",
        zombie_grace_s: float = ZOMBIE_GRACE_S,
        acct_days: int = ACCT_DAYS,
        **options: Unpack[SchedulerOptions],
    ) -> None:
        """`options`: the transport, limits and timings every scheduler takes (arrays on by
        default here)."""
        options.setdefault("arrays", True)
        super().__init__(name, **options)
        self.account = account
        self.queue = queue
        self.partition_map = dict(partition_map or {})
        self.parallel_env = parallel_env
        self.memory_resource = memory_resource
        self.acct_days = acct_days
        self.limits: ga.SiteLimits | None = None
        self._zombies = MissingClock(zombie_grace_s)

    @property
    def zombie_grace_s(self) -> float:
        """How long an ended job with no accounting record waits for one."""
        return self._zombies.grace_s

    @zombie_grace_s.setter
    def zombie_grace_s(self, seconds: float) -> None:
        self._zombies.grace_s = seconds

    # -- paths and scripts ----------------------------------------------------------------

    def queue_for(self, partition: str | None) -> str | None:
        """`queue` if set, else the task's partition through `partition_map`, else as is.

        A task that names no partition (the workflow default, `normal`) requests no queue:
        Grid Engine then picks any queue the job fits, as a plain qsub does.
        """
        if self.queue:
            return self.queue
        if partition is not None and partition in self.partition_map:
            return self.partition_map[partition]
        return None if partition == DEFAULT_PARTITION else partition

    def render_script(self, spec: JobSpec, body: str) -> str:
        """`body` with `#$` lines after its shebang.

        Grid Engine runs a script with the shell `-S` names (its `#!` line is ignored under
        the usual `posix_compliant` start mode), so a shebang with arguments (`bash -l` for
        login_shell) is honoured by the script starting itself again that way. Log paths
        Grid Engine would expand or split are written by the script's own redirection.
        """
        if not is_safe_name(spec.tag):
            raise ScriptHutError(f"tag {spec.tag!r} is not safe for a job context")
        shebang, rest = split_shebang(body)
        words = shebang[2:].split()
        if self.login_shell and words[1:] == []:
            words.append("-l")
        try:
            header, prologue = self._directives(spec, words[0] if words else "/bin/bash")
        except ValueError as exc:
            raise ScriptHutError(f"task '{spec.task_id}': {exc}") from None
        if len(words) > 1:
            again = " ".join(shell_quote(word) for word in words)
            prologue.insert(
                0, f'[ -n "${{__HUT_SGE_SHELL-}}" ] || __HUT_SGE_SHELL=1 exec {again} "$0"'
            )
        return "\n".join([shebang, *header, *prologue, rest])

    def _directives(self, spec: JobSpec, shell: str) -> tuple[list[str], list[str]]:
        queue = self.queue_for(spec.partition)
        cpus = max(1, spec.cpus)
        if cpus > 1 and not self.parallel_env:
            raise ValueError(
                f"asks for {cpus} cpus, but backend '{self.name}' names no parallel_env "
                "(the site's parallel environment for multi-slot jobs, e.g. smp)"
            )
        resources = [f"h_rt={gp.h_rt(spec.time_limit_s)}"]
        if self.memory_resource:
            per_slot = -(-max(1, spec.memory_mb) // cpus)  # Grid Engine counts memory per slot
            resources.append(f"{self.memory_resource}={per_slot}M")
        if spec.gres:
            resources.append(gp.word("gres", spec.gres))
        prologue: list[str] = []
        out, err = (
            self._log_path(p, prologue, fd)
            for p, fd in ((spec.paths.stdout, 1), (spec.paths.stderr, 2))
        )
        header = gp.directives(
            [
                ("N", gp.job_name(spec.name)),
                ("S", gp.path(shell)),
                ("q", gp.word("queue", queue) if queue else None),
                ("A", gp.word("account", self.account) if self.account else None),
                (
                    "pe",
                    f"{gp.word('parallel_env', self.parallel_env)} {cpus}"
                    if cpus > 1 and self.parallel_env
                    else None,
                ),
                ("l", ",".join(resources)),
                ("o", out),
                ("e", err),
                ("j", "n"),
                ("ac", f"{TAG_CONTEXT}={spec.tag}"),
            ]
        )
        return header, prologue

    def _log_path(self, path: str, prologue: list[str], fd: int) -> str:
        """The path for `-o`/`-e`; one Grid Engine cannot take is written by the script."""
        absolute = self.host.absolute(path) if self.host.home is not None else path
        try:
            if absolute.startswith("~"):
                raise ValueError("not absolute yet")
            return gp.path(absolute)
        except ValueError:
            prologue.append(f"exec {fd}>>{shell_path(path)}")
            return "/dev/null"

    # -- submitting -----------------------------------------------------------------------

    def submit_command(self) -> Sequence[str]:
        return ("qsub", "-terse")

    def submitted_job_id(self, text: str) -> str | None:
        return gp.submitted_job_id(text)

    # -- arrays -----------------------------------------------------------------------------

    async def site_limits(self) -> ga.SiteLimits:
        """`max_aj_tasks` and `max_aj_instances`: asked once, then kept (Grid Engine's
        defaults, asked again later, when qconf does not answer)."""
        if self.limits is None:
            await self.host.identify()
            marker = new_marker()
            text = script_start(marker) + ga.limits_script() + script_end()
            limits = ga.read_limits(await self.host.script(text, marker))
            if limits is None:
                return ga.SiteLimits()
            self.limits = limits
        return self.limits

    async def submit_arrays(self, groups: Sequence[ArrayGroup]) -> list[list[SubmitOutcome]]:
        """Each group as `-t` jobs of at most `max_aj_tasks` elements, about
        `submit_chunk` * 5 elements per round trip."""
        limits = await self.site_limits()
        largest = limits.largest_array(self.max_array_size)
        chunks = [
            ArrayGroup(chunk.jobs, limits.throttle(chunk.throttle))
            for group in groups
            for chunk in split_group(group, largest)
        ]
        return await self.submit_array_chunks(chunks, groups)

    def element_id(self, job_id: str, index: int) -> str:
        return ga.element_id(job_id, index)

    def array_wrapper(self, group: ArrayGroup, files: ArrayFiles) -> str:
        header, prologue = self._directives(files.head(group.jobs), "/bin/bash")
        options = gp.directives(ga.array_options(len(group.jobs), group.throttle))
        return ga.wrapper_script(header, [*options, *prologue], group.jobs, files.bundle)

    # -- polling --------------------------------------------------------------------------

    def poll_script(self, jobs: Sequence[JobRef], user: str, marker: str) -> str:
        return scripts.poll_script(jobs, user, marker, self.acct_days)

    def read_poll(
        self, jobs: Sequence[JobRef], user: str, sections: Sequence[Section]
    ) -> PollResult:
        qstat = next((s for s in sections if s.name == "qstat"), None)
        if qstat is None or qstat.rc() != 0:
            detail = gp.one_line(qstat.body) if qstat is not None else "no output"
            return PollResult(ok=False, error=f"qstat failed: {detail}")
        tz = _offset(sections)
        try:
            rows = {row.job_id: row for row in gp.parse_qstat_xml(qstat.body, tz)}
        except ValueError as exc:
            return PollResult(ok=False, error=str(exc))
        arrays = {ga.split_id(ref.job_id)[0] for ref in jobs if "." in ref.job_id}
        rows.update(_pending_elements(jobs, rows))
        exits = exit_codes(sections)
        acct, acct_state = _accounting(sections, tz)
        result = PollResult(jobs={})
        for ref in jobs:
            result.jobs[ref.job_id] = self._status(
                ref, rows.get(ref.job_id), acct, exits, acct_state
            )
        tracked = {ref.job_id for ref in jobs}
        self._missing.keep_only(tracked)
        self._zombies.keep_only(tracked)
        result.external = [
            gp.external_status(row)
            for row in rows.values()
            if row.job_id not in tracked and ga.split_id(row.job_id)[0] not in arrays
        ]
        return result

    def _status(
        self,
        ref: JobRef,
        row: gp.QueueRow | None,
        acct: Mapping[str, gp.AcctJob],
        exits: Mapping[str, int | None],
        acct_state: str,
    ) -> JobStatus:
        if row is not None and not gp.is_ended(row.state):
            self._missing.seen(ref.job_id)
            return gp.live_status(row)
        status = gp.final_status(ref.job_id, row, acct.get(ref.job_id), exits.get(ref.job_id))
        if status is not None:
            self._missing.seen(ref.job_id)
            self._zombies.seen(ref.job_id)
            return status
        if acct_state == "failed":
            reason = "not in qstat, and qacct did not answer: unknown for now"
            return JobStatus(ref.job_id, JobState.UNKNOWN, "UNKNOWN", reason=reason)
        if row is not None:
            return self._zombie(ref, row)
        return self._unaccounted(ref)

    def _zombie(self, ref: JobRef, row: gp.QueueRow) -> JobStatus:
        """Ended with no accounting and no exit code: deleted before it ran (after a grace)."""
        over, waited = self._zombies.over(ref.job_id)
        if not over:
            reason = f"ended; waiting for its accounting record ({waited:.0f} s)"
            return JobStatus(ref.job_id, JobState.UNKNOWN, row.state, reason=reason)
        reason = "ended without running (deleted while pending): no accounting record"
        return JobStatus(
            ref.job_id, JobState.CANCELLED, row.state, reason=reason, name=row.name, user=row.user
        )

    def _unaccounted(self, ref: JobRef) -> JobStatus:
        return self.unaccounted(
            ref,
            "not in qstat or qacct and no exit code yet",
            f"the job left Grid Engine's queue and neither qacct nor its exit-code file "
            f"({ref.paths.exit_code}) says how it ended",
        )

    # -- finding jobs again ---------------------------------------------------------------

    def find_script(self, tags: Sequence[str], user: str, marker: str) -> str:
        return scripts.find_script(tags, user, marker, self._index_dir(), self.log_dir)

    def read_find(
        self, tags: Sequence[str], user: str, sections: Sequence[Section]
    ) -> dict[str, str] | None:
        """Plain jobs by their own tag; array elements by (array tag, index) from the
        wrappers' tags lines, the array's job id from its index file or its job context.
        None when qstat fails."""
        members = sa.read_members(sections)
        wanted = set(tags) | {array for places in members.values() for array, _ in places}
        ids: dict[str, str] = {}
        for tag, text in indexed(sections).items():
            job_id = gp.submitted_job_id(text)
            if tag in wanted and job_id is not None:
                ids[tag] = job_id
        contexts = next((s for s in sections if s.name == "contexts"), None)
        if contexts is None and not set(tags) <= ids.keys():
            return None
        if contexts is not None:
            if contexts.rc() != 0:
                return None
            for job_id, values in gp.parse_contexts(contexts.body).items():
                tag = values.get(TAG_CONTEXT, "")
                if tag in wanted and tag not in ids:
                    ids[tag] = job_id
        found = {tag: ids[tag] for tag in tags if tag in ids}
        for tag, places in members.items():
            for array, index in places:
                if tag not in found and array in ids and gp.is_job_id(ids[array]):
                    found[tag] = ga.element_id(ids[array], index)
        return found

    # -- cancelling, logs, info -----------------------------------------------------------

    async def cancel(self, job_ids: Sequence[str]) -> None:
        """One `qdel` per 500 ids, and `qdel 123 -t 4-9` per run of an array's elements, all
        in one round trip; jobs that already ended are not an error."""
        ids = [job_id for job_id in dict.fromkeys(job_ids) if gp.is_job_id(job_id)]
        plain = [job_id for job_id in ids if "." not in job_id]
        commands = [
            ["qdel", *plain[i : i + CANCEL_CHUNK]] for i in range(0, len(plain), CANCEL_CHUNK)
        ]
        commands += [["qdel", number, "-t", tasks] for number, tasks in ga.task_ranges(ids)]
        if not commands:
            return
        script = "__hut_bad=0\n" + "".join(
            f"{shlex.join(command)} 2>&1 || __hut_bad=1\n" for command in commands
        )
        result = await self.transport.run_script(script + 'exit "$__hut_bad"\n')
        lines = (result.stderr + "\n" + result.stdout).splitlines()
        errors = [
            line
            for line in lines
            if line.strip()
            and ("error" in line.lower() or "denied" in line.lower())
            and not any(text in line for text in _BENIGN_CANCEL)
        ]
        if not result.ok and errors:
            raise ScriptHutError(f"qdel failed: {gp.one_line(chr(10).join(errors))}")

    def info_script(self, user: str, marker: str) -> str:
        """Cluster queues (slots available/total), CPUs of the hosts, pending/running counts."""
        return scripts.info_script(user, marker)

    def read_info(self, sections: Sequence[Section]) -> BackendInfo:
        why = first_failure(sections)
        if why is not None:
            return self.unreachable(why)
        by_name = {s.name: s for s in sections}
        queues = gp.parse_queue_summary(by_name["queues"].body) if "queues" in by_name else []
        cpus = gp.parse_qhost_cpus(by_name["hosts"].body) if "hosts" in by_name else None
        counts = [
            [int(w) for w in by_name[k].body.split() if w.isdigit()] if k in by_name else []
            for k in ("all", "mine")
        ]
        message = None
        if all(len(c) == 2 for c in counts):
            message = (
                f"{counts[0][0]} pending, {counts[0][1]} running on the cluster "
                f"({counts[1][0]} pending, {counts[1][1]} running are yours)"
            )
        idle = sum(q.cpus_idle or 0 for q in queues) if queues else None
        return BackendInfo(
            name=self.name,
            kind=self.kind,
            reachable=True,
            message=message,
            cpus_idle=idle,
            cpus_total=cpus,
            queue_depth=counts[0][0] if len(counts[0]) == 2 else None,
            partitions=tuple(queues),
        )


def _pending_elements(
    jobs: Sequence[JobRef], rows: Mapping[str, gp.QueueRow]
) -> dict[str, gp.QueueRow]:
    """Tracked elements a pending array's row holds in its `<tasks>` range, as own rows."""
    ranges: dict[str, set[int]] = {}
    found: dict[str, gp.QueueRow] = {}
    for ref in jobs:
        number, task = ga.split_id(ref.job_id)
        row = rows.get(number)
        if task is None or ref.job_id in rows or row is None or not row.tasks:
            continue
        if number not in ranges:
            ranges[number] = ga.task_numbers(row.tasks)
        if task.isdigit() and int(task) in ranges[number]:
            found[ref.job_id] = replace(row, job_id=ref.job_id, tasks=task)
    return found


def _offset(sections: Sequence[Section]) -> timezone:
    section = next((s for s in sections if s.name == "tz"), None)
    return gp.utc_offset(section.words[1]) if section and len(section.words) > 1 else UTC


def _accounting(sections: Sequence[Section], tz: timezone) -> tuple[dict[str, gp.AcctJob], str]:
    section = next((s for s in sections if s.name == "qacct"), None)
    if section is None:
        return {}, "ok"
    state = gp.accounting_state(section.rc() or 0, section.body)
    return (gp.parse_qacct(section.body, tz) if state == "ok" else {}), state
