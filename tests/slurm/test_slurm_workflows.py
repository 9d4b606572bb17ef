"""Whole workflows through the real Engine on the rig's Slurm, over SSH and the local shell.

Dependencies, wildcards, a failing task and its cascade; then hostile text (quotes, `$(...)`,
backticks, `;`, newlines, a heredoc-terminator line, non-ASCII) in names, commands, working
dirs and env values: it runs exactly as written (checked byte for byte in the job's own
output, read back through the backend) or is refused at validation.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from scripthut.backends.base import JobRef
from scripthut.backends.slurm import SlurmBackend
from scripthut.config import Config
from scripthut.engine.engine import Engine
from scripthut.errors import InvalidInput
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.slurm.conftest import SlurmRig
from tests.slurm.test_slurm_backend import TRANSPORTS, Place, rig_config
from tests.slurm.test_slurm_backend import place as place  # the fixture

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


def absolute(rig: SlurmRig, place: Place) -> str:
    """The place's directory as a path the jobs see."""
    if place.log_dir.startswith("~/"):
        return f"{rig.remote_home}/{place.log_dir[2:]}"
    return place.log_dir


def slurm_of(engine: Engine) -> SlurmBackend:
    backend = engine.registry.get("rig")
    assert isinstance(backend, SlurmBackend)
    return backend


@pytest.mark.parametrize("place", TRANSPORTS, indirect=True)
def test_dependencies_wildcards_and_a_failure(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    config = rig_config(slurm_rig, place.transport, place.log_dir, tmp_path / "data")
    work = absolute(slurm_rig, place)
    doc = [
        {"id": "prep", "command": "echo prepared > prep.txt", "working_dir": work},
        *(
            {
                "id": f"sim.{i}",
                "command": f"cat prep.txt; echo sim {i} > sim.{i}.txt",
                "working_dir": work,
                "deps": ["prep"],
            }
            for i in (1, 2, 3)
        ),
        {
            "id": "gather",
            "command": "cat sim.*.txt",
            "working_dir": work,
            "deps": ["sim.*"],
        },
        {"id": "bad", "command": "echo going wrong >&2; exit 5", "deps": ["sim.1"]},
        {"id": "after-bad", "command": "echo never", "deps": ["bad"]},
    ]
    for task in doc:
        task["memory"] = MEM

    async def body(engine: Engine) -> dict[str, Any]:
        record = engine.submit(parse_document(doc), name="wf")
        final = await engine.wait(record.id, timeout=240)
        store = engine.store
        slurm = slurm_of(engine)
        logs: dict[str, Any] = {"state": final.state, "run": record.id}
        for task in store.tasks(record.id):
            attempt = store.attempt(record.id, task.task_id) if task.attempt else None
            out = await slurm.read_log(attempt.stdout_path) if attempt else None
            err = await slurm.read_log(attempt.stderr_path) if attempt else None
            logs[task.task_id] = (
                task.state,
                task.exit_code,
                task.reason,
                out.data if out else None,
                err.data if err else None,
                attempt.job_id if attempt else None,
            )
        return logs

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
    job_ids = [v[5] for k, v in got.items() if isinstance(v, tuple) and v[5]]
    # One job per task: plain (`123`) or an element of an array (`123_4`: sim.* go as one).
    assert len(set(job_ids)) == 6 and all(re.fullmatch(r"[0-9]+(_[0-9]+)?", j) for j in job_ids)


ODD = 'it\'s "odd" $(touch PWNED1) `touch PWNED2` ; x | y && z #é✓日本 \\n'
NAME = "name 'q' \"dq\" $(touch PWNED3) `id` ; | & ✓"
COMMAND = """printf '%s\\n' "$ODD" "$SEMI" "$DOLLAR"
cat <<'EOF'
literal $(touch PWNED4) `touch PWNED5` 'q' "dq" ; |
EOF
echo "after the heredoc"
printf 'é✓日本\\n'"""
EXPECTED = (
    f"{ODD}\na;b&&c||d\n$HOME \\$ `x` $((1+1))\n"
    "literal $(touch PWNED4) `touch PWNED5` 'q' \"dq\" ; |\n"
    "after the heredoc\né✓日本\n"
).encode()


@pytest.mark.parametrize("place", TRANSPORTS, indirect=True)
def test_hostile_text_runs_exactly_as_written(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    config = rig_config(slurm_rig, place.transport, place.log_dir, tmp_path / "data")
    work = absolute(slurm_rig, place)
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
            {
                "id": "backslash",
                "command": "true",
                "output_file": "a\\b.log",
                "memory": MEM,
            },
        ],
    }

    async def body(engine: Engine) -> dict[str, Any]:
        record = engine.submit(parse_document(doc), name="hostile")
        final = await engine.wait(record.id, timeout=180)
        store, slurm = engine.store, slurm_of(engine)
        hostile = store.attempt(record.id, "hostile")
        where = store.attempt(record.id, "where")
        assert hostile.job_id is not None
        seen = await slurm.poll([JobRef(hostile.job_id, hostile.tag, _paths(hostile))])
        home = slurm.host.home or "/nonexistent"
        listing = await slurm.transport.run(["ls", "-A", "--", home, work, odd_dir])
        return {
            "state": final.state,
            "tasks": {t.task_id: (t.state, t.reason) for t in store.tasks(record.id)},
            "out": (await slurm.read_log(hostile.stdout_path)).data,
            "err": (await slurm.read_log(hostile.stderr_path)).data,
            "stdout_path": hostile.stdout_path,
            "where": (await slurm.read_log(where.stdout_path)).data,
            "name": seen.jobs[hostile.job_id].name,
            "listing": listing.stdout,
        }

    got = drive(config, body)
    tasks = got["tasks"]
    assert tasks["mkdir"][0] == TaskState.COMPLETED
    assert tasks["hostile"][0] == TaskState.COMPLETED, tasks["hostile"]
    assert got["out"] == EXPECTED
    assert got["err"] == b""
    assert got["stdout_path"] == f"{odd_dir}/out 'file'.log"
    assert got["where"] == f"{odd_dir}\n".encode()
    # The job's name is the task's, exactly; an array job's is its first element's + count.
    assert got["name"] in (NAME, f"{NAME} (+1)")
    assert not [line for line in got["listing"].splitlines() if line.startswith("PWNED")]
    # A path Slurm cannot write is refused before anything reaches the scheduler.
    assert tasks["backslash"][0] == TaskState.FAILED
    assert "backslash" in (tasks["backslash"][1] or "")
    assert got["state"] == RunState.FAILED


