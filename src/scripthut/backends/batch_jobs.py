"""AWS Batch requests from job specs, and Batch job descriptions read back as job statuses.

Pure functions (no boto3): names, tags, SubmitJob arguments, state mapping.

- A job's name is its attempt tag with `.` turned into `_` (`hut.<run>.<seq>.<n>` ->
  `hut_<run>_<seq>_<n>`): Batch names allow letters, digits, `-` and `_`. The tag also
  travels as the job tag `scripthut:tag`, with the run, task and attempt.
- `partition` is the job queue; `cpus`/`memory` are VCPU/MEMORY (MiB) resource
  requirements, `gres: gpu:N` is GPU; `time_limit` is `attemptDurationSeconds` (omitted
  below Batch's 60 s minimum). The script runs as `bash -c <script>` (or, when that is
  over ECS's override limit, as a bundle of one element: `batch_arrays.plain_overrides`).
- The task's environment goes through `containerOverrides.environment`; the script keeps
  only a comment listing the names (`env_out_of_script`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scripthut.backends.base import JobSpec, JobStatus
from scripthut.errors import ScriptHutError
from scripthut.states import JobState
from scripthut.workflow.clone import clone_exit_reason
from scripthut.workflow.script import shell_quote

TAG_KEY = "scripthut:tag"
RUN_KEY = "scripthut:run"
TASK_KEY = "scripthut:task"
ATTEMPT_KEY = "scripthut:attempt"
BACKEND_KEY = "scripthut:backend"
CANCEL_REASON = "cancelled by ScriptHut"
MIN_TIMEOUT_S = 60
MAX_REQUEST_BYTES = 30 * 1024  # SubmitJob's limit on the whole request
APPEND_PREFIX = "SCRIPTHUT_APPEND_"
WAITING = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING")
ACTIVE = (*WAITING, "RUNNING")
_TAG = re.compile(r"^hut\.([0-9]{8}-[0-9]{6}-[0-9a-f]+)\.([0-9]+)\.([0-9]+)$")
_NAME = re.compile(r"^hut_([0-9]{8}-[0-9]{6}-[0-9a-f]+)_([0-9]+)_([0-9]+)$")
_GPU = re.compile(r"^gpu(?::[A-Za-z0-9_.-]+)?:([0-9]+)$")
_WAIT_REASONS = {
    "SUBMITTED": "submitted to AWS Batch, not yet evaluated",
    "PENDING": "waiting for its dependencies",
    "RUNNABLE": "waiting for compute capacity in the job queue",
    "STARTING": "a container is being started",
}


def job_name(tag: str) -> str:
    """The Batch job name of an attempt tag; ScriptHutError for a tag of another shape."""
    if _TAG.fullmatch(tag) is None:
        raise ScriptHutError(f"tag {tag!r} cannot name an AWS Batch job")
    return tag.replace(".", "_")


def tag_of(name: str) -> str | None:
    """The attempt tag a Batch job name carries, None for a job ScriptHut did not name."""
    match = _NAME.fullmatch(name)
    return None if match is None else f"hut.{match[1]}.{match[2]}.{match[3]}"


def run_prefix(tag: str) -> str:
    """The `JOB_NAME` filter matching every job of the tag's run."""
    match = _TAG.fullmatch(tag)
    if match is None:
        raise ScriptHutError(f"tag {tag!r} cannot name an AWS Batch job")
    return f"hut_{match[1]}_*"


def gpus(gres: str | None) -> int | None:
    """N of `gpu:N` / `gpu:<type>:N`; ScriptHutError for anything else Batch cannot express."""
    if not gres:
        return None
    match = _GPU.fullmatch(gres.strip())
    if match is None:
        raise ScriptHutError(f"gres {gres!r}: AWS Batch takes only 'gpu:N' (or 'gpu:<type>:N')")
    return int(match[1])


def resources(spec: JobSpec) -> list[dict[str, str]]:
    out = [
        {"type": "VCPU", "value": str(max(1, spec.cpus))},
        {"type": "MEMORY", "value": str(max(1, spec.memory_mb))},
    ]
    count = gpus(spec.gres)
    if count:
        out.append({"type": "GPU", "value": str(count)})
    return out


