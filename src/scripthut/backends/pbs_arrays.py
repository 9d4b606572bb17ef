"""PBS job arrays (Torque `-t`, PBS Pro / OpenPBS `-J`): site limits, the array job's script,
element ids, the array's record standing for its elements, and submitting.

- `limits_script` / `read_limits`: PBS Pro's `max_array_size` (`qmgr -c 'list server'`) or
  Torque's `max_job_array_size` (`qmgr -c 'p s'`); absent, no limit.
- `array_line`: `#PBS -t 0-<n-1>%<throttle>` (Torque) or `#PBS -J 0-<n-1>` (PBS Pro, which
  takes at least two elements and no throttle: a PBS Pro array is chunked by its throttle).
- `wrapper_script`: the shared `#PBS` header, the array line, the wrapper's own output sent
  to its log beside it, then `arrays.wrapper_body` indexed by `$PBS_ARRAYID` (Torque),
  `$PBS_ARRAY_INDEX` (PBS Pro) or, on Slurm's Torque compatibility commands, which set only
  Slurm's variables, `$SLURM_ARRAY_TASK_ID`. With none of them the element fails (exit 2,
  the message in the wrapper's log): it never runs element 0 by mistake. Each element's
  script is copied from the array's bundle when it starts.
- `element_id` / `split_id`: element `i` of the array qsub called `123[]` (`123[].server`, or
  a bare `123` on the wrappers) is `123[i]` (`123[i].server`).
- `expanded_listing`: `qstat -t` (elements one record each), learning once that a server
  does not know `-t` (the wrappers); `array_records` / `element_status`: where the server
  shows one record for a whole array, its elements take its state unless their exit-code
  files say they finished.
- `PBSArrays`: the backend's `site_limits`, `submit_arrays` and element ids.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from scripthut.backends import pbs_parse as pp
from scripthut.backends import pbs_script as ps
from scripthut.backends.arrays import ArrayFiles, members_script, split_group, wrapper_body
from scripthut.backends.base import (
    ArrayGroup,
    JobSpec,
    JobStatus,
    SubmitOutcome,
)
from scripthut.backends.remote import (
    Section,
    Submission,
    capture,
    new_marker,
    script_end,
    script_start,
)
from scripthut.backends.scheduler import SchedulerBackend
from scripthut.states import JobState
from scripthut.workflow.script import SHEBANG

INDEX_EXPR = "${PBS_ARRAYID:-${PBS_ARRAY_INDEX:-${SLURM_ARRAY_TASK_ID:-}}}"
NO_T_MARK = "scripthut: this qstat has no -t"
_LIMIT = {
    "torque": re.compile(r"\bmax_job_array_size\s*=\s*([0-9]+)"),
    "pbspro": re.compile(r"\bmax_array_size\s*=\s*([0-9]+)"),
}
_QMGR = {"torque": "p s", "pbspro": "list server"}
_ELEMENT = re.compile(r"([0-9]+)\[([0-9]+)\]")
_NOT_FOUND_RC = 127


# --- limits ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteLimits:
    """The server's largest array (None: no limit)."""

    max_array_size: int | None = None

    def largest_array(self, configured: int | None) -> int:
        sizes = [size for size in (self.max_array_size, configured) if size is not None]
        return max(1, min(sizes, default=1 << 30))


def limits_script(qmgr: str, flavor: str) -> str:
    """`qmgr` listing the server's attributes (section `qmgr`)."""
    return capture("qmgr", f"{qmgr} -c {shlex.quote(_QMGR[flavor])}")


def read_limits(sections: Sequence[Section], flavor: str) -> SiteLimits | None:
    """The limit; no limit when the server sets none or has no qmgr (the wrappers); None
    when qmgr failed otherwise (ask again later)."""
    section = next((s for s in sections if s.name == "qmgr"), None)
    if section is None:
        return None
    if section.rc() == _NOT_FOUND_RC:
        return SiteLimits()
    if section.rc() != 0:
        return None
    match = _LIMIT[flavor].search(section.body)
    return SiteLimits(int(match[1]) if match and int(match[1]) > 0 else None)


# --- the array job ---------------------------------------------------------------------------


def array_line(flavor: str, size: int, throttle: int | None) -> str:
    """Torque `#PBS -t 0-<n-1>[%throttle]`; PBS Pro `#PBS -J 0-<n-1>` (n >= 2)."""
    if flavor == "pbspro":
        if size < 2:
            raise ValueError("a PBS Pro array has at least two elements")
        return f"#PBS -J 0-{size - 1}"
    line = f"#PBS -t 0-{size - 1}"
    if throttle is not None and 0 < throttle < size:
        line += f"%{throttle}"
    return line


def wrapper_script(
    header: Sequence[str], line: str, log: str, jobs: Sequence[JobSpec], bundle: str
) -> str:
    """The array job: the shared header, the array line, its own log, the body (its
    elements' scripts in the file `bundle`)."""
    redirect = ps.log_redirect(log, log)
    body = wrapper_body(jobs, index_expr=INDEX_EXPR, bundle=bundle)
    return "\n".join([SHEBANG, *header, line, redirect]) + "\n" + body


