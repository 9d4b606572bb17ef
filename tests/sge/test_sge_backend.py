"""The Grid Engine backend against the real rig over SSH: submit, poll, logs, find, info,
exit codes (exit-code file and qacct), a time limit, cancel, and the user's other jobs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from scripthut.backends.base import JobPaths, JobRef, JobSpec, JobStatus
from scripthut.backends.registry import create_backend
from scripthut.backends.sge import SGEBackend
from scripthut.config import Config, parse_config
from scripthut.states import JobState
from scripthut.workflow.env import resolve_env
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.script import render_task_script
from tests.sge.conftest import SGERig

T = TypeVar("T")


def rig_backend_entry(rig: SGERig, log_dir: str, **extra: Any) -> dict[str, Any]:
    """A `backends:` entry for the rig over SSH (host keys verified)."""
    entry: dict[str, Any] = {
        "name": "rig",
        "type": "sge",
        "log_dir": log_dir,
        "max_concurrent": 50,
        "parallel_env": rig.parallel_env,
        "ssh": {
            "host": rig.ssh_host,
            "port": rig.ssh_port,
            "user": rig.ssh_user,
            "key_path": str(rig.ssh_key),
            "known_hosts": str(rig.known_hosts),
            "connect_timeout": 10,
        },
    }
    entry.update(extra)
    return entry


def rig_config(rig: SGERig, log_dir: str, data_dir: Path, **extra: Any) -> Config:
    return parse_config(
        {
            "backends": [rig_backend_entry(rig, log_dir, **extra)],
            "settings": {"data_dir": str(data_dir), "poll_interval": 2},
        },
        source="test",
    )


@pytest.fixture
def log_dir(sge_rig: SGERig) -> Iterator[str]:
    """A fresh folder under the rig user's home, removed afterwards."""
    name = f"hut-sge-tests/{uuid.uuid4().hex[:12]}"
    yield f"~/{name}"
    sge_rig.ssh(f"rm -rf -- {name}")


def make_backend(rig: SGERig, log_dir: str, tmp_path: Path, **extra: Any) -> SGEBackend:
    config = rig_config(rig, log_dir, tmp_path / "data", **extra)
    backend = create_backend(config, config.backend("rig"))
    assert isinstance(backend, SGEBackend)
    return backend


def job_spec(
    backend: SGEBackend,
    run_id: str,
    index: int,
    command: str,
    *,
    name: str | None = None,
    cpus: int = 1,
    time_limit_s: int = 600,
) -> JobSpec:
    """A job exactly as the engine builds one: the task script, then the `#$` header."""
    task = TaskSpec(
        id=f"t{index}",
        command=command,
        name=name or f"t{index}",
        cpus=cpus,
        memory="100M",
        memory_mb=100,
        time_limit_s=time_limit_s,
    )
    paths = backend.job_paths(run_id, task.id, 1)
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
        cpus=cpus,
        memory_mb=100,
        time_limit_s=time_limit_s,
    )
    return replace(spec, script=backend.render_script(spec, body))


def run_id() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