@dataclass(frozen=True, slots=True)
class ScriptEnv:
    """The script with env values taken out, and the variables to pass to the container."""

    script: str
    environment: dict[str, str] = field(default_factory=dict)


def env_out_of_script(body: str, env: Mapping[str, str]) -> ScriptEnv:
    """Move every `export NAME=value` of `env` out of `body` into container variables.

    A plain value is passed under its name; a value appended to the runtime one
    (`PATH`-like) is passed as `SCRIPTHUT_APPEND_<NAME>` and the script keeps the append,
    reading it from there. Only lines exactly as the script renderer writes them are
    touched. A comment names the variables passed.
    """
    lines = body.split("\n")
    environment: dict[str, str] = {}
    for name, value in env.items():
        quoted = shell_quote(value)
        plain = f"export {name}={quoted}"
        append = f'export {name}="${{{name}:+${{{name}}}:}}"{quoted}'
        if plain in lines:
            lines.remove(plain)
            environment[name] = value
        elif append in lines:
            carrier = APPEND_PREFIX + name
            at = lines.index(append)
            lines[at] = f'export {name}="${{{name}:+${{{name}}}:}}${{{carrier}}}"'
            environment[carrier] = value
    if environment:
        names = ", ".join(sorted(environment))
        at = 2 if len(lines) > 1 and lines[1].startswith("#") else 1
        lines.insert(at, f"# environment passed by AWS Batch (containerOverrides): {names}")
    return ScriptEnv("\n".join(lines), environment)


def container_environment(script: str, env: Mapping[str, str]) -> dict[str, str]:
    """The container variables of a script `env_out_of_script` rendered: each value under
    its own name, or under its carrier name when the script appends it to the runtime one."""
    out: dict[str, str] = {}
    for name, value in env.items():
        carrier = APPEND_PREFIX + name
        out[carrier if f"${{{carrier}}}" in script else name] = value
    return out


def overrides(spec: JobSpec, environment: Mapping[str, str]) -> dict[str, Any]:
    """The readable container overrides of one attempt: `bash -c <script>`, its variables."""
    check_environment(environment)
    return {
        "command": ["bash", "-c", spec.script],
        "resourceRequirements": resources(spec),
        "environment": [{"name": k, "value": v} for k, v in environment.items()],
    }


