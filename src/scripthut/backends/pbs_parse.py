"""PBS's words, read: `qstat -f` (text and `-F json`), states, exit statuses, nodes, queues.

Pure functions only (no I/O), so every edge case is testable from captured output. Two
dialects share one reader:
- Torque (and the Torque-like wrappers of other schedulers): states Q R H W E C T S,
  `exit_status`, completed jobs listed as C while the server keeps them.
- PBS Pro / OpenPBS: states Q R H W E B X F M U, `Exit_status`, finished jobs only through
  `qstat -x`, and `qstat -f -F json`.

`qstat -f` text is read record by record: a `Job Id:` line, then attributes at one indent
(a TAB or four spaces), long values wrapped onto lines at another indent. Times come as
`ctime(3)` text formatted by qstat itself; the backend runs it with `TZ=UTC` so they read
as UTC whatever the cluster's zone, and Torque's `start_time`/`comp_time` are epochs.
"""

from __future__ import annotations

import calendar
import json
import re
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from scripthut.backends.base import JobStatus, PartitionInfo
from scripthut.states import JobState

UNKNOWN_JOB_RC = 153  # qstat/qdel: "Unknown Job Id" (PBS_UNKJOBID - 15000)
_ID = re.compile(r"([0-9]+(?:\[[0-9]*\])?)(?:\.[A-Za-z0-9_.-]+)?")
_ATTR = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*) =(?: (.*))?")
_TAG = re.compile(r"hut\.[A-Za-z0-9._-]+")
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([kmgtp]?)(b|w)?", re.IGNORECASE)
_SIZE_MB = {"": 1 / (1 << 20), "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1 << 20, "p": 1 << 30}
FINAL_LETTERS = ("C", "F", "X")


# --- job ids --------------------------------------------------------------------------------


def is_job_id(text: str) -> bool:
    """`123`, `123.server`, `123[]`, `123[4].server.example.org`."""
    return _ID.fullmatch(text.strip()) is not None


def job_key(text: str) -> str:
    """The part of an id every command agrees on: `123.srv.example.org` -> `123`.

    qsub may print `123.srv` while qstat says `123.srv.example.org` (or the wrappers, `123`).
    """
    match = _ID.fullmatch(text.strip())
    return match.group(1) if match else text.strip()


def submitted_job_id(text: str) -> str | None:
    """The id qsub printed on its last line, else None."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines and is_job_id(lines[-1]) else None


def is_hut_tag(name: str | None) -> bool:
    return name is not None and _TAG.fullmatch(name.strip()) is not None


def one_line(text: str, limit: int = 500) -> str:
    joined = " / ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return joined[:limit]


# --- qstat -f ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PBSJob:
    """One job of `qstat -f`: its id and attributes (nested JSON names joined with `.`)."""

    job_id: str
    attrs: Mapping[str, str]

    def get(self, *names: str) -> str | None:
        for name in names:
            value = self.attrs.get(name)
            if value is not None and value.strip() != "":
                return value.strip()
        return None

    @property
    def key(self) -> str:
        return job_key(self.job_id)

    @property
    def state(self) -> str:
        return (self.get("job_state") or "").upper()

    @property
    def name(self) -> str | None:
        return self.get("Job_Name")

    @property
    def owner(self) -> str | None:
        """The user part of `Job_Owner = user@host`."""
        owner = self.get("Job_Owner")
        return owner.split("@", 1)[0] if owner else None

    @property
    def exit_status(self) -> int | None:
        text = self.get("exit_status", "Exit_status")
        if text is None or not text.lstrip("-").isdigit():
            return None
        return int(text)


def parse_qstat_f(text: str) -> list[PBSJob]:
    """Every record of `qstat -f` text output, whatever its indents and wrapping."""
    jobs: list[PBSJob] = []
    job_id: str | None = None
    attrs: dict[str, str] = {}
    indent: str | None = None
    last: str | None = None
    for line in text.splitlines():
        if line.startswith("Job Id:"):
            if job_id:
                jobs.append(PBSJob(job_id, attrs))
            job_id, attrs, indent, last = line[len("Job Id:") :].strip(), {}, None, None
            continue
        if job_id is None or not line.strip():
            continue
        lead = line[: len(line) - len(line.lstrip())]
        if not lead:  # not part of a record (a message on stderr): ends the value
            last = None
            continue
        match = _ATTR.fullmatch(line.strip())
        if match is not None and (indent is None or lead == indent):
            indent, last = lead, match.group(1)
            attrs[last] = match.group(2) or ""
        elif last is not None:
            attrs[last] += line[1:] if line.startswith("\t") else line.lstrip()
    if job_id:
        jobs.append(PBSJob(job_id, attrs))
    return jobs


def parse_qstat_json(text: str) -> list[PBSJob]:
    """Every job of `qstat -f -F json`; ValueError when the text is not that JSON.

    Some PBS Pro releases print control characters unescaped inside strings: read leniently.
    """
    start = text.find("{")
    if start < 0:
        if not text.strip():
            return []
        raise ValueError("no JSON object in qstat's output")
    data = json.loads(text[start:], strict=False)
    if not isinstance(data, dict):
        raise ValueError("qstat's JSON is not an object")
    jobs = data.get("Jobs") or {}
    if not isinstance(jobs, dict):
        raise ValueError("qstat's JSON has no Jobs object")
    out: list[PBSJob] = []
    for job_id, body in jobs.items():
        if isinstance(body, dict):
            attrs: dict[str, str] = {}
            _flatten("", body, attrs)
            out.append(PBSJob(str(job_id), attrs))
    return out


def _flatten(prefix: str, value: object, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}{key}.", inner, out)
        return
    name = prefix.rstrip(".")
    if isinstance(value, bool):
        out[name] = "True" if value else "False"
    elif value is not None:
        out[name] = str(value)


def parse_qstat(text: str) -> list[PBSJob]:
    """`qstat -f` output in either form (JSON starts with `{`)."""
    return parse_qstat_json(text) if text.lstrip().startswith("{") else parse_qstat_f(text)


def owned_by(jobs: Iterable[PBSJob], user: str) -> list[PBSJob]:
    return [job for job in jobs if job.owner == user]


# --- small values ----------------------------------------------------------------------------


def parse_duration(text: str | None) -> float | None:
    """Seconds in `HH:MM:SS` (hours may pass 24), `MM:SS` or plain seconds."""
    if text is None:
        return None
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3:
        return None
    try:
        values = [float(part) for part in parts]
    except ValueError:
        return None
    seconds = 0.0
    for value in values:
        seconds = seconds * 60 + value
    return seconds


def parse_size_mb(text: str | None) -> float | None:
    """MB in a PBS size: `123456kb`, `4gb`, `100b`, `512mw` (8-byte words), `0`."""
    if text is None:
        return None
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    scale = 8.0 if (match.group(3) or "").lower() == "w" else 1.0
    return float(match.group(1)) * _SIZE_MB[match.group(2).lower()] * scale


def parse_time(text: str | None) -> float | None:
    """Epoch seconds from an epoch (`1480000000`) or qstat's `Sat Dec  5 23:57:21 2026` (UTC)."""
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return float(text) if int(text) > 0 else None
    try:
        parsed = time.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None
    return float(calendar.timegm(parsed))


# --- states and exit statuses -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateInfo:
    state: JobState
    reason: str | None = None


STATES: Mapping[str, StateInfo] = {
    "Q": StateInfo(JobState.PENDING),
    "H": StateInfo(JobState.PENDING, "held: release it (qrls) or cancel it"),
    "W": StateInfo(JobState.PENDING, "waiting for its start time"),
    "T": StateInfo(JobState.PENDING, "being moved to another server"),
    "M": StateInfo(JobState.PENDING, "moved to another server"),
    "R": StateInfo(JobState.RUNNING),
    "E": StateInfo(JobState.RUNNING, "exiting"),
    "B": StateInfo(JobState.RUNNING, "array job: some subjobs have started"),
    "S": StateInfo(JobState.RUNNING, "suspended"),
    "U": StateInfo(JobState.RUNNING, "suspended: its node is busy with interactive use"),
}

# Negative exit statuses: the server's own reasons (JOB_EXEC_* in Torque and PBS Pro).
EXEC_CODES: Mapping[int, str] = {
    -1: "the job could not be started (JOB_EXEC_FAIL1)",
    -2: "the job could not be started (JOB_EXEC_FAIL2)",
    -3: "the job could not start and will be retried (JOB_EXEC_RETRY)",
    -4: "the job was aborted when its node started (JOB_EXEC_INITABT)",
    -5: "the job was rerun when its node started (JOB_EXEC_INITRST)",
    -6: "the job was aborted on its node (JOB_EXEC_INITRMG)",
    -7: "the job could not be restarted (JOB_EXEC_BADRESRT)",
    -8: "the job's shell could not be started (JOB_EXEC_CMDFAIL)",
    -9: "the job's output file could not be created (JOB_EXEC_STDOUTFAIL)",
    -10: "killed: memory limit exceeded (JOB_EXEC_OVERLIMIT_MEM)",
    -11: "killed: walltime exceeded (JOB_EXEC_OVERLIMIT_WT)",
    -12: "killed: cpu time limit exceeded (JOB_EXEC_OVERLIMIT_CPUT)",
    -29: "killed: walltime exceeded (JOB_EXEC_KILL_WALLTIME)",
}


def state_info(letter: str) -> StateInfo:
    """The meaning of a live state letter; an unknown letter is UNKNOWN, never a guess."""
    info = STATES.get(letter.strip().upper())
    if info is None:
        return StateInfo(JobState.UNKNOWN, f"unknown PBS state {letter.strip()!r}")
    return info


def is_final(letter: str) -> bool:
    return letter.strip().upper() in FINAL_LETTERS


def shell_exit(status: int) -> int:
    """A shell-style exit code from a PBS exit status (>= 256: killed by signal N - 256)."""
    return 128 + (status - 256) if status > 256 else status


def describe_exit(code: int) -> str:
    if 128 < code <= 192:
        try:
            return f"exit code {code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit code {code}"


def status_outcome(status: int) -> tuple[JobState, int | None, str | None]:
    """(state, shell exit code, reason) from the scheduler's exit status alone."""
    if status < 0:
        return JobState.FAILED, None, EXEC_CODES.get(status, f"PBS exit status {status}")
    code = shell_exit(status)
    return (
        (JobState.COMPLETED, 0, None) if code == 0 else (JobState.FAILED, code, describe_exit(code))
    )


# --- one job's status ------------------------------------------------------------------------


def efficiency(job: PBSJob) -> dict[str, float] | None:
    """From `resources_used.*`: cput, walltime, mem; cpu_efficiency = cput / (walltime * ncpus)."""
    out: dict[str, float] = {}
    cput = parse_duration(job.get("resources_used.cput"))
    wall = parse_duration(job.get("resources_used.walltime"))
    mem = parse_size_mb(job.get("resources_used.mem"))
    cpus = job_cpus(job)
    if wall is not None:
        out["elapsed_s"] = wall
    if cput is not None:
        out["total_cpu_s"] = cput
    if cpus:
        out["alloc_cpus"] = float(cpus)
    if mem is not None:
        out["max_rss_mb"] = round(mem, 3)
    if cput is not None and wall and cpus:
        out["cpu_efficiency"] = round(cput / (wall * cpus), 4)
    return out or None


def job_cpus(job: PBSJob) -> int | None:
    """CPUs the job holds: `resources_used.ncpus`, `Resource_List.ncpus`, or nodes x ppn."""
    for name in ("resources_used.ncpus", "Resource_List.ncpus"):
        text = job.get(name)
        if text is not None and text.isdigit() and int(text) > 0:
            return int(text)
    nodes = job.get("Resource_List.nodes")
    if nodes is None:
        return None
    total = 0
    for part in nodes.split("+"):
        words = part.split(":")
        count = int(words[0]) if words[0].isdigit() else 1
        ppn = next((int(w[4:]) for w in words if w.startswith("ppn=") and w[4:].isdigit()), 1)
        total += count * ppn
    return total or None


def job_node(job: PBSJob) -> str | None:
    """The first host of `exec_host = node1/0-3+node2/0`."""
    host = job.get("exec_host")
    return host.split("+", 1)[0].split("/", 1)[0] or None if host else None


def live_status(job: PBSJob, job_id: str | None = None) -> JobStatus:
    """A job the server lists in a live state (pending or running)."""
    info = state_info(job.state)
    reason = info.reason
    comment = job.get("comment")
    if info.state is JobState.PENDING and comment:
        reason = comment if reason is None else f"{reason} ({comment})"
    running = info.state is JobState.RUNNING
    return JobStatus(
        job_id=job_id or job.job_id,
        state=info.state,
        raw_state=job.state,
        reason=reason,
        name=job.name,
        user=job.owner,
        partition=job.get("queue"),
        node=job_node(job) if running else None,
        submitted_at=parse_time(job.get("qtime", "ctime")),
        started_at=parse_time(job.get("start_time", "stime")) if running else None,
        cpus=job_cpus(job),
    )


def final_status(job_id: str, job: PBSJob | None, exit_file: int | None) -> JobStatus | None:
    """A job that ended, or that the server no longer lists; None if nothing says how.

    The exit-code file the task script wrote decides first (the command's own code); then
    the server's exit status. A finished job with neither is undecided (the file may not
    be visible yet on a shared file system; the server may not report exit statuses).
    """
    if exit_file is not None:
        state, reason = (
            (JobState.COMPLETED, None)
            if exit_file == 0
            else (
                JobState.FAILED,
                describe_exit(exit_file),
            )
        )
        raw = job.state if job is not None and job.state else "EXIT_FILE"
        return _ended(job_id, state, raw, exit_file, reason, job)
    if job is None or not is_final(job.state) or job.exit_status is None:
        return None
    state, code, reason = status_outcome(job.exit_status)
    return _ended(job_id, state, job.state, code, reason, job)


def _ended(
    job_id: str,
    state: JobState,
    raw: str,
    code: int | None,
    reason: str | None,
    job: PBSJob | None,
) -> JobStatus:
    if job is None:
        return JobStatus(job_id, state, raw, exit_code=code, reason=reason)
    return JobStatus(
        job_id=job_id,
        state=state,
        raw_state=raw,
        exit_code=code,
        reason=reason,
        name=job.name,
        user=job.owner,
        partition=job.get("queue"),
        node=job_node(job),
        submitted_at=parse_time(job.get("qtime", "ctime")),
        started_at=parse_time(job.get("start_time", "stime")),
        ended_at=parse_time(job.get("comp_time", "obittime")),
        cpus=job_cpus(job),
        efficiency=efficiency(job),
    )


def external_status(job: PBSJob) -> JobStatus:
    """A job of the user's that ScriptHut did not start, with the server's raw state."""
    if is_final(job.state):
        status = final_status(job.job_id, job, None)
        if status is None:
            reason = "finished; the server reports no exit status"
            status = _ended(job.job_id, JobState.UNKNOWN, job.state, None, reason, job)
    else:
        status = live_status(job)
    return replace(status, external=True)


# --- pbsnodes and qstat -Q -------------------------------------------------------------------


def parse_pbsnodes(text: str) -> tuple[int, int] | None:
    """(idle, total) CPUs of `pbsnodes -a` (Torque `np`/`jobs`, PBS Pro resources_*)."""
    nodes: list[dict[str, str]] = []
    for line in text.splitlines():
        if line.strip() and not line[0].isspace():
            nodes.append({})
        elif nodes and " = " in line:
            name, _, value = line.strip().partition(" = ")
            nodes[-1][name] = value.strip()
    if not nodes:
        return None
    idle = total = 0
    for node in nodes:
        cpus, used = _node_cpus(node)
        total += cpus
        state = node.get("state", "")
        if not any(word in state for word in ("down", "offline", "unknown")):
            idle += max(0, cpus - used)
    return idle, total


def _node_cpus(node: Mapping[str, str]) -> tuple[int, int]:
    text = node.get("resources_available.ncpus") or node.get("np") or node.get("pcpus") or "0"
    cpus = int(text) if text.isdigit() else 0
    assigned = node.get("resources_assigned.ncpus")
    if assigned is not None:
        return cpus, int(assigned) if assigned.isdigit() else 0
    jobs = node.get("jobs", "")
    used = 0
    for part in filter(None, (word.strip() for word in jobs.split(","))):
        slots = part.split("/", 1)[0]
        if "-" in slots and all(s.isdigit() for s in slots.split("-", 1)):
            low, high = (int(s) for s in slots.split("-", 1))
            used += high - low + 1
        else:
            used += 1
    if "job-exclusive" in node.get("state", "") and not jobs:
        used = cpus
    return cpus, used


def parse_queues(text: str) -> tuple[list[PartitionInfo], int | None, int | None]:
    """Queues of `qstat -Q` (by its header's column names); (queues, queued, running)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((line.split() for line in lines if line.split()[:1] == ["Queue"]), None)
    if header is None:
        return [], None, None
    columns = {name: index for index, name in enumerate(header)}
    queues: list[PartitionInfo] = []
    queued = running = 0
    known = True
    for line in lines:
        words = line.split()
        if len(words) != len(header) or words[0] == "Queue" or set(words[0]) <= {"-"}:
            continue
        enabled = _column(words, columns, "Ena") == "yes"
        started = _column(words, columns, "Str") == "yes"
        state = "up" if enabled and started else "inactive"
        queues.append(PartitionInfo(words[0], None, None, state))
        que, run = _column(words, columns, "Que"), _column(words, columns, "Run")
        if que.isdigit() and run.isdigit():
            queued, running = queued + int(que), running + int(run)
        else:
            known = False
    return queues, (queued if known else None), (running if known else None)


def _column(words: list[str], columns: Mapping[str, int], name: str) -> str:
    index = columns.get(name)
    return words[index] if index is not None and index < len(words) else ""


# --- flavor ------------------------------------------------------------------------------------


def detect_flavor(version_output: str) -> str:
    """`pbspro` when `qstat --version`/`pbsnodes --version` name PBS Pro or OpenPBS
    (`pbs_version = 19.1.3`), else `torque` (Torque's `Version: 6.1.2`, and wrappers that
    print usage text count as Torque-like)."""
    return "pbspro" if "pbs_version" in version_output.lower() else "torque"
