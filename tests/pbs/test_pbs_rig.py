"""The PBS backend end to end over SSH (as the rig user) against the rig's Torque wrappers.

The wrappers are real qsub/qstat/qdel/pbsnodes commands over the rig's Slurm, with the
quirks of docs/backends/pbs.md: bare ids, `C` for every finished job and no exit status,
so outcomes come from the exit-code files. Every test works in a directory of its own
(`~/hut-tests/<uuid>`) and only looks at its own jobs: the rig is shared.
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from scripthut.backends.base import JobRef, JobSpec, JobStatus
from scripthut.backends.pbs import PBSBackend
from scripthut.backends.registry import create_backend
from scripthut.config import Config, parse_config
from scripthut.engine.engine import Engine
from scripthut.server.reads import jobs_json
from scripthut.states import JobState, RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.env import resolve_env
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.parse import parse_document
from scripthut.workflow.script import render_task_script
from tests.slurm.conftest import SlurmRig
from tests.slurm.test_slurm_workflows import COMMAND, EXPECTED, NAME, ODD

T = TypeVar("T")
MEM = "100M"


# --- helpers shared with the fault tests --------------------------------------------------------


def pbs_entry(rig: SlurmRig, log_dir: str, **extra: Any) -> dict[str, Any]:
    """A `type: pbs` backend entry for the rig over SSH (flavor learnt from the wrappers)."""
    entry: dict[str, Any] = {
        "name": "rig",
        "type": "pbs",
        "transport": "ssh",
        "log_dir": log_dir,
        "max_concurrent": 50,
        "bin_dir": rig.torque_bin,
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


def pbs_config(rig: SlurmRig, log_dir: str, data_dir: Path, **extra: Any) -> Config:
    return parse_config(
        {
            "backends": [pbs_entry(rig, log_dir, **extra)],
            "settings": {"data_dir": str(data_dir), "poll_interval": 2},
        },
        source="test",
    )


@pytest.fixture
def place(pbs_rig: SlurmRig) -> Iterator[str]:
    """`~/hut-tests/<uuid>` on the rig, removed afterwards."""
    name = f"hut-tests/pbs-{uuid.uuid4().hex[:12]}"
    yield f"~/{name}"
    subprocess.run(
        pbs_rig.ssh_argv("rm", "-rf", "--", name), capture_output=True, timeout=60, check=False
    )


def make_backend(rig: SlurmRig, log_dir: str, tmp_path: Path, **extra: Any) -> PBSBackend:
    config = pbs_config(rig, log_dir, tmp_path / "data", **extra)
    backend = create_backend(config, config.backend("rig"))
    assert isinstance(backend, PBSBackend)
    return backend


def job_spec(backend: PBSBackend, run_id: str, index: int, command: str) -> JobSpec:
    """A job exactly as the engine builds one: the task script, then the #PBS header."""
    task = TaskSpec(id=f"t{index}", command=command, name=f"t{index}", memory=MEM, memory_mb=100)
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
        memory_mb=100,
        time_limit_s=600,
        partition="debug",
    )
    return replace(spec, script=backend.render_script(spec, body))


async def poll_until(
    backend: PBSBackend,
    refs: Sequence[JobRef],
    done: Callable[[dict[str, JobStatus]], bool],
    timeout: float = 60,
) -> dict[str, JobStatus]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await backend.poll(refs)
        assert result.ok, result.error
        if done(result.jobs) or loop.time() > deadline:
            return result.jobs
        await asyncio.sleep(1)


def with_backend(backend: PBSBackend, body: Callable[[PBSBackend], Awaitable[T]]) -> T:
    async def main() -> T:
        await backend.start()
        try:
            return await body(backend)
        finally:
            await backend.close()

    return asyncio.run(main())


def drive(config: Config, body: Callable[[Engine], Awaitable[T]]) -> T:
    async def main() -> T:
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store, min_poll_interval=0.5)
        await engine.start()
        try:
            return await body(engine)
        finally:
            await engine.stop()
            store.close()

    return asyncio.run(main())


