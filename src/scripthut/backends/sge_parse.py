"""Grid Engine's words, read and written: states, `qstat -xml`, `qacct`, `qhost -xml`, `#$` values.

Pure functions only (no I/O), so every edge case is testable from captured output. Son of
Grid Engine 8.1, Univa and Altair Grid Engine print the same XML elements; where they differ
(fractional seconds in times, sizes with or without a `B`, `qacct` times as `MM/DD/YYYY`) both
forms are read.

qstat's XML is parsed with the standard library (never split by columns). Times in `qstat -xml`
and `qacct` are the cluster's local time without a zone: the poll script reports the cluster's
UTC offset beside them, and every time is converted with it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone

from scripthut.backends.base import JobStatus, PartitionInfo
from scripthut.states import JobState

_ID = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_TERSE_ID = re.compile(r"([0-9]+)(?:\.[0-9]+-[0-9]+:[0-9]+)?")
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)B?", re.IGNORECASE)
_SIZE_MB = {"": 1 / (1 << 20), "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1 << 20, "P": 1 << 30}
_OFFSET = re.compile(r"([+-])([0-9]{2})([0-9]{2})")
# Job names: SGE refuses whitespace, `/:@\*?` and a leading digit; keep the rest readable.
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.+=-]")
# A word for `-q`, `-A`, `-pe`: queue names may name a host (`all.q@node1`) or a pattern.
_WORD = re.compile(r"[A-Za-z0-9_.@*+=-]+")
# qsub -o/-e paths: SGE expands `$VAR`, reads `host:path` and `a,b` lists; spaces end a #$ value.
_PATH_BAD = re.compile(r"[\s$:,\"'\\`]")
MAX_NAME = 200

# --- states ------------------------------------------------------------------------------------

HELD_REASON = "held: release it (qrls) or cancel it (qdel)"
ERROR_REASON = "in error state: see `qstat -j` for why; clear it with qmod -cj or cancel it"


def state_info(raw: str) -> tuple[JobState, str | None]:
    """What a qstat state (`qw`, `hqw`, `r`, `t`, `Eqw`, `s`, `dr`, `Rr`, `z`...) means.

    The letters combine: d (being deleted), E (error), h (hold), r (running), t (transferring),
    R (restarted), s/S/T (suspended by the user / by a subordinate queue / by a threshold),
    q and w (queued, waiting), z (zombie: ended). An unknown combination is UNKNOWN.
    """
    s = raw.strip()
    if not s:
        return JobState.UNKNOWN, "no state"
    if "z" in s:
        return JobState.COMPLETED, None  # ended: accounting or the exit file says how
    running = any(c in s for c in "rt")
    if "d" in s:
        return (JobState.RUNNING if running else JobState.PENDING), "being deleted"
    if "E" in s:
        return JobState.PENDING, ERROR_REASON
    if any(c in s for c in "sST") and running:
        return JobState.RUNNING, "suspended"
    if running:
        if "t" in s:
            return JobState.RUNNING, "being transferred to its node"
        return JobState.RUNNING, "restarted" if "R" in s else None
    if "h" in s:
        return JobState.PENDING, HELD_REASON
    if "w" in s or "q" in s:
        return JobState.PENDING, None
    if any(c in s for c in "sST"):
        return JobState.PENDING, "suspended"
    return JobState.UNKNOWN, f"unknown Grid Engine state {s!r}"


def is_ended(raw: str) -> bool:
    return "z" in raw


# --- small values ------------------------------------------------------------------------------


def utc_offset(text: str) -> timezone:
    """`+0100` (from `printf '%(%z)T'`) as a timezone; UTC when unreadable."""
    match = _OFFSET.fullmatch(text.strip())
    if match is None:
        return UTC
    sign = -1 if match.group(1) == "-" else 1
    minutes = int(match.group(2)) * 60 + int(match.group(3))
    return timezone(sign * timedelta(minutes=minutes))


_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%a %b %d %H:%M:%S %Y", "%m/%d/%Y %H:%M:%S")


def parse_time(text: str, tz: timezone) -> float | None:
    """Epoch seconds of a local time as qstat -xml or qacct prints it; None if unset."""
    text = " ".join(text.split())
    if not text or text in ("0", "-", "--") or text.startswith(("undefined", "-/-")):
        return None
    text = re.sub(r"\.[0-9]+$", "", text)  # Univa/Altair: fractional seconds
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=tz).timestamp()
        except ValueError:
            continue
    return None


def parse_size_mb(text: str) -> float | None:
    """MB in `4.602MB`, `32.506KB`, `4.602M`, `0.000B`, a bare number of bytes."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    return float(match.group(1)) * _SIZE_MB[match.group(2).upper()]


