"""Slurm's words, read and written: state mapping, squeue/sacct/sinfo parsing, #SBATCH values.

Pure functions only (no I/O), so every edge case is testable from captured output.

squeue is read with `--Format` fields each followed by the unit separator (0x1F) and the
last one by the record separator (0x1E), so job names and comments holding spaces, `|` or
commas cannot shift a field. sacct is read with `--parsable2 --delimiter=<0x1F>`. Times
come as epoch seconds (`SLURM_TIME_FORMAT=%s`), so the cluster's time zone never matters.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from scripthut.backends.base import JobStatus, PartitionInfo
from scripthut.states import JobState

FIELD_SEP = "\x1f"
RECORD_SEP = "\x1e"

# Name and Comment last: free text, where a stray separator could only hurt the tail.
_HEAD = ("JobArrayID", "State", "Reason", "Partition", "SubmitTime", "StartTime", "EndTime")
SQUEUE_FIELDS: tuple[str, ...] = (*_HEAD, "NodeList", "NumCPUs", "exit_code", "UserName")
SQUEUE_FIELDS += ("Comment", "Name")
SACCT_FIELDS: tuple[str, ...] = ("JobID", "State", "ExitCode", "Start", "End", "ElapsedRaw")
SACCT_FIELDS += ("TotalCPU", "AllocCPUS", "MaxRSS", "Comment")
ACCOUNTING_DISABLED = "accounting storage is disabled"

_ID = re.compile(r"[0-9]+(?:_[0-9]+)?")
_TAG = re.compile(r"hut\.[A-Za-z0-9._-]+")
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([KMGTP]?)", re.IGNORECASE)
_SIZE_MB = {"": 1 / (1 << 20), "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1 << 20, "P": 1 << 30}


# --- states ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateInfo:
    """What a Slurm state means to ScriptHut, and the reason shown when it says more."""

    state: JobState
    reason: str | None = None


_PENDING_HELD = "held: release it (scontrol release) or cancel it"
STATES: Mapping[str, StateInfo] = {
    "PENDING": StateInfo(JobState.PENDING),
    "CONFIGURING": StateInfo(JobState.PENDING, "configuring: its nodes are being prepared"),
    "POWER_UP_NODE": StateInfo(JobState.PENDING, "waiting for its nodes to power up"),
    "REQUEUED": StateInfo(JobState.PENDING, "requeued"),
    "REQUEUE_FED": StateInfo(JobState.PENDING, "requeued by the federation"),
    "REQUEUE_HOLD": StateInfo(JobState.PENDING, f"requeued and {_PENDING_HELD}"),
    "SPECIAL_EXIT": StateInfo(JobState.PENDING, f"special exit, requeued and {_PENDING_HELD}"),
    "RESV_DEL_HOLD": StateInfo(JobState.PENDING, f"its reservation was deleted; {_PENDING_HELD}"),
    "RUNNING": StateInfo(JobState.RUNNING),
    "COMPLETING": StateInfo(JobState.RUNNING, "completing"),
    "RESIZING": StateInfo(JobState.RUNNING, "resizing"),
    "SIGNALING": StateInfo(JobState.RUNNING, "being signalled"),
    "STAGE_OUT": StateInfo(JobState.RUNNING, "staging out its files"),
    "STOPPED": StateInfo(JobState.RUNNING, "stopped (SIGSTOP); it keeps its resources"),
    "SUSPENDED": StateInfo(JobState.RUNNING, "suspended"),
    "UPDATE_DB": StateInfo(JobState.RUNNING, "being updated in the accounting database"),
    "COMPLETED": StateInfo(JobState.COMPLETED),
    "FAILED": StateInfo(JobState.FAILED),
    "CANCELLED": StateInfo(JobState.CANCELLED, "cancelled"),
    "TIMEOUT": StateInfo(JobState.FAILED, "time limit exceeded"),
    "OUT_OF_MEMORY": StateInfo(JobState.FAILED, "out of memory (more than its --mem)"),
    "NODE_FAIL": StateInfo(JobState.FAILED, "its node failed"),
    "PREEMPTED": StateInfo(JobState.FAILED, "preempted by a higher-priority job"),
    "BOOT_FAIL": StateInfo(JobState.FAILED, "its node failed to boot"),
    "DEADLINE": StateInfo(JobState.FAILED, "its deadline passed"),
    "LAUNCH_FAILED": StateInfo(JobState.FAILED, "Slurm could not launch it"),
    "RECONFIG_FAIL": StateInfo(JobState.FAILED, "node reconfiguration failed"),
    "REVOKED": StateInfo(
        JobState.FAILED, "revoked: it runs on another cluster of the federation instead"
    ),
}
# squeue's short codes (%t), in case a site's wrapper prints them.
SHORT_STATES: Mapping[str, str] = dict(
    re.findall(
        r"(\w+)=(\w+)",
        "PD=PENDING CF=CONFIGURING PO=POWER_UP_NODE RQ=REQUEUED RF=REQUEUE_FED RH=REQUEUE_HOLD "
        "SE=SPECIAL_EXIT RD=RESV_DEL_HOLD R=RUNNING CG=COMPLETING RS=RESIZING SI=SIGNALING "
        "SO=STAGE_OUT ST=STOPPED S=SUSPENDED CD=COMPLETED F=FAILED CA=CANCELLED TO=TIMEOUT "
        "OOM=OUT_OF_MEMORY NF=NODE_FAIL PR=PREEMPTED BF=BOOT_FAIL DL=DEADLINE RV=REVOKED",
    )
)
FINAL_STATES = tuple(sorted(name for name, info in STATES.items() if info.state.is_final))


def base_state(raw: str) -> str:
    """The state word alone: "CANCELLED by 1001" -> CANCELLED, "CANCELLED+" -> CANCELLED."""
    word = raw.strip().split(" ", 1)[0].rstrip("+").upper()
    return SHORT_STATES.get(word, word)


def state_info(raw: str) -> StateInfo:
    """The meaning of any state Slurm prints; an unknown word is UNKNOWN, never a guess."""
    info = STATES.get(base_state(raw))
    if info is None:
        return StateInfo(JobState.UNKNOWN, f"unknown Slurm state {raw.strip()!r}")
    if info.state is JobState.CANCELLED:
        by = raw.strip().split(" by ", 1)
        if len(by) == 2 and by[1].strip():
            return StateInfo(JobState.CANCELLED, f"cancelled by uid {by[1].strip()}")
    return info


def is_final(raw: str) -> bool:
    return state_info(raw).state.is_final


# --- small values ------------------------------------------------------------------------------


def _epoch(text: str) -> float | None:
    text = text.strip()
    return float(text) if text.isdigit() and int(text) > 0 else None


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _text(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "(null)", "None", "N/A", "n/a") else value


def parse_duration(text: str) -> float | None:
    """Seconds in a Slurm duration: `MM:SS.mmm`, `HH:MM:SS`, `D-HH:MM:SS`, `INVALID` -> None."""
    text = text.strip()
    days = 0
    if "-" in text:
        head, _, text = text.partition("-")
        if not head.isdigit():
            return None
        days = int(head)
    parts = text.split(":")
    if not 1 <= len(parts) <= 3:
        return None
    try:
        values = [float(part) for part in parts]
    except ValueError:
        return None
    seconds = 0.0
    for value in values:
        seconds = seconds * 60 + value
    return days * 86400 + seconds


def parse_size_mb(text: str) -> float | None:
    """MB in a Slurm size such as `1234K`, `1.5G`, `0` (a bare number is bytes)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    return float(match.group(1)) * _SIZE_MB[match.group(2).upper()]


