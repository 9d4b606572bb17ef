"""The Slurm backend against the real rig: over SSH as hutuser, and over the local shell as root.

Every test works in a directory of its own (`~/hut-tests/<uuid>` on the rig, a tmp dir for the
local shell) and only looks at its own jobs: the rig is shared.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from scripthut.backends.base import JobPaths, JobRef, JobSpec, JobStatus, PollResult
from scripthut.backends.registry import create_backend
from scripthut.backends.slurm import SlurmBackend
from scripthut.config import Config, parse_config
from scripthut.states import JobState
from scripthut.transport import TransportError
from scripthut.workflow.env import resolve_env
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.script import render_task_script
from tests.slurm.conftest import SlurmRig

T = TypeVar("T")
TRANSPORTS = ("ssh", "local")


# --- helpers shared with the workflow and fault tests ---------------------------------------


def rig_backend_entry(rig: SlurmRig, transport: str, log_dir: str, **extra: Any) -> dict[str, Any]:
    """A `backends:` entry for the rig (host keys verified against the rig's known_hosts)."""
    entry: dict[str, Any] = {
        "name": "rig",
        "type": "slurm",
        "transport": transport,
        "log_dir": log_dir,
        "max_concurrent": 50,
    }
    if transport == "ssh":
        entry["ssh"] = {
            "host": rig.ssh_host,
            "port": rig.ssh_port,
            "user": rig.ssh_user,
            "key_path": str(rig.ssh_key),
            "known_hosts": str(rig.known_hosts),
            "connect_timeout": 10,
        }
    entry.update(extra)
    return entry


def rig_config(rig: SlurmRig, transport: str, log_dir: str, data_dir: Path, **extra: Any) -> Config:
    return parse_config(
        {
            "backends": [rig_backend_entry(rig, transport, log_dir, **extra)],
            "settings": {"data_dir": str(data_dir), "poll_interval": 2},
        },
        source="test",
    )


@dataclass
class Place:
    """Where a test keeps its files: as the backend names it, and as this machine sees it."""

    transport: str
    log_dir: str
    local_dir: Path


def unique_place(rig: SlurmRig, transport: str, tmp_path: Path) -> Place:
    if transport == "ssh":
        name = f"hut-tests/{uuid.uuid4().hex[:12]}"
        return Place(transport, f"~/{name}", Path(rig.remote_home) / name)
    return Place(transport, str(tmp_path / "slurm-logs"), tmp_path / "slurm-logs")


def remove_place(rig: SlurmRig, place: Place) -> None:
    if place.transport == "ssh":
        subprocess.run(
            rig.ssh_argv("rm", "-rf", "--", place.log_dir.removeprefix("~/")),
            capture_output=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def place(slurm_rig: SlurmRig, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Place]:
    where = unique_place(slurm_rig, request.param, tmp_path)
    yield where
    remove_place(slurm_rig, where)


def make_backend(rig: SlurmRig, place: Place, tmp_path: Path, **extra: Any) -> SlurmBackend:
    config = rig_config(rig, place.transport, place.log_dir, tmp_path / "data", **extra)
    backend = create_backend(config, config.backend("rig"))
    assert isinstance(backend, SlurmBackend)
    return backend


def job_spec(
    backend: SlurmBackend,
    run_id: str,
    index: int,
    command: str,
    *,
    name: str | None = None,
    partition: str = "debug",
    time_limit_s: int = 600,
    paths: JobPaths | None = None,
) -> JobSpec:
    """A job exactly as the engine builds one: the task script, then the #SBATCH header."""
    task = TaskSpec(
        id=f"t{index}",
        command=command,
        name=name or f"t{index}",
        partition=partition,
        memory="100M",
        memory_mb=100,
        time_limit_s=time_limit_s,
    )
    paths = paths or backend.job_paths(run_id, task.id, 1)
    tag = f"hut.{run_id}.{index}.1"
    body = render_task_script(task, resolve_env([], {}, {}), exit_path=paths.exit_code, tag=tag)
    spec = JobSpec(
        tag=tag,
        run_id=run_id,
        task_id=task.id,
        attempt=1,
        name=task.name,
        script="",
        paths=paths,
        working_dir="~",
        memory_mb=100,
        time_limit_s=time_limit_s,
        partition=partition,
    )
    return replace(spec, script=backend.render_script(spec, body))


def run_id() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


async def poll_until(
    backend: SlurmBackend,
    refs: Sequence[JobRef],
    done: Callable[[dict[str, JobStatus]], bool],
    timeout: float = 90,
) -> dict[str, JobStatus]:
    """Poll until `done(statuses)`; every poll must succeed."""
    deadline = time.monotonic() + timeout
    while True:
        result = await backend.poll(refs)
        assert result.ok, result.error
        if done(result.jobs) or time.monotonic() > deadline:
            return result.jobs
        await asyncio.sleep(1)


def all_final(statuses: dict[str, JobStatus]) -> bool:
    return all(status.state.is_final for status in statuses.values())


def with_backend(backend: SlurmBackend, body: Callable[[SlurmBackend], Awaitable[T]]) -> T:
    async def main() -> T:
        await backend.start()
        try:
            return await body(backend)
        finally:
            await backend.close()

    return asyncio.run(main())


def refs_for(specs: Sequence[JobSpec], job_ids: Sequence[str | None]) -> list[JobRef]:
    return [
        JobRef(job_id, spec.tag, spec.paths, spec.time_limit_s)
        for spec, job_id in zip(specs, job_ids, strict=True)
        if job_id is not None
    ]


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("place", TRANSPORTS, indirect=True)
def test_submit_poll_logs_find_and_info(slurm_rig: SlurmRig, place: Place, tmp_path: Path) -> None:
    backend = make_backend(slurm_rig, place, tmp_path)
    rid = run_id()
    name = "hello | world, a  b ✓"

    async def body(slurm: SlurmBackend) -> None:
        specs = [
            job_spec(
                slurm, rid, 0, 'printf "out:%s\\n" "$SCRIPTHUT_TASK_ID"; echo err >&2', name=name
            ),
            job_spec(slurm, rid, 1, "echo failing; exit 7", partition="normal"),
            job_spec(slurm, rid, 2, "true", partition="no-such-partition"),
        ]
        outcomes = await slurm.submit(specs)
        assert outcomes[0].job_id and outcomes[1].job_id
        assert outcomes[2].job_id is None
        assert "Invalid partition name specified" in (outcomes[2].error or "")
        refs = refs_for(specs, [o.job_id for o in outcomes])
        statuses = await poll_until(slurm, refs, all_final)
        ok, bad = statuses[refs[0].job_id], statuses[refs[1].job_id]
        assert (ok.state, ok.exit_code, ok.raw_state) == (JobState.COMPLETED, 0, "COMPLETED")
        assert ok.name == name
        assert (bad.state, bad.exit_code, bad.reason) == (JobState.FAILED, 7, "exit code 7")
        assert bad.partition == "normal"
        assert ok.efficiency is not None and "elapsed_s" in ok.efficiency

        out = await slurm.read_log(specs[0].paths.stdout)
        assert (out.data, out.offset, out.size, out.missing) == (b"out:t0\n", 0, 7, False)
        assert (await slurm.read_log(specs[0].paths.stderr)).data == b"err\n"
        tail = await slurm.read_log(specs[0].paths.stdout, offset=-3)
        assert (tail.data, tail.offset) == (b"t0\n", 4)
        middle = await slurm.read_log(specs[0].paths.stdout, offset=1, limit=3)
        assert (middle.data, middle.next_offset) == (b"ut:", 4)
        assert (await slurm.read_log(specs[2].paths.stdout)).missing
        assert await slurm.read_text(specs[1].paths.exit_code) == "7\n"
        assert Path(specs[0].paths.stdout).parts[-1] == "t0.1.out"
        assert specs[0].paths.stdout.startswith("/")  # `~` resolved to the remote home

        found = await slurm.find([spec.tag for spec in specs] + [f"hut.{rid}.9.1"])
        assert found == {specs[0].tag: refs[0].job_id, specs[1].tag: refs[1].job_id}
        # Without the tag index, the jobs' --comment in squeue/sacct finds them.
        index = f"{slurm.host.absolute(slurm.log_dir)}/.tags"
        assert (await slurm.transport.run(["rm", "-rf", "--", index])).ok
        again = await slurm.find([spec.tag for spec in specs] + [f"hut.{rid}.9.1"])
        assert again == found

        info = await slurm.info()
        assert info.reachable, info.message
        assert {p.name for p in info.partitions} >= set(slurm_rig.partitions)
        assert info.cpus_total == slurm_rig.cpus
        assert info.queue_depth is not None and info.queue_depth >= 0

    with_backend(backend, body)


@pytest.mark.parametrize("place", TRANSPORTS, indirect=True)
def test_cancel_running_and_pending_jobs(slurm_rig: SlurmRig, place: Place, tmp_path: Path) -> None:
    backend = make_backend(slurm_rig, place, tmp_path)
    rid = run_id()

    async def body(slurm: SlurmBackend) -> None:
        specs = [
            job_spec(slurm, rid, 0, "echo started; sleep 300"),
            job_spec(slurm, rid, 1, "sleep 300"),
        ]
        outcomes = await slurm.submit(specs)
        refs = refs_for(specs, [o.job_id for o in outcomes])
        try:
            await poll_until(
                slurm, refs[:1], lambda s: all(x.state is JobState.RUNNING for x in s.values())
            )
            await slurm.cancel([ref.job_id for ref in refs] + ["not-an-id"])
            statuses = await poll_until(slurm, refs, all_final, timeout=60)
        finally:
            await slurm.cancel([ref.job_id for ref in refs])
        for ref in refs:
            status = statuses[ref.job_id]
            assert status.state is JobState.CANCELLED, status
            assert (status.reason or "").startswith("cancelled")
        await slurm.cancel([ref.job_id for ref in refs])  # again: already ended is no error

    with_backend(backend, body)


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_timeout_is_failed_with_its_reason(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    """TIMEOUT for real, fast: root moves the running job's end time to now.

    (A `--time=1` job would take ~86 s on the rig.) Slurm then ends it at its next
    time-limit check as TIMEOUT; the task script records 143 for the SIGTERM.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root (scontrol update EndTime) to time a job out quickly")
    backend = make_backend(slurm_rig, place, tmp_path)
    rid = run_id()

    async def body(slurm: SlurmBackend) -> None:
        spec = job_spec(slurm, rid, 0, "echo waiting; sleep 600", time_limit_s=300)
        (outcome,) = await slurm.submit([spec])
        assert outcome.job_id is not None
        refs = refs_for([spec], [outcome.job_id])
        try:
            await poll_until(
                slurm, refs, lambda s: all(x.state is JobState.RUNNING for x in s.values())
            )
            subprocess.run(
                ["scontrol", "update", f"jobid={outcome.job_id}", "EndTime=now"], check=True
            )
            statuses = await poll_until(slurm, refs, all_final, timeout=120)
        finally:
            await slurm.cancel([outcome.job_id])
        status = statuses[outcome.job_id]
        assert (status.state, status.raw_state) == (JobState.FAILED, "TIMEOUT")
        assert status.reason == "time limit exceeded"
        assert status.exit_code == 143

    with_backend(backend, body)


@pytest.mark.parametrize("place", TRANSPORTS, indirect=True)
def test_other_jobs_of_the_user_are_external(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    backend = make_backend(slurm_rig, place, tmp_path)
    name = f"mine | not hut's {uuid.uuid4().hex[:6]}"
    argv = ["sbatch", "--parsable", "--hold", f"--job-name={name}", "--output=/dev/null"]
    script = b"#!/bin/bash\ntrue\n"
    if place.transport == "ssh":
        argv = slurm_rig.ssh_argv(*map(shlex.quote, argv))
    submitted = subprocess.run(argv, input=script, capture_output=True, check=True, timeout=60)
    job_id = submitted.stdout.decode().strip()

    async def body(slurm: SlurmBackend) -> PollResult:
        try:
            return await slurm.poll([])
        finally:
            await slurm.cancel([job_id])

    result = with_backend(backend, body)
    assert result.ok and result.external is not None
    (mine,) = [s for s in result.external if s.job_id == job_id]
    assert mine.external and mine.name == name
    assert (mine.state, mine.reason, mine.partition) == (JobState.PENDING, "JobHeldUser", "debug")
    assert mine.submitted_at is not None and abs(mine.submitted_at - time.time()) < 300
    assert all(not (s.name or "").startswith("hut.") for s in result.external)


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_a_job_nothing_knows_is_unknown_then_failed(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    backend = make_backend(slurm_rig, place, tmp_path)
    backend.missing_grace_s = 2
    paths = backend.job_paths("never", "t0", 1)
    ref = JobRef("1999999999", "hut.never.0.1", paths)

    async def body(slurm: SlurmBackend) -> tuple[JobStatus, JobStatus]:
        first = (await slurm.poll([ref])).jobs[ref.job_id]
        await asyncio.sleep(2.5)
        second = (await slurm.poll([ref])).jobs[ref.job_id]
        return first, second

    first, second = with_backend(backend, body)
    assert first.state is JobState.UNKNOWN
    assert (second.state, second.raw_state) == (JobState.FAILED, "LOST")
    assert "left Slurm's queue" in (second.reason or "")


def test_an_unreachable_cluster_is_unknown_never_failed(
    slurm_rig: SlurmRig, tmp_path: Path
) -> None:
    place = Place("ssh", "~/hut-tests/unreachable", tmp_path)
    closed_port = {"ssh": {**rig_backend_entry(slurm_rig, "ssh", "x")["ssh"], "port": 1}}
    config = rig_config(slurm_rig, "ssh", place.log_dir, tmp_path / "data", **closed_port)
    backend = create_backend(config, config.backend("rig"))
    assert isinstance(backend, SlurmBackend)
    spec = job_spec(backend, "r", 0, "true")
    ref = JobRef("123", spec.tag, spec.paths)

    async def body(slurm: SlurmBackend) -> None:
        result = await slurm.poll([ref])
        assert not result.ok and result.jobs == {}
        with pytest.raises(TransportError):  # a look-up that cannot be made: never "absent"
            await slurm.find([spec.tag])
        info = await slurm.info()
        assert not info.reachable and info.message
        with pytest.raises(TransportError):
            await slurm.submit([spec])

    with_backend(backend, body)


@pytest.mark.parametrize("place", TRANSPORTS, indirect=True)
def test_odd_log_paths_are_written_exactly_where_asked(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    """Spaces, quotes, `%j`-like patterns and `#` in --output/--error paths."""
    backend = make_backend(slurm_rig, place, tmp_path)
    rid = run_id()
    odd = f'{place.log_dir}/odd dir/it\'s %j "q" #1'

    async def body(slurm: SlurmBackend) -> None:
        default = slurm.job_paths(rid, "t0", 1)
        paths = replace(default, stdout=f"{odd}.out", stderr=f"{odd} %x.err")
        spec = job_spec(slurm, rid, 0, "echo to-out; echo to-err >&2", paths=paths)
        (outcome,) = await slurm.submit([spec])
        assert outcome.job_id is not None, outcome.error
        statuses = await poll_until(slurm, refs_for([spec], [outcome.job_id]), all_final)
        assert statuses[outcome.job_id].state is JobState.COMPLETED
        assert (await slurm.read_log(paths.stdout)).data == b"to-out\n"
        assert (await slurm.read_log(paths.stderr)).data == b"to-err\n"

    with_backend(backend, body)
    assert (place.local_dir / "odd dir" / 'it\'s %j "q" #1.out').read_text() == "to-out\n"