def parse_seconds(text: str) -> float | None:
    """`3s`, `0.008s`, `3`, `3.000`, or `HH:MM:SS` (some versions) as seconds."""
    text = text.strip().removesuffix("s")
    try:
        if ":" in text:
            seconds = 0.0
            for part in text.split(":"):
                seconds = seconds * 60 + float(part)
            return seconds
        return float(text)
    except ValueError:
        return None


def is_job_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None


def submitted_job_id(text: str) -> str | None:
    """The job number `qsub -terse` printed last (`123`, or `123.1-4:1` for an array)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    match = _TERSE_ID.fullmatch(lines[-1])
    return match.group(1) if match else None


def one_line(text: str, limit: int = 500) -> str:
    joined = " / ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return joined[:limit]


# --- qstat -xml --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One job (or one array task) as `qstat -xml` lists it."""

    job_id: str
    state: str
    name: str | None = None
    user: str | None = None
    queue: str | None = None
    node: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    slots: int | None = None
    tasks: str | None = None


def parse_xml(text: str) -> ET.Element:
    """The root of a command's XML. qstat and qhost never print a DTD: one is refused, so no
    entity can be declared and expanded (the stdlib parser needs no hardening beyond that).
    Raises ValueError when the text is not such XML."""
    text = text.strip()
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ValueError("the scheduler's XML holds a DTD, which qstat never prints")
    try:
        return ET.fromstring(text)  # noqa: S314 - DTDs refused above
    except ET.ParseError as exc:
        raise ValueError(f"not valid XML: {exc}") from None


def _child(element: ET.Element, tag: str) -> str:
    found = element.find(tag)
    return (found.text or "").strip() if found is not None else ""


def parse_qstat_xml(text: str, tz: timezone = UTC) -> list[QueueRow]:
    """Every `job_list` of `qstat -xml` (running ones under queue_info, the others under
    job_info). Raises ValueError when the text is not XML: the query then failed."""
    root = parse_xml(text)
    rows: list[QueueRow] = []
    for job in root.iter("job_list"):
        number = _child(job, "JB_job_number")
        if not number.isdigit():
            continue
        tasks = _child(job, "tasks") or None
        job_id = f"{number}.{tasks}" if tasks and tasks.isdigit() else number
        queue_name = _child(job, "queue_name")
        queue, _, node = queue_name.partition("@")
        rows.append(
            QueueRow(
                job_id=job_id,
                state=_child(job, "state"),
                name=_child(job, "JB_name") or None,
                user=_child(job, "JB_owner") or None,
                queue=queue or None,
                node=node or None,
                submitted_at=parse_time(_child(job, "JB_submission_time"), tz),
                started_at=parse_time(_child(job, "JAT_start_time"), tz),
                slots=int(_child(job, "slots")) if _child(job, "slots").isdigit() else None,
                tasks=tasks,
            )
        )
    return rows


def parse_contexts(text: str) -> dict[str, dict[str, str]]:
    """job number -> its context variables (`-ac`), from `qstat -xml -j <ids>`."""
    try:
        root = parse_xml(text)
    except ValueError:
        return {}
    found: dict[str, dict[str, str]] = {}
    for job in root.iter("element"):
        number = _child(job, "JB_job_number")
        context = job.find("JB_context")
        if not number.isdigit() or context is None:
            continue
        values = found.setdefault(number, {})
        for item in context:
            name = _child(item, "VA_variable")
            if name:
                values[name] = _child(item, "VA_value")
    return found


# --- qacct -------------------------------------------------------------------------------------


@dataclass(slots=True)
class AcctJob:
    """A finished job as `qacct -j` records it (the last record when there are several)."""

    job_id: str
    failed: int = 0
    failed_text: str = ""
    exit_status: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    wallclock_s: float | None = None
    cpu_s: float | None = None
    maxvmem_mb: float | None = None
    slots: int | None = None
    queue: str | None = None
    node: str | None = None
    name: str | None = None