def wait_status_exit(status: int | None) -> int | None:
    """A shell-style exit code from squeue's `exit_code` (a raw wait status)."""
    if status is None:
        return None
    sig = status & 0x7F
    return 128 + sig if sig else (status >> 8) & 0xFF


def sacct_exit(text: str) -> int | None:
    """A shell-style exit code from sacct's `code:signal`."""
    code, _, sig = text.strip().partition(":")
    if not code.isdigit():
        return None
    return 128 + int(sig) if sig.isdigit() and int(sig) else int(code)


def describe_exit(code: int) -> str:
    if 128 < code <= 192:
        try:
            return f"exit code {code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit code {code}"


def is_job_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None


def is_hut_tag(comment: str | None) -> bool:
    return comment is not None and _TAG.fullmatch(comment.strip()) is not None


def submitted_job_id(text: str) -> str | None:
    """The id `sbatch --parsable` printed last (`123` or `123;cluster`), else None."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    job_id = lines[-1].split(";", 1)[0]
    return job_id if is_job_id(job_id) else None


def one_line(text: str, limit: int = 500) -> str:
    """Command output as one line for a message."""
    joined = " / ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return joined[:limit]


# --- squeue ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One job as squeue lists it."""

    job_id: str
    state: str
    reason: str | None = None
    partition: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    node: str | None = None
    cpus: int | None = None
    exit_status: int | None = None
    user: str | None = None
    comment: str | None = None
    name: str | None = None