def _paths(attempt: Any) -> Any:
    from scripthut.backends.base import JobPaths

    return JobPaths(
        attempt.stdout_path, attempt.stderr_path, attempt.exit_path, attempt.script_path
    )


def test_newlines_in_directive_fields_are_refused_at_validation() -> None:
    for field in ("name", "partition", "working_dir", "output_file", "gres"):
        with pytest.raises(InvalidInput, match=field):
            parse_document([{"id": "a", "command": "true", field: "two\nlines"}])
    workflow = parse_document([{"id": "a", "command": "echo one\necho two\nEOF\n"}])
    assert workflow.tasks[0].command == "echo one\necho two\nEOF\n"
    assert json.loads(json.dumps(workflow.to_document()))["tasks"][0]["command"].count("\n") == 3


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_users_own_jobs_are_listed_before_any_run(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    import shlex
    import subprocess
    import uuid

    config = rig_config(slurm_rig, place.transport, place.log_dir, tmp_path / "data")
    name = f"not-hut {uuid.uuid4().hex[:8]}"
    argv = ["sbatch", "--parsable", "--hold", f"--job-name={name}", "--output=/dev/null"]
    submitted = subprocess.run(
        slurm_rig.ssh_argv(*map(shlex.quote, argv)),
        input=b"#!/bin/bash\ntrue\n",
        capture_output=True,
        check=True,
        timeout=60,
    )
    job_id = submitted.stdout.decode().strip()

    async def body(engine: Engine) -> list[str]:
        try:
            for _ in range(60):
                external = engine.external_jobs().get("rig") or []
                if any(job.job_id == job_id for job in external):
                    return [job.name or "" for job in external if job.job_id == job_id]
                await asyncio.sleep(0.5)
            return []
        finally:
            await engine.cancel_job("rig", job_id)

    assert drive(config, body) == [name]