def chunks_for(flavor: str, group: ArrayGroup, largest: int) -> list[ArrayGroup]:
    """`group` as arrays the server takes: at most `largest` elements; on PBS Pro (no
    throttle) at most `throttle`."""
    if flavor == "pbspro" and group.throttle is not None:
        largest = min(largest, max(1, group.throttle))
    return split_group(group, largest)


# --- ids -------------------------------------------------------------------------------------


def element_id(array_id: str, index: int) -> str:
    """`123[]` -> `123[4]`, `123[].server` -> `123[4].server`, `123` (wrappers) -> `123[4]`."""
    text = array_id.strip()
    if "[]" in text:
        return text.replace("[]", f"[{index}]", 1)
    number, dot, server = text.partition(".")
    return f"{number}[{index}]{dot}{server}"


def split_id(job_id: str) -> tuple[str, int | None]:
    """(`123`, 4) for `123[4].server`; (key, None) for a job that is no element."""
    key = pp.job_key(job_id)
    match = _ELEMENT.fullmatch(key)
    return (match[1], int(match[2])) if match else (key, None)


def array_id_of(records: Sequence[pp.PBSJob]) -> str | None:
    """The array's id among the records named with its tag: its `123[]` record; else
    from an element's (`123[4].server` -> `123[].server`; Torque names elements
    `<name>-<index>`); else (the wrappers list every element as a job of its own) the lowest
    id, the array's."""
    ids = [job.job_id for job in records if pp.is_job_id(job.job_id)]
    for job_id in ids:
        if "[]" in job_id:
            return job_id
    for job_id in ids:
        if split_id(job_id)[1] is not None:
            return re.sub(r"\[[0-9]+\]", "[]", job_id, count=1)
    plain = [job_id for job_id in ids if pp.job_key(job_id).isdigit()]
    return min(plain, key=lambda job_id: int(pp.job_key(job_id))) if plain else None


def named(job: pp.PBSJob, tag: str) -> bool:
    """Whether `job` carries `tag` as its name (Torque's elements: `<tag>-<index>`)."""
    name = job.name or ""
    return name == tag or (name.startswith(f"{tag}-") and name[len(tag) + 1 :].isdigit())


def find_members(tags: Sequence[str], log_dir: str) -> list[str]:
    """Bash for `find`: which arrays' wrappers list these tags, and those arrays' index
    entries (`index <array tag> <id>` sections)."""
    return [
        members_script(tags, log_dir),
        'for __hut_t in $__hut_arrays; do if [ -s "$__hut_idx/$__hut_t" ]; then\n',
        '    __hut_j=; read -r __hut_j < "$__hut_idx/$__hut_t"\n',
        '    printf \'%s index %s %s\\n\' "$__hut_m" "$__hut_t" "$__hut_j"\n',
        "fi; done\n",
    ]


def arrays_by_name(records: Sequence[pp.PBSJob], arrays: Iterable[str]) -> dict[str, str]:
    """Array tag -> the array's id, from the records named with it (see `array_id_of`)."""
    found: dict[str, str] = {}
    for tag in arrays:
        array_id = array_id_of([job for job in records if named(job, tag)])
        if array_id is not None:
            found[tag] = array_id
    return found


def with_elements(
    tags: Sequence[str], members: Mapping[str, list[tuple[str, int]]], ids: Mapping[str, str]
) -> dict[str, str]:
    """tag -> job id: plain jobs by their own tag, elements through their array's id."""
    found = {tag: ids[tag] for tag in tags if tag in ids}
    for tag in tags:
        for array, index in members.get(tag, []):
            if tag not in found and array in ids and pp.is_job_id(ids[array]):
                found[tag] = element_id(ids[array], index)
    return found


# --- polling ---------------------------------------------------------------------------------


def expanded_listing(qstat: str, flags: str) -> str:
    """Bash: `qstat -t <flags>`; where qstat knows no `-t`, a line saying so (a paragraph of
    its own) and `qstat <flags>`. Its exit status is qstat's."""
    mark = shlex.quote(NO_T_MARK)
    return (
        f"__hut_q=$({qstat} -t {flags} 2>&1); __hut_qr=$?; "
        'if [ "$__hut_qr" -eq 2 ] && grep -qi option <<< "$__hut_q"; then '
        f"printf '%s\\n\\n' {mark}; __hut_q=$({qstat} {flags} 2>&1); __hut_qr=$?; fi; "
        'printf \'%s\\n\' "$__hut_q"; (exit "$__hut_qr")'
    )