async def poll_until(
    backend: SGEBackend,
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


def with_backend(backend: SGEBackend, body: Callable[[SGEBackend], Awaitable[T]]) -> T:
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


def test_submit_poll_logs_find_and_info(sge_rig: SGERig, log_dir: str, tmp_path: Path) -> None:
    backend = make_backend(sge_rig, log_dir, tmp_path)
    rid = run_id()

    async def body(sge: SGEBackend) -> dict[str, Any]:
        specs = [
            job_spec(sge, rid, 0, "echo out; echo err >&2", name="hello | world, a b ✓"),
            job_spec(sge, rid, 1, "echo two cpus $NSLOTS", cpus=2),
            job_spec(sge, rid, 2, "exit 7"),
        ]
        outcomes = await sge.submit(specs)
        ids = [o.job_id for o in outcomes]
        refs = refs_for(specs, ids)
        statuses = await poll_until(sge, refs, all_final)
        found = await sge.find([s.tag for s in specs] + ["hut.never-submitted"])
        logs = [await sge.read_log(s.paths.stdout) for s in specs]
        err = await sge.read_log(specs[0].paths.stderr)
        tail = await sge.read_log(specs[0].paths.stdout, offset=-2)
        return {
            "outcomes": outcomes,
            "ids": ids,
            "statuses": [statuses[i] for i in ids if i],
            "found": found,
            "logs": [c.data for c in logs],
            "err": err.data,
            "tail": tail,
            "info": await sge.info(),
        }

    got = with_backend(backend, body)
    assert all(o.error is None and o.job_id and o.job_id.isdigit() for o in got["outcomes"])
    first, second, third = got["statuses"]
    assert (first.state, first.exit_code) == (JobState.COMPLETED, 0)
    assert first.name == "hello___world__a_b__"  # Grid Engine refuses spaces and `|,`
    assert first.efficiency is not None and "elapsed_s" in first.efficiency
    assert (second.state, second.cpus) == (JobState.COMPLETED, 2)
    assert (third.state, third.exit_code, third.reason) == (JobState.FAILED, 7, "exit code 7")
    assert got["logs"][:2] == [b"out\n", b"two cpus 2\n"]
    assert got["err"] == b"err\n"
    assert (got["tail"].data, got["tail"].offset) == (b"t\n", 2)
    tags = [f"hut.{rid}.{i}.1" for i in range(3)]
    assert got["found"] == dict(zip(tags, got["ids"], strict=True))
    info = got["info"]
    assert info.reachable and info.cpus_total and info.cpus_total >= 1
    assert [p.name for p in info.partitions] == [sge_rig.queue]
    assert info.partitions[0].cpus_total == sge_rig.slots


def test_time_limit_cancel_and_qacct_without_exit_file(
    sge_rig: SGERig, log_dir: str, tmp_path: Path
) -> None:
    """A job killed at its h_rt and a cancelled one write no exit file: qacct says why."""
    backend = make_backend(sge_rig, log_dir, tmp_path)
    rid = run_id()

    async def body(sge: SGEBackend) -> list[JobStatus]:
        specs = [
            job_spec(sge, rid, 0, "sleep 60", time_limit_s=2),
            job_spec(sge, rid, 1, "sleep 60"),
        ]
        ids = [o.job_id for o in await sge.submit(specs)]
        refs = refs_for(specs, ids)
        await poll_until(sge, refs[1:], lambda s: s[refs[1].job_id].state == JobState.RUNNING)
        await sge.cancel([refs[1].job_id, "999999"])  # an unknown id is not an error
        statuses = await poll_until(sge, refs, all_final)
        return [statuses[r.job_id] for r in refs]

    limited, cancelled = with_backend(backend, body)
    assert limited.state == JobState.FAILED
    assert "failed 37" in (limited.reason or ""), limited
    assert limited.efficiency and limited.efficiency["elapsed_s"] >= 2
    assert cancelled.state == JobState.FAILED  # the engine turns it into CANCELLED
    assert cancelled.raw_state.startswith("failed"), cancelled


def test_a_pending_job_deleted_is_cancelled_and_other_jobs_are_external(
    sge_rig: SGERig, log_dir: str, tmp_path: Path
) -> None:
    backend = make_backend(sge_rig, log_dir, tmp_path)
    rid = run_id()
    held = sge_rig.ssh(
        "qsub -terse -h -N not-hut -S /bin/bash -o /dev/null -j y", stdin=b"true\n"
    ).strip()

    async def body(sge: SGEBackend) -> tuple[list[JobStatus], JobStatus]:
        spec = job_spec(sge, rid, 0, "true")
        # held by the user: never runs until released; deleted while pending
        spec = replace(spec, script=spec.script.replace("#$ -j n", "#$ -j n\n#$ -h", 1))
        (outcome,) = await sge.submit([spec])
        assert outcome.job_id is not None
        ref = JobRef(outcome.job_id, spec.tag, spec.paths)
        first = await sge.poll([ref])
        external = [j for j in first.external or [] if j.job_id == held]
        await sge.cancel([outcome.job_id, held])
        sge.zombie_grace_s = 3
        final = await poll_until(sge, [ref], all_final, timeout=60)
        return external, final[outcome.job_id]

    external, final = with_backend(backend, body)
    assert len(external) == 1
    assert (external[0].name, external[0].raw_state, external[0].state) == (
        "not-hut",
        "hqw",
        JobState.PENDING,
    )
    assert external[0].external and "held" in (external[0].reason or "")
    assert final.state == JobState.CANCELLED
    assert "deleted while pending" in (final.reason or "")


def test_paths_are_absolute_and_unsafe_values_are_refused(
    sge_rig: SGERig, log_dir: str, tmp_path: Path
) -> None:
    backend = make_backend(sge_rig, log_dir, tmp_path, account="proj-1", queue=sge_rig.queue)

    async def body(sge: SGEBackend) -> JobPaths:
        return sge.job_paths("r1", "t1", 1)

    paths = with_backend(backend, body)
    assert paths.stdout == f"{sge_rig.remote_home}/{log_dir[2:]}/r1/t1.1.out"
    spec = job_spec(backend, "r1", 0, "true", cpus=4)
    assert "#$ -pe smp 4" in spec.script and "#$ -A proj-1" in spec.script
    assert "h_vmem=25M" in spec.script  # memory is per slot
    with pytest.raises(Exception, match="queue"):
        job_spec(make_backend(sge_rig, log_dir, tmp_path, queue="a b"), "r1", 0, "true")
    with pytest.raises(Exception, match="parallel_env"):
        job_spec(
            make_backend(sge_rig, log_dir, tmp_path, parallel_env=None), "r1", 0, "true", cpus=2
        )


def test_login_shell_runs_the_job_as_a_login_shell(
    sge_rig: SGERig, log_dir: str, tmp_path: Path
) -> None:
    """Grid Engine ignores `#!`: the script starts itself again as `bash -l`.

    (The rig, like Grid Engine's default `login_shells`, starts bash as a login shell anyway;
    the marker variable shows the script did start itself again.)"""
    command = 'echo "${__HUT_SGE_SHELL-none} $(shopt -q login_shell && echo login)"'

    async def body(sge: SGEBackend) -> bytes:
        spec = job_spec(sge, run_id(), 0, command)
        ids = [o.job_id for o in await sge.submit([spec])]
        await poll_until(sge, refs_for([spec], ids), all_final)
        return (await sge.read_log(spec.paths.stdout)).data

    login = make_backend(sge_rig, log_dir, tmp_path, login_shell=True)
    plain = make_backend(sge_rig, log_dir, tmp_path)
    assert with_backend(login, body) == b"1 login\n"
    assert with_backend(plain, body) == b"none login\n"
