"""Helpers shared by test modules."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, NamedTuple

from scripthut.config import Config, parse_config
from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.store import TaskRecord
from scripthut.workflow.parse import parse_document


def local_config(data_dir: Path, **local: Any) -> Config:
    """A config with one local backend named 'local' and settings suited to tests."""
    backend = {"name": "local", "type": "local", "max_concurrent": 4, "cpus": 4, **local}
    return parse_config(
        {"backends": [backend], "settings": {"data_dir": str(data_dir), "poll_interval": 2}},
        source="test",
    )


# A workflow whose env holds secrets of every kind the masking rule knows (scripthut.secrets).
SECRET_TOKEN = "tok-1234abcd"
SECRET_HOOK = "hookpath99"
SECRET_PASSWORD = "pw-98765"
SECRET_VALUES = (SECRET_TOKEN, SECRET_HOOK, SECRET_PASSWORD)
SECRET_WORKFLOW: dict[str, Any] = {
    "env": [
        {
            "set": {
                "API_TOKEN": SECRET_TOKEN,
                "SLACK_URL": f"https://hooks.slack.com/services/T1/B2/{SECRET_HOOK}",
                "DB_URL": f"postgres://ann:{SECRET_PASSWORD}@db.example/x",
            }
        }
    ],
    "tasks": [
        {
            "id": "a",
            "command": "echo done",
            "env": [{"set": {"COPY": f"prefix-{SECRET_TOKEN}", "MY_PASSWORD": "pa"}}],
        }
    ],
}


def assert_no_secret(text: str) -> None:
    """None of SECRET_WORKFLOW's clear values is in `text` (the short one as its export)."""
    for secret in SECRET_VALUES:
        assert secret not in text, secret
    assert "MY_PASSWORD='pa'" not in text and '"MY_PASSWORD": "pa"' not in text


class SweepTask(NamedTuple):
    """One task of a finished sweep: its state and exit code, its logs, its element's id."""

    state: TaskState
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    job_id: str | None


def sweep_document(size: int, failing: set[int], code: int, memory: str) -> list[dict[str, Any]]:
    """Tasks p0..p<size-1> of equal resources (one array group) printing `out i` and
    `err i`; those in `failing` exit `code`."""
    return [
        {
            "id": f"p{i}",
            "command": f"echo out {i}; echo err {i} >&2; exit {code if i in failing else 0}",
            "memory": memory,
        }
        for i in range(size)
    ]


async def run_sweep(
    engine: Engine, doc: list[dict[str, Any]], backend: str, timeout: float
) -> tuple[RunState, dict[str, SweepTask]]:
    """Run `doc` to its end and read back every task with its logs through `backend`."""
    record = engine.submit(parse_document(doc), name="sweep")
    final = await engine.wait(record.id, timeout=timeout)
    driver = engine.registry.get(backend)
    tasks: dict[str, SweepTask] = {}
    for task in engine.store.tasks(record.id):
        attempt = engine.store.attempt(record.id, task.task_id)
        assert attempt is not None, task.task_id
        out = (await driver.read_log(attempt.stdout_path)).data
        err = (await driver.read_log(attempt.stderr_path)).data
        tasks[task.task_id] = SweepTask(task.state, task.exit_code, out, err, attempt.job_id)
    return final.state, tasks


def assert_sweep(tasks: dict[str, SweepTask], size: int, failing: set[int], code: int) -> None:
    """Every task of `sweep_document` kept its own logs and its own end."""
    assert len(tasks) == size
    for i in range(size):
        task = tasks[f"p{i}"]
        assert (task.stdout, task.stderr) == (f"out {i}\n".encode(), f"err {i}\n".encode()), i
        expected = (TaskState.FAILED, code) if i in failing else (TaskState.COMPLETED, 0)
        assert (task.state, task.exit_code) == expected, (i, task)


async def wait_all_running(engine: Engine, run_id: str, timeout: float) -> dict[str, TaskRecord]:
    """The run's tasks once every one of them runs; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = {t.task_id: t for t in engine.store.tasks(run_id)}
        if all(t.state == TaskState.RUNNING for t in tasks.values()):
            return tasks
        assert time.monotonic() < deadline, {k: t.state for k, t in tasks.items()}
        await asyncio.sleep(0.5)