def parse_qacct(text: str, tz: timezone = UTC) -> dict[str, AcctJob]:
    """Records of `qacct -j` (separated by `====` lines); array tasks as `<job>.<task>`."""
    jobs: dict[str, AcctJob] = {}
    for block in re.split(r"^=+\s*$", text, flags=re.MULTILINE):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                fields[key] = value.strip()
        job = _acct_job(fields, tz)
        if job is None:
            continue
        old = jobs.get(job.job_id)
        if old is None or (job.ended_at or 0) >= (old.ended_at or 0):
            jobs[job.job_id] = job
    return jobs


def _acct_job(fields: Mapping[str, str], tz: timezone) -> AcctJob | None:
    number = fields.get("jobnumber", "")
    if not number.isdigit():
        return None
    task = fields.get("taskid", "")
    job_id = f"{number}.{task}" if task.isdigit() else number
    failed_word, _, failed_text = fields.get("failed", "0").partition(":")
    exit_word = fields.get("exit_status", "").split(" ", 1)[0]
    slots = fields.get("slots", "")
    return AcctJob(
        job_id=job_id,
        failed=int(failed_word.strip()) if failed_word.strip().isdigit() else 0,
        failed_text=failed_text.strip(),
        exit_status=int(exit_word) if exit_word.isdigit() else None,
        started_at=parse_time(fields.get("start_time", ""), tz),
        ended_at=parse_time(fields.get("end_time", ""), tz),
        wallclock_s=parse_seconds(fields.get("ru_wallclock", "")),
        cpu_s=parse_seconds(fields.get("cpu", "")),
        maxvmem_mb=parse_size_mb(fields.get("maxvmem", "")),
        slots=int(slots) if slots.isdigit() else None,
        queue=fields.get("qname") or None,
        node=fields.get("hostname") or None,
        name=fields.get("jobname") or None,
    )


def accounting_state(rc: int, text: str) -> str:
    """ "ok", "disabled" (no accounting file: exit files decide) or "failed" (unknown now)."""
    if rc == 0 or "not found" in text:
        return "ok"
    lowered = text.lower()
    if "accounting file" in lowered or "no such file" in lowered:
        return "disabled"
    return "failed"


def efficiency(job: AcctJob) -> dict[str, float] | None:
    """cpu_efficiency = cpu / (ru_wallclock * slots), max_vmem_mb, elapsed_s, ..."""
    out: dict[str, float] = {}
    if job.wallclock_s is not None:
        out["elapsed_s"] = job.wallclock_s
    if job.cpu_s is not None:
        out["total_cpu_s"] = job.cpu_s
    if job.slots:
        out["alloc_cpus"] = float(job.slots)
    if job.maxvmem_mb is not None:
        out["max_vmem_mb"] = round(job.maxvmem_mb, 3)
    if job.cpu_s is not None and job.wallclock_s and job.slots:
        out["cpu_efficiency"] = round(job.cpu_s / (job.wallclock_s * job.slots), 4)
    return out or None


# --- one job's status from everything known ------------------------------------------------------


def describe_exit(code: int) -> str:
    if 128 < code <= 192:
        import signal

        try:
            return f"exit code {code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit code {code}"


def live_status(row: QueueRow) -> JobStatus:
    """A job qstat lists in a state that is not final."""
    state, reason = state_info(row.state)
    running = state is JobState.RUNNING
    return JobStatus(
        job_id=row.job_id,
        state=state,
        raw_state=row.state,
        reason=reason,
        name=row.name,
        user=row.user,
        partition=row.queue,
        node=row.node if running else None,
        submitted_at=row.submitted_at,
        started_at=row.started_at if running else None,
        cpus=row.slots,
    )


def final_status(
    job_id: str, row: QueueRow | None, acct: AcctJob | None, exit_file: int | None
) -> JobStatus | None:
    """A job that left the queue (or is a zombie); None when nothing says how it ended.

    The exit-code file (the command's own code) decides when it exists. Otherwise `qacct`:
    `failed` != 0 means Grid Engine ended it (time or memory limit, qdel, a node fault),
    else `exit_status` is the script's code.
    """
    if exit_file is not None:
        state, reason = (JobState.COMPLETED, None) if exit_file == 0 else _failed(exit_file)
        return _ended(job_id, state, "EXIT_FILE", exit_file, reason, row, acct)
    if acct is None:
        return None
    code = acct.exit_status
    if acct.failed:
        why = f"Grid Engine: failed {acct.failed}"
        why += f" ({acct.failed_text})" if acct.failed_text else ""
        if code:
            why += f", {describe_exit(code)}"
        return _ended(job_id, JobState.FAILED, f"failed {acct.failed}", code, why, row, acct)
    if code:
        return _ended(job_id, JobState.FAILED, "exit", code, describe_exit(code), row, acct)
    return _ended(job_id, JobState.COMPLETED, "exit", code, None, row, acct)