def array_records(records: Mapping[str, pp.PBSJob], job_ids: Iterable[str]) -> dict[str, pp.PBSJob]:
    """For elements the server lists no record of, the record each takes its state from:
    its array's (`123[]` or `123`). When that one has finished but another record carries
    the array's name and is live (the wrappers list elements as jobs of their own), that
    one: the array is live while any element is. Each array is looked at once."""
    by_base: dict[str, pp.PBSJob | None] = {}
    out: dict[str, pp.PBSJob] = {}
    for job_id in job_ids:
        base, index = split_id(job_id)
        if index is None or pp.job_key(job_id) in records:
            continue
        if base not in by_base:
            by_base[base] = _array_record(records, base)
        record = by_base[base]
        if record is not None:
            out[job_id] = record
    return out


def _array_record(records: Mapping[str, pp.PBSJob], base: str) -> pp.PBSJob | None:
    parent = records.get(f"{base}[]") or records.get(base)
    if parent is None or not pp.is_final(parent.state) or not pp.is_hut_tag(parent.name):
        return parent
    live = [
        job
        for job in records.values()
        if job.name == parent.name and job.owner == parent.owner and not pp.is_final(job.state)
    ]
    running = [job for job in live if pp.state_info(job.state).state is JobState.RUNNING]
    return (running or live or [parent])[0]


def element_status(
    job_id: str,
    array: pp.PBSJob,
    exit_file: int | None,
    *,
    deleted: bool,
    sibling_deleted: str | None,
) -> JobStatus | None:
    """An element with no record of its own: its exit-code file decides, else its array's
    state. `sibling_deleted`: an element of the same array given to qdel on a server that
    deletes whole arrays; then this one, killed or never started, was cancelled with it.
    None: the array finished and nothing says how this element did (the caller waits)."""
    whole = (
        f"cancelled: its whole array was deleted with element {sibling_deleted} "
        "(this PBS server deletes an array for qdel of one element)"
    )
    if exit_file is not None:
        if exit_file > 128 and (deleted or sibling_deleted is not None):  # killed by qdel
            why = "cancelled (qdel)" if deleted else whole
            return JobStatus(job_id, JobState.CANCELLED, "C", exit_code=exit_file, reason=why)
        status = pp.final_status(job_id, None, exit_file)
        ended = status is not None and pp.is_final(array.state)
        return replace(status, raw_state=array.state) if status and ended else status
    if not pp.is_final(array.state):
        return pp.live_status(array, job_id)
    if deleted:
        reason = "cancelled (qdel) before its script could record an exit code"
        return JobStatus(job_id, JobState.CANCELLED, array.state, reason=reason)
    if sibling_deleted is not None:
        return JobStatus(job_id, JobState.CANCELLED, array.state, reason=whole)
    return None


# --- submitting ------------------------------------------------------------------------------


class PBSArrays(SchedulerBackend):
    """Job arrays for `PBSBackend` (which provides the rest of these names)."""

    flavor: str
    limits: SiteLimits | None

    @property
    def dialect(self) -> str:
        raise NotImplementedError

    def command(self, name: str) -> str:
        raise NotImplementedError

    def job_header(self, spec: JobSpec) -> list[str]:
        raise NotImplementedError

    async def detect(self) -> None:
        raise NotImplementedError

    async def site_limits(self) -> SiteLimits:
        """The server's largest array: asked once, then kept (no limit, asked again
        later, when qmgr does not answer)."""
        if self.limits is None:
            await self.host.identify()
            await self.detect()
            marker = new_marker()
            text = script_start(marker) + limits_script(self.command("qmgr"), self.dialect)
            limits = read_limits(await self.host.script(text + script_end(), marker), self.dialect)
            if limits is None:
                return SiteLimits()
            self.limits = limits
        return self.limits

    async def submit_arrays(self, groups: Sequence[ArrayGroup]) -> list[list[SubmitOutcome]]:
        """Each group as arrays of at most the site's (and the config's) largest size, about
        `submit_chunk` * 5 elements per round trip; a chunk of one goes as a plain job."""
        limits = await self.site_limits()
        largest = limits.largest_array(self.max_array_size)
        chunks = [chunk for group in groups for chunk in chunks_for(self.dialect, group, largest)]
        return await self.submit_array_chunks(chunks, groups)

    def element_ids(self, job_id: str, size: int) -> list[str]:
        """A chunk of one went as a plain job: its id is the job's own."""
        return [job_id] if size == 1 else super().element_ids(job_id, size)

    def element_id(self, job_id: str, index: int) -> str:
        return element_id(job_id, index)

    def array_submission(self, group: ArrayGroup) -> Submission:
        """A group of one, a plain job; else the array job (`SchedulerBackend`)."""
        if len(group.jobs) == 1:
            return self.submission(group.jobs[0])
        return super().array_submission(group)

    def array_wrapper(self, group: ArrayGroup, files: ArrayFiles) -> str:
        header = self.job_header(files.head(group.jobs))
        line = array_line(self.dialect, len(group.jobs), group.throttle)
        return wrapper_script(header, line, files.log, group.jobs, files.bundle)