def squeue_format() -> str:
    """The `--Format` argument: every field unpadded, separated so that nothing can shift."""
    fields = [f"{name}:{FIELD_SEP}" for name in SQUEUE_FIELDS[:-1]]
    return ",".join([*fields, f"{SQUEUE_FIELDS[-1]}:{RECORD_SEP}"])


def parse_squeue(text: str) -> list[QueueRow]:
    """Rows of `squeue --noheader --Format=squeue_format()`; malformed records are skipped."""
    rows: list[QueueRow] = []
    for record in text.split(RECORD_SEP):
        values = record.lstrip("\r\n").split(FIELD_SEP)
        if len(values) != len(SQUEUE_FIELDS) or not values[0].strip():
            continue
        rows.append(_queue_row(values))
    return rows


def _queue_row(values: list[str]) -> QueueRow:
    job_id, state, reason, partition, submit, start, end, node, cpus, code, user = values[:11]
    return QueueRow(
        job_id=job_id.strip(),
        state=state.strip(),
        reason=_text(reason),
        partition=_text(partition),
        submitted_at=_epoch(submit),
        started_at=_epoch(start),
        ended_at=_epoch(end),
        node=_text(node),
        cpus=_int(cpus),
        exit_status=_int(code),
        user=_text(user),
        comment=_text(values[11]),
        name=values[12],
    )


# --- sacct -------------------------------------------------------------------------------------


@dataclass(slots=True)
class AcctJob:
    """A job as sacct records it: its allocation row, and the largest MaxRSS of its steps."""

    job_id: str
    state: str = ""
    exit_code: int | None = None
    exit_text: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    elapsed_s: float | None = None
    total_cpu_s: float | None = None
    alloc_cpus: int | None = None
    max_rss_mb: float | None = None
    comment: str | None = None
    steps: list[str] = field(default_factory=list)


def sacct_format() -> str:
    return ",".join(SACCT_FIELDS)


def parse_sacct(text: str) -> dict[str, AcctJob]:
    """Jobs of `sacct --noheader --parsable2 --delimiter=<0x1F> --format=sacct_format()`.

    The allocation row (`123`) gives state, exit code, times and CPU use; step rows
    (`123.batch`, `123.extern`, `123.0`) only contribute their MaxRSS.
    """
    jobs: dict[str, AcctJob] = {}
    for line in text.splitlines():
        values = line.split(FIELD_SEP)
        if len(values) != len(SACCT_FIELDS):
            continue
        job_id, _, step = values[0].strip().partition(".")
        if not is_job_id(job_id):
            continue
        job = jobs.setdefault(job_id, AcctJob(job_id))
        rss = parse_size_mb(values[8])
        if rss is not None:
            job.max_rss_mb = max(rss, job.max_rss_mb or 0.0)
        if step:
            job.steps.append(step)
        else:
            _fill_allocation(job, values)
    return jobs


def _fill_allocation(job: AcctJob, values: list[str]) -> None:
    job.state = values[1].strip()
    job.exit_text = values[2].strip()
    job.exit_code = sacct_exit(values[2])
    job.started_at = _epoch(values[3])
    job.ended_at = _epoch(values[4])
    elapsed = _int(values[5])
    job.elapsed_s = float(elapsed) if elapsed is not None else None
    job.total_cpu_s = parse_duration(values[6])
    job.alloc_cpus = _int(values[7])
    job.comment = _text(values[9])