def submit_args(
    spec: JobSpec,
    *,
    queue: str,
    definition: str,
    backend: str,
    retry_attempts: int,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """The SubmitJob arguments of one attempt, with the container overrides given."""
    args: dict[str, Any] = {
        "jobName": job_name(spec.tag),
        "jobQueue": queue,
        "jobDefinition": definition,
        "containerOverrides": dict(overrides),
        "retryStrategy": {"attempts": retry_attempts},
        "tags": {
            TAG_KEY: spec.tag,
            RUN_KEY: spec.run_id,
            TASK_KEY: spec.task_id[:256],
            ATTEMPT_KEY: str(spec.attempt),
            BACKEND_KEY: backend,
        },
        "propagateTags": False,
    }
    if spec.time_limit_s >= MIN_TIMEOUT_S:
        args["timeout"] = {"attemptDurationSeconds": int(spec.time_limit_s)}
    check_request_size(args)
    return args


def check_environment(environment: Mapping[str, str]) -> None:
    """ScriptHutError for a variable name Batch reserves."""
    bad = [name for name in environment if name.startswith("AWS_BATCH")]
    if bad:
        raise ScriptHutError(f"AWS Batch reserves variable names starting AWS_BATCH: {bad[0]}")


def check_request_size(args: Mapping[str, Any]) -> None:
    """ScriptHutError for a SubmitJob request over Batch's limit."""
    size = len(repr(args).encode())
    if size > MAX_REQUEST_BYTES:
        raise ScriptHutError(
            f"the job request is {size} bytes, over AWS Batch's {MAX_REQUEST_BYTES}: "
            "shorten the command or move its data to a file the task reads"
        )


# -- statuses ------------------------------------------------------------------------------


def _seconds(value: Any) -> float | None:
    return float(value) / 1000.0 if isinstance(value, int | float) and value else None


def _exit_code(job: Mapping[str, Any]) -> int | None:
    container = job.get("container") or {}
    code = container.get("exitCode")
    if code is None:
        attempts = job.get("attempts") or []
        if attempts:
            code = (attempts[-1].get("container") or {}).get("exitCode")
    return int(code) if isinstance(code, int) else None


def _reason(job: Mapping[str, Any]) -> str | None:
    container = job.get("container") or {}
    parts = [str(p) for p in (job.get("statusReason"), container.get("reason")) if p]
    return "; ".join(dict.fromkeys(parts)) or None


def cpus_of(job: Mapping[str, Any]) -> int | None:
    container = job.get("container") or {}
    for item in container.get("resourceRequirements") or []:
        if item.get("type") == "VCPU":
            try:
                return max(1, round(float(item.get("value"))))
            except (TypeError, ValueError):
                return None
    vcpus = container.get("vcpus")
    return int(vcpus) if isinstance(vcpus, int) else None


def log_stream(job: Mapping[str, Any]) -> str | None:
    """The CloudWatch stream of the job's latest attempt (None before it started)."""
    attempts = job.get("attempts") or []
    for attempt in reversed(attempts):
        stream = (attempt.get("container") or {}).get("logStreamName")
        if stream:
            return str(stream)
    stream = (job.get("container") or {}).get("logStreamName")
    return str(stream) if stream else None


def status_of(
    job: Mapping[str, Any], *, cancelled: bool = False, external: bool = False
) -> JobStatus:
    """One DescribeJobs entry as a JobStatus, with the reason it waits or ended."""
    raw = str(job.get("status") or "")
    reason = _reason(job)
    exit_code = _exit_code(job)
    if raw in WAITING:
        state = JobState.PENDING
        reason = reason or _WAIT_REASONS[raw]
    elif raw == "RUNNING":
        state = JobState.RUNNING
    elif raw == "SUCCEEDED":
        state = JobState.COMPLETED
        exit_code = 0 if exit_code is None else exit_code
    elif raw == "FAILED":
        state = (
            JobState.CANCELLED if cancelled or CANCEL_REASON in (reason or "") else JobState.FAILED
        )
        reason = reason or "AWS Batch reported the job FAILED without a reason"
        cloning = clone_exit_reason(exit_code) if exit_code is not None else None
        reason = f"{cloning}; {reason}" if cloning else reason
    else:
        state = JobState.UNKNOWN
        reason = f"AWS Batch state {raw!r} is not one ScriptHut knows"
    queue = str(job.get("jobQueue") or "").rsplit("/", 1)[-1] or None
    return JobStatus(
        job_id=str(job.get("jobId")),
        state=state,
        raw_state=raw,
        exit_code=exit_code,
        reason=reason,
        name=str(job.get("jobName") or "") or None,
        partition=queue,
        submitted_at=_seconds(job.get("createdAt")),
        started_at=_seconds(job.get("startedAt")),
        ended_at=_seconds(job.get("stoppedAt")) if state.is_final else None,
        cpus=cpus_of(job),
        external=external,
    )


def first_per_tag(jobs: Sequence[Mapping[str, Any]], wanted: set[str]) -> dict[str, str]:
    """tag -> job id of the first job submitted under each wanted tag's name."""
    return {tag: job_id for tag, (_, job_id) in created_per_tag(jobs, wanted).items()}


def created_per_tag(
    jobs: Sequence[Mapping[str, Any]], wanted: set[str]
) -> dict[str, tuple[float, str]]:
    """tag -> (created, job id) of the first job submitted under each wanted tag's name."""
    found: dict[str, tuple[float, str]] = {}
    for job in jobs:
        tag = tag_of(str(job.get("jobName") or ""))
        if tag is None or tag not in wanted:
            continue
        created = float(job.get("createdAt") or 0)
        if tag not in found or created < found[tag][0]:
            found[tag] = (created, str(job["jobId"]))
    return found
