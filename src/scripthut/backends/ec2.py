"""The EC2 backend: one instance per task.

- `submit`: one `RunInstances` per task (a few at a time) with
  `InstanceInitiatedShutdownBehavior=terminate`, the attempt tag as `ClientToken` and as the
  tag `<tag_prefix>:tag`, `<tag_prefix>:backend=<name>` and the run and task as tags, and the
  user-data script of `ec2_userdata` (the task in a container under its time limit, a
  sentinel with its exit status, a safety power-off). At most `max_instances` are live at
  once: a submission above the cap is refused.
- `poll`: one `DescribeInstances` for every instance tagged with this backend (paged). A
  pending instance past `startup_timeout_seconds` is terminated and its task failed. For each
  running one the sentinel is read through SSM, EC2 Instance Connect and SSH with the host
  key the instance reported (`ec2_access`); once it is written the log is copied to
  `<data_dir>/ec2-logs/<run>/<task>.log`, the exit status beside it (`.exit`), and the instance
  is terminated. Untracked live instances of the backend are listed as external jobs.
- `find`: instances by their `<tag_prefix>:tag` tag, so a restarted engine adopts what was
  launched and never launches an attempt twice.
- `cancel`: one `TerminateInstances`.

Throttling, capacity and network errors are "unknown" (the engine backs off and asks again);
a task fails only for what its own request or instance did.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripthut.backends import local_proc
from scripthut.backends.base import (
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
from scripthut.backends.ec2_access import (
    AccessError,
    KeyFactory,
    PortForward,
    host_keys_from_console,
    import_host_keys,
    missing_tools,
    new_key,
    public_line,
    read_result,
    require_tools,
)
from scripthut.backends.ec2_api import (
    AWSClients,
    Instance,
    describe,
    describe_instances,
    error_code,
    is_transient,
)
from scripthut.backends.ec2_userdata import (
    USER_DATA_LIMIT,
    InstancePaths,
    exit_reason,
    render_user_data,
)
from scripthut.backends.remote import MissingClock, check_name
from scripthut.config import EC2BackendConfig
from scripthut.errors import ScriptHutError
from scripthut.private import PRIVATE_FILE, make_private_dirs
from scripthut.states import JobState

log = logging.getLogger(__name__)

LOG_DIR = "ec2-logs"
CONTAINER_EXIT_FILE = "/tmp/scripthut-task.exit"  # the task script's own record, in the container
MISSING_GRACE_S = 120.0  # DescribeInstances may not list a new instance at once
LAUNCH_PARALLEL = 8
CHECK_PARALLEL = 8
FIND_CHUNK = 200
TERMINATE_CHUNK = 1000
TAG_VALUE_MAX = 256


class EC2Backend(Backend):
    """Tasks as EC2 instances of one account and region."""

    kind = "ec2"

    def __init__(
        self,
        entry: EC2BackendConfig,
        *,
        data_dir: str | Path,
        clients: AWSClients | None = None,
        forward: PortForward | None = None,
        key_factory: KeyFactory = new_key,
        instance_paths: InstancePaths | None = None,
        missing_grace_s: float = MISSING_GRACE_S,
    ) -> None:
        super().__init__(entry.name, min(entry.max_concurrent, entry.max_instances))
        self.entry = entry
        self.clients = clients or AWSClients(entry.aws.region, entry.aws.profile)
        self.forward = forward or PortForward(entry.aws.region, entry.aws.profile)
        self.key_factory = key_factory
        self.paths = instance_paths or InstancePaths()
        self.log_root = str(Path(data_dir).expanduser().absolute() / LOG_DIR)
        self.max_instances = entry.max_instances
        self.startup_timeout_s = float(entry.startup_timeout_seconds)
        self._missing = MissingClock(missing_grace_s)
        self._host_keys: dict[str, list[Any]] = {}
        self._cancelled: set[str] = set()
        self._to_terminate: set[str] = set()
        self._live: int | None = None

    def tag(self, name: str) -> str:
        """A tag key under the backend's prefix: `<tag_prefix>:<name>`."""
        return f"{self.entry.tag_prefix}:{name}"

    @property
    def _ec2(self) -> Any:
        return self.clients.client("ec2")

    def _mine(self) -> dict[str, Any]:
        return {"Name": f"tag:{self.tag('backend')}", "Values": [self.name]}

    # -- paths and scripts ----------------------------------------------------------------

    def job_paths(self, run_id: str, task_id: str, attempt: int) -> JobPaths:
        """The log copied here as `<data_dir>/ec2-logs/<run>/<task>.log` (`<task>.<n>.log` for
        attempt n > 1); the script and exit-code file are the instance's."""
        check_name("run id", run_id)
        check_name("task id", task_id)
        stem = task_id if attempt <= 1 else f"{task_id}.{attempt}"
        logfile = f"{self.log_root}/{run_id}/{stem}.log"
        return JobPaths(logfile, logfile, CONTAINER_EXIT_FILE, self.paths.script)

    def instance_type(self, partition: str | None) -> str:
        """`instance_types[partition]`, else `instance_types['default']`."""
        types = self.entry.instance_types
        found = types.get(partition or "default") or types.get("default")
        if found is None:
            raise ScriptHutError(
                f"backend '{self.name}': no instance type for partition {partition!r} "
                f"(instance_types names {', '.join(sorted(types)) or 'nothing'}; "
                f"add it or a 'default' entry)"
            )
        return found

    def image_for(self, spec: JobSpec) -> str:
        image = spec.image or self.entry.default_image
        if not image:
            raise ScriptHutError(
                f"task '{spec.task_id}' has no image and backend '{self.name}' has no "
                f"default_image: EC2 tasks run in a container"
            )
        return image

    def render_script(self, spec: JobSpec, body: str) -> str:
        """The task script as is; the instance type, image and log place are checked here."""
        self.instance_type(spec.partition)
        self.image_for(spec)
        if spec.paths.stdout != spec.paths.stderr or not spec.paths.stdout.startswith(
            self.log_root + "/"
        ):
            raise ScriptHutError(
                f"task '{spec.task_id}': output_file and error_file are not supported on EC2 "
                f"backend '{self.name}' (the task's output is copied to {self.log_root}/)"
            )
        return body

    # -- submit ---------------------------------------------------------------------------

    async def submit(self, jobs: Sequence[JobSpec]) -> list[SubmitOutcome]:
        """Launch one instance per job; raises when an outcome is unknown (find decides)."""
        if not jobs:
            return []
        require_tools()
        live = await asyncio.to_thread(self._count_live)
        room = max(0, self.max_instances - live)
        gate = asyncio.Semaphore(LAUNCH_PARALLEL)

        async def one(spec: JobSpec) -> SubmitOutcome:
            async with gate:
                return await asyncio.to_thread(self._launch, spec)

        launched = await asyncio.gather(*map(one, jobs[:room]), return_exceptions=True)
        refused = SubmitOutcome(
            error=f"max_instances ({self.max_instances}) reached: {live} instance(s) of "
            f"backend '{self.name}' are live"
        )
        outcomes: list[SubmitOutcome] = []
        for result in launched:
            if isinstance(result, BaseException):
                raise ScriptHutError(f"RunInstances: {describe(result)}") from result
            outcomes.append(result)
        self._live = live + sum(o.job_id is not None for o in outcomes)
        return outcomes + [refused] * (len(jobs) - len(outcomes))

    def _count_live(self) -> int:
        return sum(i.live for i in describe_instances(self._ec2, [self._mine()]))

    def _launch(self, spec: JobSpec) -> SubmitOutcome:
        try:
            params = self._run_params(spec)
        except ScriptHutError as exc:
            return SubmitOutcome(error=str(exc))
        try:
            reply = self._ec2.run_instances(**params)
        except Exception as exc:
            if is_transient(exc) or not error_code(exc):
                raise
            return SubmitOutcome(error=f"RunInstances refused: {describe(exc)}")
        return SubmitOutcome(job_id=str(reply["Instances"][0]["InstanceId"]))

    def _run_params(self, spec: JobSpec) -> dict[str, Any]:
        user_data = render_user_data(
            script=spec.script,
            image=self.image_for(spec),
            time_limit_s=spec.time_limit_s,
            idle_s=self.entry.idle_terminate_seconds,
            comment=f"scripthut task {spec.task_id} of run {spec.run_id} (tag {spec.tag})",
            paths=self.paths,
        )
        size = len(user_data.encode())
        if size > USER_DATA_LIMIT:
            raise ScriptHutError(
                f"task '{spec.task_id}': the user data is {size} bytes even compressed; EC2 "
                f"accepts {USER_DATA_LIMIT} (make the task's command or env shorter)"
            )
        params: dict[str, Any] = {
            "ImageId": self.entry.ami,
            "InstanceType": self.instance_type(spec.partition),
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": self.entry.subnet_id,
            "UserData": user_data,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "ClientToken": spec.tag[:64],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": self._tags(spec)}],
        }
        if self.entry.security_group_ids:
            params["SecurityGroupIds"] = list(self.entry.security_group_ids)
        if self.entry.instance_profile_arn:
            params["IamInstanceProfile"] = {"Arn": self.entry.instance_profile_arn}
        return params

    def _tags(self, spec: JobSpec) -> list[dict[str, str]]:
        values = {
            **self.entry.extra_tags,
            "Name": f"scripthut {spec.run_id}/{spec.task_id}",
            self.tag("backend"): self.name,
            self.tag("tag"): spec.tag,
            self.tag("run"): spec.run_id,
            self.tag("task"): spec.task_id,
            self.tag("attempt"): str(spec.attempt),
        }
        return [{"Key": k, "Value": v[:TAG_VALUE_MAX]} for k, v in values.items()]

    # -- find and cancel ----------------------------------------------------------------------

    async def find(self, tags: Sequence[str]) -> dict[str, str] | None:
        """tag -> instance id for every instance launched for these tags (a live one first)."""
        try:
            return await asyncio.to_thread(self._find, list(tags))
        except Exception as exc:
            log.debug("backend '%s': find failed: %s", self.name, describe(exc))
            return None

    def _find(self, tags: list[str]) -> dict[str, str]:
        found: dict[str, Instance] = {}
        for start in range(0, len(tags), FIND_CHUNK):
            wanted = {"Name": f"tag:{self.tag('tag')}", "Values": tags[start : start + FIND_CHUNK]}
            for instance in describe_instances(self._ec2, [self._mine(), wanted]):
                tag = instance.tags.get(self.tag("tag"), "")
                if tag and (tag not in found or (instance.live and not found[tag].live)):
                    found[tag] = instance
        return {tag: instance.id for tag, instance in found.items()}

    async def cancel(self, job_ids: Sequence[str]) -> None:
        ids = [i for i in job_ids if i.startswith("i-")]
        self._cancelled.update(ids)
        await asyncio.to_thread(self._terminate, ids)

    def _terminate(self, ids: Sequence[str]) -> None:
        """TerminateInstances; ids EC2 does not know (any more) are skipped."""
        for start in range(0, len(ids), TERMINATE_CHUNK):
            chunk = list(ids[start : start + TERMINATE_CHUNK])
            try:
                self._ec2.terminate_instances(InstanceIds=chunk)
            except Exception as exc:
                if not error_code(exc).startswith("InvalidInstanceID"):
                    raise
                if len(chunk) > 1:
                    for one in chunk:
                        self._terminate([one])

    # -- poll -----------------------------------------------------------------------------

    async def poll(self, jobs: Sequence[JobRef]) -> PollResult:
        try:
            instances = await asyncio.to_thread(describe_instances, self._ec2, [self._mine()])
        except Exception as exc:
            return PollResult(ok=False, error=f"DescribeInstances: {describe(exc)}")
        by_id = {i.id: i for i in instances}
        self._live = sum(i.live for i in instances)
        await self._terminate_leftovers(by_id)
        tracked = {ref.job_id for ref in jobs}
        self._missing.keep_only(tracked)
        result = PollResult(external=[self._external(i) for i in instances if i.live])
        result.external = [s for s in result.external or [] if s.job_id not in tracked]
        running: list[tuple[JobRef, Instance]] = []
        for ref in jobs:
            instance = by_id.get(ref.job_id)
            if instance is not None and instance.state == "running" and not self._ended(ref):
                running.append((ref, instance))
                continue
            status = await self._settle(ref, instance)
            if status is not None:
                result.jobs[ref.job_id] = status
        if running and missing_tools():
            return PollResult(result.jobs, result.external, ok=False, error=_tools_error())
        statuses = await asyncio.gather(*(self._check(ref, inst) for ref, inst in running))
        result.jobs.update((s.job_id, s) for s in statuses)
        return result

    def _external(self, instance: Instance) -> JobStatus:
        return JobStatus(
            job_id=instance.id,
            state=JobState.PENDING if instance.state == "pending" else JobState.RUNNING,
            raw_state=instance.state,
            name=instance.tags.get("Name"),
            partition=instance.instance_type,
            node=instance.id,
            submitted_at=instance.launched_at,
            external=True,
        )

    async def _settle(self, ref: JobRef, instance: Instance | None) -> JobStatus | None:
        """The status of a job that is not running (None: unknown this cycle)."""
        code = self._ended(ref)
        if code is not None:
            if instance is not None and instance.live:
                self._to_terminate.add(instance.id)
            return self._final(ref, instance, code)
        if instance is None:
            over, waited = self._missing.over(ref.job_id)
            if not over:
                return None
            return self._status(
                ref, None, JobState.FAILED, f"instance not found for {waited:.0f} s"
            )
        self._missing.seen(ref.job_id)
        if instance.state == "pending":
            return await self._pending(ref, instance)
        if instance.state in ("stopping", "stopped"):
            await self._terminate_now(instance.id)
            return self._status(
                ref, instance, JobState.FAILED, f"the instance was {instance.state}"
            )
        return self._gone(ref, instance)

    async def _pending(self, ref: JobRef, instance: Instance) -> JobStatus:
        since = instance.launched_at or ref.submitted_at or time.time()
        if time.time() - since <= self.startup_timeout_s:
            return self._status(ref, instance, JobState.PENDING, None)
        await self._terminate_now(instance.id)
        reason = (
            f"the instance did not reach running within {self.startup_timeout_s:g} s "
            f"(startup_timeout_seconds); it was terminated"
        )
        return self._status(ref, instance, JobState.FAILED, reason)

    def _gone(self, ref: JobRef, instance: Instance) -> JobStatus:
        """shutting-down / terminated before its result was read."""
        if ref.job_id in self._cancelled or instance.state_reason_code.endswith(
            "UserInitiatedShutdown"
        ):
            return self._status(ref, instance, JobState.CANCELLED, "instance terminated")
        if instance.state_reason_code.endswith("InstanceInitiatedShutdown"):
            reason = (
                "the instance powered itself off (time limit + idle_terminate_seconds) "
                "before its result was read"
            )
        else:
            detail = instance.state_reason or instance.state_reason_code or "no reason given"
            reason = f"the instance ended ({instance.state}: {detail}) before its result was read"
        return self._status(ref, instance, JobState.FAILED, reason)

    async def _check(self, ref: JobRef, instance: Instance) -> JobStatus:
        """A running instance: its sentinel, and when written, its log and its end."""
        try:
            code = await self._read(ref, instance)
        except (AccessError, ScriptHutError) as exc:
            return self._status(ref, instance, JobState.RUNNING, f"result not read: {exc}")
        except Exception as exc:
            return self._status(
                ref, instance, JobState.RUNNING, f"result not read: {describe(exc)}"
            )
        if code is None:
            return self._status(ref, instance, JobState.RUNNING, None)
        await asyncio.to_thread(_write_record, _record_path(ref), code)
        await self._terminate_now(instance.id)
        return self._final(ref, instance, code)

    async def _read(self, ref: JobRef, instance: Instance) -> int | None:
        keys = await self._instance_host_keys(instance.id)
        async with self.forward.open(instance.id) as port:
            key = self.key_factory()
            await asyncio.to_thread(
                self.clients.client("ec2-instance-connect").send_ssh_public_key,
                InstanceId=instance.id,
                InstanceOSUser=self.entry.ssh_user,
                SSHPublicKey=public_line(key),
            )
            return await read_result(
                port=port,
                user=self.entry.ssh_user,
                client_key=key,
                host_keys=keys,
                paths=self.paths,
                local_log=ref.paths.stdout,
            )

    async def _instance_host_keys(self, instance_id: str) -> list[Any]:
        """The host keys the instance printed on its console (cached once found)."""
        keys = self._host_keys.get(instance_id)
        if keys:
            return keys
        reply = await asyncio.to_thread(
            self._ec2.get_console_output, InstanceId=instance_id, Latest=True
        )
        keys = import_host_keys(host_keys_from_console(_console_text(reply.get("Output"))))
        if not keys:
            raise AccessError("the instance has not printed its SSH host keys on its console yet")
        self._host_keys[instance_id] = keys
        return keys

    async def _terminate_now(self, instance_id: str) -> None:
        try:
            await asyncio.to_thread(self._terminate, [instance_id])
        except Exception as exc:
            log.info("backend '%s': terminating %s: %s", self.name, instance_id, describe(exc))
            self._to_terminate.add(instance_id)

    async def _terminate_leftovers(self, by_id: dict[str, Instance]) -> None:
        """Instances whose task ended but whose termination failed: again, until they go."""
        pending = [i for i in self._to_terminate if i in by_id and by_id[i].live]
        self._to_terminate = set(pending)
        if pending:
            try:
                await asyncio.to_thread(self._terminate, pending)
                self._to_terminate.clear()
            except Exception as exc:
                log.info("backend '%s': terminating %s: %s", self.name, pending, describe(exc))

    def _ended(self, ref: JobRef) -> int | None:
        return _read_record(_record_path(ref))

    def _final(self, ref: JobRef, instance: Instance | None, code: int) -> JobStatus:
        state = JobState.COMPLETED if code == 0 else JobState.FAILED
        return self._status(ref, instance, state, exit_reason(code, ref.time_limit_s), code)

    def _status(
        self,
        ref: JobRef,
        instance: Instance | None,
        state: JobState,
        reason: str | None,
        exit_code: int | None = None,
    ) -> JobStatus:
        final = state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
        return JobStatus(
            job_id=ref.job_id,
            state=state,
            raw_state=instance.state if instance else "not found",
            exit_code=exit_code,
            reason=reason,
            name=instance.tags.get("Name") if instance else None,
            partition=instance.instance_type if instance else None,
            node=ref.job_id,
            submitted_at=ref.submitted_at or None,
            started_at=instance.launched_at if instance else None,
            ended_at=time.time() if final else None,
        )

    # -- logs and info ----------------------------------------------------------------------

    async def read_log(self, path: str, offset: int = 0, limit: int = 1 << 20) -> LogChunk:
        """The copied log (missing until the task has ended)."""
        return await asyncio.to_thread(local_proc.read_chunk, path, offset, limit)

    async def read_text(self, path: str, limit: int = 16 << 20) -> str:
        return await asyncio.to_thread(local_proc.read_text, path, limit)

    async def info(self) -> BackendInfo:
        try:
            live = await asyncio.to_thread(self._count_live)
        except Exception as exc:
            return BackendInfo(self.name, self.kind, False, message=describe(exc))
        self._live = live
        message = f"{live} of at most {self.max_instances} instances live"
        if missing_tools():
            message += f"; {_tools_error()}"
        return BackendInfo(self.name, self.kind, True, message=message, queue_depth=live)

    def free_slots(self) -> int | None:
        return None if self._live is None else max(0, self.max_instances - self._live)


def _tools_error() -> str:
    try:
        require_tools()
    except ScriptHutError as exc:
        return str(exc)
    return ""


def _console_text(output: Any) -> str:
    """GetConsoleOutput's text: base64 as the API sends it (plain text is taken as is)."""
    text = str(output or "")
    if text and not any(c.isspace() for c in text.strip()):
        try:
            return base64.b64decode(text, validate=True).decode(errors="replace")
        except (binascii.Error, ValueError):
            return text
    return text


def _record_path(ref: JobRef) -> str:
    """`<task>.exit` beside the copied log: the exit status, once the task has ended."""
    stem = ref.paths.stdout.removesuffix(".log")
    return f"{stem}.exit"


def _read_record(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as file:
            text = file.read().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.lstrip("-").isdigit() else None


def _write_record(path: str, code: int) -> None:
    make_private_dirs(os.path.dirname(path))
    partial = f"{path}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(partial, flags, PRIVATE_FILE)
    with os.fdopen(fd, "w") as file:
        file.write(f"{code}\n")
    os.replace(partial, path)