def efficiency(job: AcctJob) -> dict[str, float] | None:
    """cpu_efficiency = TotalCPU / (Elapsed * AllocCPUS), max_rss_mb, elapsed_s, ..."""
    out: dict[str, float] = {}
    if job.elapsed_s is not None:
        out["elapsed_s"] = job.elapsed_s
    if job.total_cpu_s is not None:
        out["total_cpu_s"] = job.total_cpu_s
    if job.alloc_cpus:
        out["alloc_cpus"] = float(job.alloc_cpus)
    if job.max_rss_mb is not None:
        out["max_rss_mb"] = round(job.max_rss_mb, 3)
    if job.total_cpu_s is not None and job.elapsed_s and job.alloc_cpus:
        out["cpu_efficiency"] = round(job.total_cpu_s / (job.elapsed_s * job.alloc_cpus), 4)
    return out or None


def accounting_state(rc: int, text: str) -> str:
    """ "ok", "disabled" (no slurmdbd: exit files decide) or "failed" (unknown this cycle)."""
    if rc == 0:
        return "ok"
    return "disabled" if ACCOUNTING_DISABLED in text.lower() else "failed"


# --- one job's status from everything known ------------------------------------------------------


def live_status(row: QueueRow) -> JobStatus:
    """A job squeue lists in a non-final state."""
    info = state_info(row.state)
    reason = info.reason
    if info.state is JobState.PENDING and row.reason is not None:
        reason = row.reason if reason is None else f"{reason} ({row.reason})"
    running = info.state is JobState.RUNNING
    return JobStatus(
        job_id=row.job_id,
        state=info.state,
        raw_state=row.state,
        reason=reason,
        name=row.name,
        user=row.user,
        partition=row.partition,
        node=row.node if running else None,
        submitted_at=row.submitted_at,
        started_at=row.started_at if running else None,
        cpus=row.cpus,
    )


def final_status(
    job_id: str, row: QueueRow | None, acct: AcctJob | None, exit_file: int | None
) -> JobStatus | None:
    """The status of a job that left the queue (or is listed as ended); None if nothing says.

    A final state from sacct wins over squeue's. For COMPLETED/FAILED the exit-code file the
    task script wrote decides (it is the command's own code); other final states (TIMEOUT,
    CANCELLED, OUT_OF_MEMORY...) keep their meaning. With no final state anywhere, the exit
    file alone decides: accounting may be absent or lagging.
    """
    candidates = (acct.state if acct else None, row.state if row else None)
    raw = next((r for r in candidates if r and is_final(r)), None)
    if raw is None:
        return None if exit_file is None else _from_exit_file(job_id, row, acct, exit_file)
    info = state_info(raw)
    code = exit_file
    if code is None:
        code = acct.exit_code if acct is not None and acct.exit_text else None
    if code is None and row is not None:
        code = wait_status_exit(row.exit_status)
    state, reason = info.state, info.reason
    if base_state(raw) in ("COMPLETED", "FAILED"):
        state, reason = _by_exit(raw, exit_file, code, acct)
    return _ended(job_id, state, raw, code, reason, row, acct)


def _by_exit(
    raw: str, exit_file: int | None, code: int | None, acct: AcctJob | None
) -> tuple[JobState, str | None]:
    if exit_file is not None:
        return (JobState.COMPLETED, None) if exit_file == 0 else _failed(exit_file)
    if base_state(raw) == "COMPLETED":
        return JobState.COMPLETED, None
    if code:
        return _failed(code)
    detail = f" (Slurm exit code {acct.exit_text})" if acct is not None and acct.exit_text else ""
    return JobState.FAILED, f"Slurm reports FAILED{detail}"


def _failed(code: int) -> tuple[JobState, str]:
    return JobState.FAILED, describe_exit(code)