def qsub_own_job(rig: SlurmRig, place: str, name: str) -> str:
    """A held job of the rig user's, submitted by hand with the wrappers' qsub."""
    script = f"{place}/{name}.sh"
    qsub = f"{rig.torque_bin}/qsub"
    command = (
        f"mkdir -p {place} && printf '#!/bin/bash\\ntrue\\n' > {script} && "
        f"{shlex.quote(qsub)} -h -N {shlex.quote(name)} -o /dev/null -e /dev/null {script}"
    )
    done = subprocess.run(
        rig.ssh_argv(command), capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip().splitlines()[-1]


# --- the backend alone ----------------------------------------------------------------------


def test_submit_poll_logs_find_cancel_and_info(
    pbs_rig: SlurmRig, place: str, tmp_path: Path
) -> None:
    backend = make_backend(pbs_rig, place, tmp_path)
    run_id = f"test-{uuid.uuid4().hex[:10]}"
    specs = [
        job_spec(backend, run_id, 0, "echo hello; echo oops >&2"),
        job_spec(backend, run_id, 1, "echo failing; exit 3"),
        job_spec(backend, run_id, 2, "sleep 300"),
    ]

    async def body(pbs: PBSBackend) -> None:
        assert pbs.flavor == "torque"  # learnt from the wrappers' usage text
        outcomes = await pbs.submit(specs)
        assert all(o.job_id and o.job_id.isdigit() for o in outcomes), outcomes
        ids = [o.job_id or "" for o in outcomes]
        refs = [JobRef(i, s.tag, s.paths) for i, s in zip(ids, specs, strict=True)]
        statuses = await poll_until(
            pbs,
            refs,
            lambda s: (
                s[ids[0]].state.is_final
                and s[ids[1]].state.is_final
                and s[ids[2]].state is JobState.RUNNING
            ),
        )
        assert (statuses[ids[0]].state, statuses[ids[0]].exit_code) == (JobState.COMPLETED, 0)
        assert statuses[ids[0]].raw_state == "C"
        assert (statuses[ids[1]].state, statuses[ids[1]].reason) == (JobState.FAILED, "exit code 3")
        assert statuses[ids[2]].raw_state == "R" and statuses[ids[2]].node == "localhost"
        out = await pbs.read_log(specs[0].paths.stdout)
        assert out.data == b"hello\n"
        tail = await pbs.read_log(specs[0].paths.stdout, offset=2)
        assert (tail.data, tail.offset) == (b"llo\n", 2)
        assert (await pbs.read_log(specs[0].paths.stderr)).data == b"oops\n"
        # The index answers; without it, the job names in qstat -f do.
        assert await pbs.find([s.tag for s in specs]) == dict(
            zip([s.tag for s in specs], ids, strict=True)
        )
        await pbs.transport.run(["rm", "-f", "--", f"{pbs.log_dir}/.tags/{specs[2].tag}"])
        assert await pbs.find([specs[2].tag]) == {specs[2].tag: ids[2]}
        await pbs.cancel([ids[2]])
        ended = await poll_until(pbs, refs[2:], lambda s: s[ids[2]].state.is_final)
        assert ended[ids[2]].state is JobState.FAILED  # the engine calls it cancelled
        assert ended[ids[2]].exit_code == 143  # TERM, recorded by the script
        info = await pbs.info()
        assert info.reachable, info.message
        assert info.cpus_total == pbs_rig.cpus
        assert {p.name for p in info.partitions} >= set(pbs_rig.partitions)

    with_backend(backend, body)


def test_the_users_own_jobs_are_external_with_their_raw_state(
    pbs_rig: SlurmRig, place: str, tmp_path: Path
) -> None:
    name = f"not-hut-{uuid.uuid4().hex[:8]}"
    job_id = qsub_own_job(pbs_rig, place, name)
    config = pbs_config(pbs_rig, place, tmp_path / "data")

    async def body(engine: Engine) -> list[dict[str, Any]]:
        try:
            for _ in range(60):
                rows = jobs_json(engine, engine.store)["jobs"]
                mine = [row for row in rows if row["job_id"] == job_id]
                if mine:
                    return mine
                await asyncio.sleep(0.5)
            return []
        finally:
            await engine.cancel_job("rig", job_id)

    (row,) = drive(config, body)
    assert (row["source"], row["name"], row["state"]) == ("external", name, "pending")
    assert row["raw_state"] == "Q"  # the wrappers show a held job as Q
    assert row["user"] == pbs_rig.ssh_user


# --- whole workflows through the engine ----------------------------------------------------------


def test_dependencies_wildcards_and_a_failure(
    pbs_rig: SlurmRig, place: str, tmp_path: Path
) -> None:
    config = pbs_config(pbs_rig, place, tmp_path / "data")
    work = f"{pbs_rig.remote_home}/{place[2:]}"
    doc: list[dict[str, Any]] = [
        {"id": "prep", "command": f"mkdir -p {work} && echo prepared > {work}/prep.txt"},
        *(
            {
                "id": f"sim.{i}",
                "command": f"cat prep.txt; echo sim {i} > sim.{i}.txt",
                "working_dir": work,
                "deps": ["prep"],
            }
            for i in (1, 2)
        ),
        {"id": "gather", "command": "cat sim.*.txt", "working_dir": work, "deps": ["sim.*"]},
        {"id": "bad", "command": "echo going wrong >&2; exit 5", "deps": ["prep"]},
        {"id": "after-bad", "command": "echo never", "deps": ["bad"]},
    ]
    for task in doc:
        task["memory"] = MEM

    async def body(engine: Engine) -> dict[str, Any]:
        record = engine.submit(parse_document(doc), name="wf")
        final = await engine.wait(record.id, timeout=150)
        backend = engine.registry.get("rig")
        got: dict[str, Any] = {"state": final.state}
        for task in engine.store.tasks(record.id):
            attempt = engine.store.attempt(record.id, task.task_id) if task.attempt else None
            out = await backend.read_log(attempt.stdout_path) if attempt else None
            err = await backend.read_log(attempt.stderr_path) if attempt else None
            got[task.task_id] = (
                task.state,
                task.exit_code,
                out.data if out else None,
                err.data if err else None,
                attempt.raw_state if attempt else None,
            )
        return got

    got = drive(config, body)
    assert got["state"] == RunState.FAILED
    for i in (1, 2):
        assert got[f"sim.{i}"][:3] == (TaskState.COMPLETED, 0, b"prepared\n")
    assert got["gather"][:3] == (TaskState.COMPLETED, 0, b"sim 1\nsim 2\n")
    assert got["bad"][:4] == (TaskState.FAILED, 5, b"", b"going wrong\n")
    # The wrappers' only final state, or (an element of the array `bad` shares with sim.*,
    # decided by its exit file while its array still ran) the exit file's mark.
    assert got["bad"][4] in ("C", "EXIT_FILE")
    assert got["after-bad"][0] == TaskState.DEP_FAILED


def test_hostile_text_runs_exactly_as_written(
    pbs_rig: SlurmRig, place: str, tmp_path: Path
) -> None:
    config = pbs_config(pbs_rig, place, tmp_path / "data")
    work = f"{pbs_rig.remote_home}/{place[2:]}"
    odd_dir = f'{work}/wd it\'s "odd" $(touch PWNED6) `id` ; é'
    env = [{"set": {"ODD": ODD, "SEMI": "a;b&&c||d", "DOLLAR": "$HOME \\$ `x` $((1+1))"}}]
    doc = {
        "env": [{"set": {"ODD_DIR": odd_dir}}],
        "tasks": [
            {"id": "mkdir", "command": 'mkdir -p -- "$ODD_DIR"', "memory": MEM},
            {
                "id": "hostile",
                "name": NAME,
                "command": COMMAND,
                "env": env,
                "working_dir": odd_dir,
                "output_file": "out 'file'.log",
                "error_file": "a\\b $(x).err",
                "deps": ["mkdir"],
                "memory": MEM,
            },
            {"id": "queue", "command": "true", "partition": "debug -W x", "memory": MEM},
        ],
    }

    async def body(engine: Engine) -> dict[str, Any]:
        record = engine.submit(parse_document(doc), name="hostile")
        final = await engine.wait(record.id, timeout=120)
        backend = engine.registry.get("rig")
        hostile = engine.store.attempt(record.id, "hostile")
        listing = await backend.transport.run(["ls", "-A", "--", work, odd_dir])
        return {
            "state": final.state,
            "tasks": {t.task_id: (t.state, t.reason) for t in engine.store.tasks(record.id)},
            "out": (await backend.read_log(hostile.stdout_path)).data,
            "err_path": hostile.stderr_path,
            "listing": listing.stdout,
        }

    got = drive(config, body)
    tasks = got["tasks"]
    assert tasks["hostile"][0] == TaskState.COMPLETED, tasks["hostile"]
    assert got["out"] == EXPECTED
    assert got["err_path"] == f"{odd_dir}/a\\b $(x).err"
    assert "a\\b $(x).err" in got["listing"]  # PBS paths need no escaping: the script opens them
    assert not [line for line in got["listing"].splitlines() if line.startswith("PWNED")]
    # A queue a #PBS line cannot carry is refused before anything reaches qsub.
    assert tasks["queue"][0] == TaskState.FAILED
    assert "cannot be passed to qsub" in (tasks["queue"][1] or "")


def test_over_the_local_shell(pbs_rig: SlurmRig, tmp_path: Path) -> None:
    """Jupyter on the login node: the same commands without SSH (here as this machine's user)."""
    log_dir = str(tmp_path / "pbs-logs")
    config = parse_config(
        {
            "backends": [
                {
                    "name": "rig",
                    "type": "pbs",
                    "transport": "local",
                    "log_dir": log_dir,
                    "bin_dir": pbs_rig.torque_bin,
                }
            ],
            "settings": {"data_dir": str(tmp_path / "data")},
        },
        source="test",
    )
    backend = create_backend(config, config.backend("rig"))
    assert isinstance(backend, PBSBackend)
    run_id = f"test-{uuid.uuid4().hex[:10]}"
    specs = [job_spec(backend, run_id, 0, "echo local"), job_spec(backend, run_id, 1, "exit 7")]

    async def body(pbs: PBSBackend) -> dict[str, JobStatus]:
        outcomes = await pbs.submit(specs)
        ids = [o.job_id or "" for o in outcomes]
        refs = [JobRef(i, s.tag, s.paths) for i, s in zip(ids, specs, strict=True)]
        done = await poll_until(pbs, refs, lambda s: all(v.state.is_final for v in s.values()))
        return {spec.task_id: done[job_id] for spec, job_id in zip(specs, ids, strict=True)}

    got = with_backend(backend, body)
    assert (got["t0"].state, got["t1"].state, got["t1"].exit_code) == (
        JobState.COMPLETED,
        JobState.FAILED,
        7,
    )
    assert Path(specs[0].paths.stdout).read_bytes() == b"local\n"
