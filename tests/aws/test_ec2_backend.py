"""The EC2 backend end to end: moto for every AWS call, the rig's real sshd as the instance
(reached through a stand-in for the SSM port forward), and the user-data script moto received
executed on the rig host with a `docker` stand-in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from scripthut.backends.base import JobRef, JobSpec, PollResult
from scripthut.backends.ec2 import EC2Backend
from scripthut.backends.ec2_userdata import InstancePaths, safety_minutes
from scripthut.config import EC2BackendConfig
from scripthut.errors import ScriptHutError
from scripthut.states import JobState
from scripthut.workflow.env import resolve_env
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.script import render_task_script
from tests.aws.ec2_support import (
    AMI,
    Host,
    Tools,
    aws,
    client,
    default_subnet,
    host,
    moto_instance,
    moto_url,
    rig,
    rig_host_key,
    set_console,
    ssm_standin,
    user_data,
)
from tests.slurm.conftest import SlurmRig

__all__ = ["aws", "host", "moto_url", "rig", "ssm_standin"]  # fixtures used by name
T = TypeVar("T")
RUN = "run-1"


def entry(**extra: Any) -> EC2BackendConfig:
    fields: dict[str, Any] = {
        "name": "cloud",
        "type": "ec2",
        "aws": {"region": "us-east-1"},
        "ami": AMI,
        "subnet_id": default_subnet(),
        "security_group_ids": [],
        "instance_types": {"default": "t3.micro", "big": "c5.2xlarge"},
        "default_image": "public.ecr.aws/docker/library/bash:5",
        "ssh_user": "hutuser",
        "max_instances": 3,
        "idle_terminate_seconds": 120,
        "extra_tags": {"project": "tests"},
    }
    return EC2BackendConfig.model_validate(fields | extra)


def make_backend(rig: SlurmRig, host: Host, tmp_path: Path, **extra: Any) -> EC2Backend:
    paths = InstancePaths(
        log=f"{host.root}/log/task.log",
        done=f"{host.root}/run/done",
        script=f"{host.root}/lib/task.sh",
    )
    rig_key = asyncssh.read_private_key(str(rig.ssh_key))
    return EC2Backend(
        entry(ssh_user=rig.ssh_user, **extra),
        data_dir=tmp_path / "data",
        key_factory=lambda: rig_key,
        instance_paths=paths,
    )


def job(backend: EC2Backend, index: int, command: str, **task: Any) -> JobSpec:
    """A job as the engine builds it: the task script, then render_script."""
    spec_task = TaskSpec(id=f"t{index}", command=command, name=f"t{index}", **task)
    paths = backend.job_paths(RUN, spec_task.id, 1)
    tag = f"hut.{RUN}.{index}.1"
    body = render_task_script(
        spec_task, resolve_env([], {}, {}), exit_path=paths.exit_code, tag=tag
    )
    spec = JobSpec(
        tag=tag,
        run_id=RUN,
        task_id=spec_task.id,
        attempt=1,
        name=spec_task.name,
        script="",
        paths=paths,
        working_dir="~",
        time_limit_s=spec_task.time_limit_s,
        partition=spec_task.partition,
        image=spec_task.image,
    )
    return replace(spec, script=backend.render_script(spec, body))


def ref(spec: JobSpec, job_id: str) -> JobRef:
    return JobRef(job_id, spec.tag, spec.paths, spec.time_limit_s, time.time())


def drive(backend: EC2Backend, body: Callable[[EC2Backend], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            return await body(backend)
        finally:
            await backend.close()

    return asyncio.run(main())


async def submit(backend: EC2Backend, *specs: JobSpec) -> list[str]:
    outcomes = await backend.submit(list(specs))
    assert all(o.job_id for o in outcomes), outcomes
    return [str(o.job_id) for o in outcomes]


def state(instance_id: str) -> str:
    reply = client("ec2").describe_instances(InstanceIds=[instance_id])
    return str(reply["Reservations"][0]["Instances"][0]["State"]["Name"])


def test_a_task_runs_its_user_data_and_ends_with_its_log_and_exit_status(
    aws: str, rig: SlurmRig, host: Host, ssm_standin: Tools, tmp_path: Path, monkeypatch: Any
) -> None:
    set_console(monkeypatch, [rig_host_key(rig)])
    backend = make_backend(rig, host, tmp_path)
    ok = job(backend, 1, "echo hello from $SCRIPTHUT_TASK_ID; echo to-stderr >&2")
    bad = job(backend, 2, "echo failing; exit 3", partition="big")

    async def body(backend: EC2Backend) -> tuple[PollResult, PollResult]:
        ids = await submit(backend, ok, bad)
        refs = [ref(ok, ids[0]), ref(bad, ids[1])]
        before = await backend.poll(refs)
        assert not Path(ok.paths.stdout).exists()  # nothing copied while it runs
        # One rig host plays both instances, one after the other.
        host.run_user_data(user_data(ids[0]))
        after = await backend.poll(refs[:1])
        host.run_user_data(user_data(ids[1]))
        after.jobs.update((await backend.poll(refs[1:])).jobs)
        return before, after

    before, after = drive(backend, body)
    first, second = (s.job_id for s in before.jobs.values())
    # Running, sentinel not written yet: RUNNING, nothing copied.
    assert [s.state for s in before.jobs.values()] == [JobState.RUNNING, JobState.RUNNING]
    # The request: terminate on shutdown, tags, instance types by partition.
    ec2 = client("ec2")
    behaviour = ec2.describe_instance_attribute(
        InstanceId=first, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    described = ec2.describe_instances(InstanceIds=[first, second])["Reservations"]
    instances = {i["InstanceId"]: i for r in described for i in r["Instances"]}
    tags = {t["Key"]: t["Value"] for t in instances[first]["Tags"]}
    assert tags["scripthut:backend"] == "cloud"
    assert tags["scripthut:tag"] == ok.tag
    assert tags["project"] == "tests"
    assert instances[first]["InstanceType"] == "t3.micro"
    assert instances[second]["InstanceType"] == "c5.2xlarge"
    # Ended: the log copied, the exit status kept, the instance terminated.
    done, failed = after.jobs[first], after.jobs[second]
    assert (done.state, done.exit_code) == (JobState.COMPLETED, 0)
    assert (failed.state, failed.exit_code, failed.reason) == (JobState.FAILED, 3, "exit 3")
    text = Path(ok.paths.stdout).read_text()
    assert "hello from t1" in text and "to-stderr" in text
    assert "failing" in Path(bad.paths.stdout).read_text()
    assert Path(ok.paths.stdout).stat().st_mode & 0o777 == 0o600
    assert state(first) == "terminated" and state(second) == "terminated"
    # Through the port forward, once per look at a running instance.
    assert ssm_standin.forwards() in (
        [first, second, first, second],
        [second, first, first, second],
    )
    # The safety timer and the image.
    minutes = safety_minutes(ok.time_limit_s, 120)
    assert host.read("shutdown.calls").split("\n")[0] == f"-h +{minutes}"
    assert "pull -q public.ecr.aws/docker/library/bash:5" in host.read("docker.calls")


def test_the_time_limit_stops_the_task_and_says_so(
    aws: str, rig: SlurmRig, host: Host, ssm_standin: Tools, tmp_path: Path, monkeypatch: Any
) -> None:
    set_console(monkeypatch, [rig_host_key(rig)])
    backend = make_backend(rig, host, tmp_path)
    slow = job(backend, 1, "echo started; sleep 60; echo never", time_limit_s=2)

    async def body(backend: EC2Backend) -> PollResult:
        (instance,) = await submit(backend, slow)
        host.run_user_data(user_data(instance), timeout=60)
        return await backend.poll([ref(slow, instance)])

    status = next(iter(drive(backend, body).jobs.values()))
    assert (status.state, status.exit_code) == (JobState.FAILED, 124)
    assert status.reason == "time limit of 2 s reached"
    text = Path(slow.paths.stdout).read_text()
    assert "started" in text and "never" not in text
    assert "time limit of 2 s was reached" in text


def test_an_image_that_cannot_be_pulled_fails_the_task(
    aws: str, rig: SlurmRig, host: Host, ssm_standin: Tools, tmp_path: Path, monkeypatch: Any
) -> None:
    set_console(monkeypatch, [rig_host_key(rig)])
    backend = make_backend(rig, host, tmp_path)
    spec = job(backend, 1, "echo hi", image="example.org/missing:1")

    async def body(backend: EC2Backend) -> PollResult:
        (instance,) = await submit(backend, spec)
        host.run_user_data(user_data(instance))
        return await backend.poll([ref(spec, instance)])

    status = next(iter(drive(backend, body).jobs.values()))
    assert status.state == JobState.FAILED
    assert status.reason is not None and "could not be pulled" in status.reason
    assert "pull access denied" in Path(spec.paths.stdout).read_text()


def test_a_host_key_other_than_the_reported_one_is_refused(
    aws: str, rig: SlurmRig, host: Host, ssm_standin: Tools, tmp_path: Path, monkeypatch: Any
) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    set_console(monkeypatch, [other])
    backend = make_backend(rig, host, tmp_path)
    spec = job(backend, 1, "echo hi")

    async def body(backend: EC2Backend) -> PollResult:
        (instance,) = await submit(backend, spec)
        host.run_user_data(user_data(instance))
        return await backend.poll([ref(spec, instance)])

    status = next(iter(drive(backend, body).jobs.values()))
    assert status.state == JobState.RUNNING
    assert status.reason is not None and "host key" in status.reason
    assert not Path(spec.paths.stdout).exists()


def test_no_host_key_on_the_console_yet_means_still_running(
    aws: str, rig: SlurmRig, host: Host, ssm_standin: Tools, tmp_path: Path, monkeypatch: Any
) -> None:
    set_console(monkeypatch, [])
    backend = make_backend(rig, host, tmp_path)
    spec = job(backend, 1, "echo hi")

    async def body(backend: EC2Backend) -> PollResult:
        (instance,) = await submit(backend, spec)
        return await backend.poll([ref(spec, instance)])

    status = next(iter(drive(backend, body).jobs.values()))
    assert status.state == JobState.RUNNING
    assert status.reason is not None and "host keys" in status.reason
    assert ssm_standin.forwards() == []


def test_cancel_terminates_and_the_poll_says_cancelled(
    aws: str, rig: SlurmRig, host: Host, ssm_standin: Tools, tmp_path: Path
) -> None:
    backend = make_backend(rig, host, tmp_path)
    spec = job(backend, 1, "sleep 600")

    async def body(backend: EC2Backend) -> PollResult:
        (instance,) = await submit(backend, spec)
        await backend.cancel([instance])
        await backend.cancel([instance])  # twice, and unknown ids, change nothing
        await backend.cancel(["i-0123456789abcdef0"])
        return await backend.poll([ref(spec, instance)])

    status = next(iter(drive(backend, body).jobs.values()))
    assert status.state == JobState.CANCELLED
    assert state(status.job_id) == "terminated"


def test_an_instance_that_never_runs_is_terminated_and_its_task_failed(
    aws: str, rig: SlurmRig, host: Host, ssm_standin: Tools, tmp_path: Path
) -> None:
    backend = make_backend(rig, host, tmp_path)
    spec = job(backend, 1, "echo hi")

    async def body(backend: EC2Backend) -> tuple[PollResult, PollResult]:
        (instance,) = await submit(backend, spec)
        stuck = moto_instance(instance)
        stuck._state.name, stuck._state.code = "pending", 0
        early = await backend.poll([ref(spec, instance)])
        backend.startup_timeout_s = 0.5
        await asyncio.sleep(1)
        return early, await backend.poll([ref(spec, instance)])

    early, late = drive(backend, body)
    assert next(iter(early.jobs.values())).state == JobState.PENDING
    status = next(iter(late.jobs.values()))
    assert status.state == JobState.FAILED
    assert status.reason is not None and "did not reach running within" in status.reason
    assert state(status.job_id) == "terminated"


def test_max_instances_refuses_submissions_above_the_cap(
    aws: str, rig: SlurmRig, host: Host, ssm_standin: Tools, tmp_path: Path
) -> None:
    backend = make_backend(rig, host, tmp_path, max_instances=2)
    specs = [job(backend, i, "echo hi") for i in range(1, 4)]

    async def body(backend: EC2Backend) -> tuple[list[Any], int | None]:
        outcomes = await backend.submit(specs)
        return outcomes, backend.free_slots()

    outcomes, free = drive(backend, body)
    assert [o.job_id is not None for o in outcomes] == [True, True, False]
    assert (
        outcomes[2].error == "max_instances (2) reached: 0 instance(s) of backend 'cloud' are live"
    )
    assert free == 0
    assert backend.max_concurrent == 2


def test_a_restarted_backend_finds_and_adopts_its_instances(
    aws: str, rig: SlurmRig, host: Host, ssm_standin: Tools, tmp_path: Path, monkeypatch: Any
) -> None:
    set_console(monkeypatch, [rig_host_key(rig)])
    first = make_backend(rig, host, tmp_path)
    spec = job(first, 1, "echo adopted")
    other = job(first, 2, "echo not tracked")
    (instance, untracked) = drive(first, lambda b: submit(b, spec, other))
    # A new backend (the engine restarted): the intent's tag finds the instance, the poll
    # reads it to the end, and the instance it does not track is listed as external.
    second = make_backend(rig, host, tmp_path)
    host.run_user_data(user_data(instance))

    async def body(backend: EC2Backend) -> tuple[dict[str, str] | None, PollResult]:
        found = await backend.find([spec.tag, "hut.none.1.1"])
        return found, await backend.poll([ref(spec, instance)])

    found, result = drive(second, body)
    assert found == {spec.tag: instance}
    assert result.jobs[instance].state == JobState.COMPLETED
    assert "adopted" in Path(spec.paths.stdout).read_text()
    assert [s.job_id for s in result.external or []] == [untracked]


def test_missing_port_forward_tools_are_named_with_what_to_install(
    aws: str, rig: SlurmRig, host: Host, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    backend = make_backend(rig, host, tmp_path)
    spec = job(backend, 1, "echo hi")
    with pytest.raises(ScriptHutError, match="aws and session-manager-plugin not found"):
        drive(backend, lambda b: b.submit([spec]))
    assert client("ec2").describe_instances()["Reservations"] == []


def test_bad_tasks_are_refused_before_anything_is_launched(
    aws: str, rig: SlurmRig, host: Host, tmp_path: Path
) -> None:
    backend = make_backend(rig, host, tmp_path, instance_types={"gpu": "g5.xlarge"})
    with pytest.raises(ScriptHutError, match="no instance type for partition 'normal'"):
        job(backend, 1, "echo hi", partition="normal")
    no_image = make_backend(rig, host, tmp_path, default_image=None)
    with pytest.raises(ScriptHutError, match="has no image and backend 'cloud' has no default"):
        job(no_image, 1, "echo hi")
