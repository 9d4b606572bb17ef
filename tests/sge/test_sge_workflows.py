"""Whole workflows through the real Engine on the rig's Grid Engine, over SSH.

Dependencies, wildcards, a failing task and its cascade, a cancelled run; then the Slurm
suite's hostile text (quotes, `$(...)`, backticks, `;`, newlines, a heredoc-terminator line,
non-ASCII) in names, commands, working dirs, env values and log paths: it runs exactly as
written (checked byte for byte in the job's own output) or is refused at validation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from scripthut.backends import sge_parse as gp
from scripthut.backends.base import JobRef
from scripthut.backends.sge import SGEBackend
from scripthut.config import Config
from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.sge.conftest import SGERig
from tests.sge.test_sge_backend import log_dir as log_dir  # the fixture
from tests.sge.test_sge_backend import rig_config
from tests.slurm.test_slurm_workflows import COMMAND, EXPECTED, NAME, ODD

T = TypeVar("T")
MEM = "100M"


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


def sge_of(engine: Engine) -> SGEBackend:
    backend = engine.registry.get("rig")
    assert isinstance(backend, SGEBackend)
    return backend


def absolute(rig: SGERig, log_dir: str) -> str:
    return f"{rig.remote_home}/{log_dir[2:]}"


def test_dependencies_wildcards_a_failure_and_a_cancel(
    sge_rig: SGERig, log_dir: str, tmp_path: Path
) -> None:
    config = rig_config(sge_rig, log_dir, tmp_path / "data")
    work = absolute(sge_rig, log_dir)
    doc: list[dict[str, Any]] = [
        {"id": "prep", "command": "echo prepared > prep.txt", "working_dir": work},
        *(
            {
                "id": f"sim.{i}",
                "command": f"cat prep.txt; echo sim {i} > sim.{i}.txt",
                "working_dir": work,
                "deps": ["prep"],
                "cpus": 2,
            }
            for i in (1, 2, 3)
        ),
        {"id": "gather", "command": "cat sim.*.txt", "working_dir": work, "deps": ["sim.*"]},
        {"id": "bad", "command": "echo going wrong >&2; exit 5", "deps": ["sim.1"]},
        {"id": "after-bad", "command": "echo never", "deps": ["bad"]},
    ]
    for task in doc:
        task["memory"] = MEM
    slow = [{"id": "slow", "command": "sleep 120", "memory": MEM}]

    async def body(engine: Engine) -> dict[str, Any]:
        record = engine.submit(parse_document(doc), name="wf")
        doomed = engine.submit(parse_document(slow), name="doomed")
        for _ in range(120):
            if engine.store.tasks(doomed.id)[0].state not in (
                TaskState.PENDING,
                TaskState.SUBMITTED,
            ):
                break
            await asyncio.sleep(0.5)
        await engine.cancel(doomed.id)
        final = await engine.wait(record.id, timeout=180)
        cancelled = await engine.wait(doomed.id, timeout=60)
        store, sge = engine.store, sge_of(engine)
        got: dict[str, Any] = {"state": final.state, "cancelled": cancelled.state}
        for task in store.tasks(record.id):
            attempt = store.attempt(record.id, task.task_id) if task.attempt else None
            out = await sge.read_log(attempt.stdout_path) if attempt else None
            err = await sge.read_log(attempt.stderr_path) if attempt else None
            got[task.task_id] = (
                task.state,
                task.exit_code,
                task.reason,
                out.data if out else None,
                err.data if err else None,
                attempt.job_id if attempt else None,
            )
        got["slow"] = store.tasks(doomed.id)[0].state
        return got

    got = drive(config, body)
    assert got["state"] == RunState.FAILED
    assert got["prep"][:2] == (TaskState.COMPLETED, 0)
    for i in (1, 2, 3):
        assert got[f"sim.{i}"][:2] == (TaskState.COMPLETED, 0)
        assert got[f"sim.{i}"][3] == b"prepared\n"
    assert got["gather"][:2] == (TaskState.COMPLETED, 0)
    assert got["gather"][3] == b"sim 1\nsim 2\nsim 3\n"
    assert got["bad"][:3] == (TaskState.FAILED, 5, "exit code 5")
    assert got["bad"][4] == b"going wrong\n"
    assert got["after-bad"][0] == TaskState.DEP_FAILED
    assert got["after-bad"][5] is None  # never submitted
    job_ids = [v[5] for v in got.values() if isinstance(v, tuple) and v[5]]
    assert len(set(job_ids)) == 6 and all(gp.is_job_id(j) for j in job_ids)
    assert (got["cancelled"], got["slow"]) == (RunState.CANCELLED, TaskState.CANCELLED)


def test_hostile_text_runs_exactly_as_written(
    sge_rig: SGERig, log_dir: str, tmp_path: Path
) -> None:
    config = rig_config(sge_rig, log_dir, tmp_path / "data")
    work = absolute(sge_rig, log_dir)
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
                "error_file": "err $(x):y,z.log",
                "deps": ["mkdir"],
                "memory": MEM,
            },
            {
                "id": "where",
                "command": 'printf "%s\\n" "$PWD"',
                "working_dir": odd_dir,
                "deps": ["mkdir"],
                "memory": MEM,
            },
            {"id": "badqueue", "command": "true", "partition": "a;b", "memory": MEM},
        ],
    }

    async def body(engine: Engine) -> dict[str, Any]:
        record = engine.submit(parse_document(doc), name="hostile")
        final = await engine.wait(record.id, timeout=120)
        store, sge = engine.store, sge_of(engine)
        hostile = store.attempt(record.id, "hostile")
        where = store.attempt(record.id, "where")
        assert hostile.job_id is not None
        paths = (hostile.stdout_path, hostile.stderr_path, hostile.exit_path, hostile.script_path)
        from scripthut.backends.base import JobPaths

        seen = await sge.poll([JobRef(hostile.job_id, hostile.tag, JobPaths(*paths))])
        home = sge.host.home or "/nonexistent"
        listing = await sge.transport.run(["ls", "-A", "--", home, work, odd_dir])
        return {
            "state": final.state,
            "tasks": {t.task_id: (t.state, t.reason) for t in store.tasks(record.id)},
            "out": (await sge.read_log(hostile.stdout_path)).data,
            "err": (await sge.read_log(hostile.stderr_path)).data,
            "paths": (hostile.stdout_path, hostile.stderr_path),
            "where": (await sge.read_log(where.stdout_path)).data,
            "name": seen.jobs[hostile.job_id].name,
            "listing": listing.stdout,
        }

    got = drive(config, body)
    tasks = got["tasks"]
    assert tasks["mkdir"][0] == TaskState.COMPLETED
    assert tasks["hostile"][0] == TaskState.COMPLETED, tasks["hostile"]
    assert got["out"] == EXPECTED
    assert got["err"] == b""
    assert got["paths"] == (f"{odd_dir}/out 'file'.log", f"{odd_dir}/err $(x):y,z.log")
    assert got["where"] == f"{odd_dir}\n".encode()
    # Grid Engine job names cannot hold spaces or quotes: shown with `_` in their place.
    assert got["name"] and got["name"].startswith("name__q___dq")
    assert not [line for line in got["listing"].splitlines() if line.startswith("PWNED")]
    # A queue name Grid Engine would read as something else is refused before qsub.
    assert tasks["badqueue"][0] == TaskState.FAILED
    assert "queue" in (tasks["badqueue"][1] or "")
    assert got["state"] == RunState.FAILED


def test_users_own_jobs_are_listed_before_any_run(
    sge_rig: SGERig, log_dir: str, tmp_path: Path
) -> None:
    config = rig_config(sge_rig, log_dir, tmp_path / "data")
    job_id = sge_rig.ssh(
        "qsub -terse -h -N not-hut-own -S /bin/bash -o /dev/null -j y", stdin=b"true\n"
    ).strip()

    async def body(engine: Engine) -> list[tuple[str, str, str | None]]:
        try:
            for _ in range(60):
                external = engine.external_jobs().get("rig") or []
                seen = [
                    (j.name or "", j.raw_state, j.reason) for j in external if j.job_id == job_id
                ]
                if seen:
                    return seen
                await asyncio.sleep(0.5)
            return []
        finally:
            await engine.cancel_job("rig", job_id)

    ((name, raw, reason),) = drive(config, body)
    assert (name, raw) == ("not-hut-own", "hqw")
    assert reason is not None and "held" in reason