def _from_exit_file(
    job_id: str, row: QueueRow | None, acct: AcctJob | None, code: int
) -> JobStatus:
    state, reason = (JobState.COMPLETED, None) if code == 0 else _failed(code)
    return _ended(job_id, state, "EXIT_FILE", code, reason, row, acct)


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
        name=row.name if row else None,
        user=row.user if row else None,
        partition=row.partition if row else None,
        node=row.node if row else None,
        submitted_at=row.submitted_at if row else None,
        started_at=(acct.started_at if acct else None) or (row.started_at if row else None),
        ended_at=(acct.ended_at if acct else None) or (row.ended_at if row else None),
        cpus=(acct.alloc_cpus if acct else None) or (row.cpus if row else None),
        efficiency=efficiency(acct) if acct is not None and acct.state else None,
    )


def external_status(row: QueueRow) -> JobStatus:
    """A job of the user's that ScriptHut did not start."""
    status = final_status(row.job_id, row, None, None) if is_final(row.state) else None
    status = status or live_status(row)
    return replace(
        status,
        reason=status.reason or row.reason,
        node=row.node,
        submitted_at=row.submitted_at,
        external=True,
    )


# --- sinfo -------------------------------------------------------------------------------------


def parse_partitions(text: str) -> list[PartitionInfo]:
    """Rows of `sinfo --noheader --format=%R<0x1F>%a<0x1F>%C`, summed per partition."""
    found: dict[str, list[int | str | None]] = {}
    for line in text.splitlines():
        values = line.split(FIELD_SEP)
        if len(values) != 3 or not values[0].strip():
            continue
        cpus = _cpu_counts(values[2])
        entry = found.setdefault(values[0].strip(), [0, 0, values[1].strip() or None])
        if cpus is not None:
            entry[0] = int(entry[0] or 0) + cpus[0]
            entry[1] = int(entry[1] or 0) + cpus[1]
    return [
        PartitionInfo(name, int(idle or 0), int(total or 0), str(state) if state else None)
        for name, (idle, total, state) in found.items()
    ]


def parse_counts(text: str, count: int) -> list[int] | None:
    """`count` whole numbers separated by spaces (an awk summary), else None."""
    words = text.split()
    if len(words) != count or not all(word.isdigit() for word in words):
        return None
    return [int(word) for word in words]


def parse_comment_rows(text: str) -> list[tuple[str, str]]:
    """(job id, comment) rows of sacct `--format=JobID,Comment,State` (0x1F-separated); an
    array's rows (`123_4`, `123_[5-9]`) as the array's job id (`123`)."""
    rows: list[tuple[str, str]] = []
    for line in text.splitlines():
        values = line.split(FIELD_SEP)
        job_id = values[0].strip()
        if "_" in job_id:
            job_id = job_id.split("_", 1)[0]
        if len(values) == 3 and is_job_id(job_id):
            rows.append((job_id, values[1].strip()))
    return rows


def _cpu_counts(text: str) -> tuple[int, int] | None:
    """(idle, total) from `%C`: allocated/idle/other/total."""
    parts = text.strip().split("/")
    if len(parts) != 4 or not all(part.isdigit() for part in parts):
        return None
    return int(parts[1]), int(parts[3])


# --- #SBATCH values ----------------------------------------------------------------------------


def sbatch_value(value: str) -> str:
    """A value for an `#SBATCH --opt=<value>` line, as sbatch's own parser reads it.

    sbatch splits directive lines itself (no shell): inside double quotes spaces and `#`
    are literal and a backslash escapes the next character.
    """
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"an #SBATCH value cannot span lines: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sbatch_path(path: str) -> str:
    """An --output/--error value: `%` patterns off (a backslash does that), quoted.

    Slurm drops every backslash of such a path, so a path that holds one cannot be written.
    The backslash goes after a leading `/`: sbatch takes a path not starting with `/` as
    relative to the submit directory.
    """
    if "\\" in path:
        raise ValueError(f"Slurm cannot write to a path holding a backslash: {path!r}")
    if "%" in path:
        path = "/\\" + path[1:] if path.startswith("/") else "\\" + path
    return sbatch_value(path)


def slurm_time(seconds: int) -> str:
    """`D-HH:MM:SS` (Slurm rounds up to whole minutes)."""
    seconds = max(1, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def directives(options: Iterable[tuple[str, str | None]]) -> list[str]:
    """`#SBATCH --name=value` lines for the options that have a value."""
    return [f"#SBATCH --{name}={value}" for name, value in options if value is not None]