def _failed(code: int) -> tuple[JobState, str]:
    return JobState.FAILED, describe_exit(code)


def _ended(
    job_id: str,
    state: JobState,
    raw: str,
    code: int | None,
    reason: str | None,
    row: QueueRow | None,
    acct: AcctJob | None,
) -> JobStatus:
    return JobStatus(
        job_id=job_id,
        state=state,
        raw_state=raw,
        exit_code=code,
        reason=reason,
        name=(row.name if row else None) or (acct.name if acct else None),
        user=row.user if row else None,
        partition=(acct.queue if acct else None) or (row.queue if row else None),
        node=(acct.node if acct else None) or (row.node if row else None),
        submitted_at=row.submitted_at if row else None,
        started_at=acct.started_at if acct else None,
        ended_at=acct.ended_at if acct else None,
        cpus=(acct.slots if acct else None) or (row.slots if row else None),
        efficiency=efficiency(acct) if acct is not None else None,
    )


def external_status(row: QueueRow) -> JobStatus:
    """A job of the user's that ScriptHut did not start (zombies show as ended)."""
    if is_ended(row.state):
        status = JobStatus(row.job_id, JobState.COMPLETED, row.state, reason="ended")
    else:
        status = live_status(row)
    return replace(
        status,
        name=row.name,
        user=row.user,
        partition=row.queue,
        node=row.node,
        submitted_at=row.submitted_at,
        cpus=row.slots,
        external=True,
    )


# --- qhost -xml and qstat -g c -xml ---------------------------------------------------------------


def parse_queue_summary(text: str) -> list[PartitionInfo]:
    """Cluster queues of `qstat -g c -xml`: available and total slots."""
    try:
        root = parse_xml(text)
    except ValueError:
        return []
    out: list[PartitionInfo] = []
    for queue in root.iter("cluster_queue_summary"):
        name = _child(queue, "name")
        avail, total = _child(queue, "available"), _child(queue, "total")
        if not name:
            continue
        disabled = _child(queue, "manual_intervention") not in ("", "0")
        out.append(
            PartitionInfo(
                name,
                int(avail) if avail.isdigit() else None,
                int(total) if total.isdigit() else None,
                "partly disabled" if disabled else "up",
            )
        )
    return out


def parse_qhost_cpus(text: str) -> int | None:
    """The sum of `num_proc` over the hosts of `qhost -xml` (the `global` pseudo-host has `-`)."""
    try:
        root = parse_xml(text)
    except ValueError:
        return None
    total = 0
    for host in root.iter("host"):
        for value in host.iter("hostvalue"):
            if value.get("name") == "num_proc" and (value.text or "").strip().isdigit():
                total += int((value.text or "").strip())
    return total


# --- #$ values ---------------------------------------------------------------------------------


def job_name(name: str) -> str:
    """A name qsub accepts: unsafe characters as `_`, starting with a letter or `_`, bounded."""
    clean = _NAME_BAD.sub("_", name)[:MAX_NAME] or "job"
    # a leading digit is refused, a leading `-` would read as an option
    return clean if clean[0].isalpha() or clean[0] == "_" else f"j{clean}"


def word(kind: str, value: str) -> str:
    """A queue, account or parallel environment name: refused unless plainly safe."""
    if not _WORD.fullmatch(value):
        raise ValueError(f"{kind} {value!r} must use only letters, digits and _ . @ * + = -")
    return value


def path(value: str) -> str:
    """An -o/-e path: refused when Grid Engine would expand or split it."""
    if _PATH_BAD.search(value):
        raise ValueError(
            f"Grid Engine cannot write to {value!r}: a log path may not hold spaces, "
            "quotes, backslashes, `$`, `:` or `,`"
        )
    return value


def h_rt(seconds: int) -> str:
    seconds = max(1, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def directives(options: Iterable[tuple[str, str | None]]) -> list[str]:
    """`#$ -opt value` lines for the options that have a value."""
    return [f"#$ -{name} {value}" for name, value in options if value is not None]
