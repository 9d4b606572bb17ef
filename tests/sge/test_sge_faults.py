"""Transient faults on the real Grid Engine rig lose no task, fail none wrongly, duplicate no job.

1. sge_qmaster is stopped for 30 s mid-run (jobs keep running under sge_execd) and started
   again the way the rig starts it; a run submitted meanwhile waits.
2. The engine is killed with SIGKILL while it submits a large run; `scripthut watch` takes
   over: every task ends with exactly one Grid Engine job (counted by job name in qacct).

These need root (to stop sge_qmaster), like the rig itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripthut.backends.base import PollResult
from scripthut.backends.sge import SGEBackend
from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.sge.conftest import SGERig
from tests.sge.test_sge_backend import log_dir as log_dir  # the fixture
from tests.sge.test_sge_backend import rig_backend_entry, rig_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, like the rig")
MEM = "100M"


def assert_all_completed_once(store: Store, run_id: str, count: int) -> None:
    tasks = store.tasks(run_id)
    assert len(tasks) == count
    assert {t.task_id: t.state for t in tasks} == {t.task_id: TaskState.COMPLETED for t in tasks}
    attempts = store.attempts(run_id)
    assert len(attempts) == count, "a task was submitted more than once"
    assert len({a.job_id for a in attempts}) == count
    assert store.get_run(run_id).state == RunState.COMPLETED


def rig_command(rig: SGERig, command: str) -> None:
    subprocess.run(["bash", str(rig.script), command], capture_output=True, check=True, timeout=120)


def test_qmaster_down_for_30s_fails_no_task(sge_rig: SGERig, log_dir: str, tmp_path: Path) -> None:
    config = rig_config(sge_rig, log_dir, tmp_path / "data")
    first = [{"id": f"a{i}", "command": "sleep 3; echo a", "memory": MEM} for i in range(6)]
    second = [
        {"id": f"b{i}", "command": "echo b", "memory": MEM, "deps": [f"a{i}"]} for i in range(6)
    ]
    during = [{"id": f"c{i}", "command": "echo c", "memory": MEM} for i in range(4)]
    outage: dict[str, Any] = {}

    async def main() -> str:
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store, min_poll_interval=0.5)
        await engine.start()
        try:
            record = engine.submit(parse_document(first + second), name="fault")
            backend = engine.registry.get("rig")
            assert isinstance(backend, SGEBackend)
            polls: list[PollResult] = []
            original = backend.poll

            async def poll(jobs: Any) -> PollResult:
                result = await original(jobs)
                polls.append(result)
                return result

            backend.poll = poll  # type: ignore[method-assign]
            while not any(t.state == TaskState.RUNNING for t in store.tasks(record.id)):
                await asyncio.sleep(0.2)
            outage["start"] = time.monotonic()
            await asyncio.to_thread(rig_command, sge_rig, "stop-qmaster")
            await asyncio.sleep(3)
            outage["run"] = engine.submit(parse_document(during), name="during").id
            await asyncio.sleep(max(0.0, 30 - (time.monotonic() - outage["start"])))
            await asyncio.to_thread(rig_command, sge_rig, "up")
            outage["end"] = time.monotonic()
            outage["failed_polls"] = sum(not p.ok for p in polls)
            await engine.wait(record.id, timeout=240)
            await engine.wait(outage["run"], timeout=120)
            return record.id
        finally:
            await engine.stop()
            store.close()

    try:
        run_id = asyncio.run(main())
    finally:
        rig_command(sge_rig, "up")
    store = Store.in_data_dir(config.data_dir)
    assert outage["end"] - outage["start"] >= 30
    assert outage["failed_polls"] >= 1
    assert_all_completed_once(store, run_id, len(first + second))
    assert_all_completed_once(store, outage["run"], len(during))


TASKS = 150


def scripthut(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scripthut.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def qacct_names(rig: SGERig) -> Counter[str]:
    out = rig.ssh(f"qacct -o {rig.ssh_user} -d 1 -j", timeout=120)
    return Counter(
        line.split(None, 1)[1].strip() for line in out.splitlines() if line.startswith("jobname ")
    )


@pytest.mark.slow
def test_engine_killed_while_submitting(sge_rig: SGERig, log_dir: str, tmp_path: Path) -> None:
    config = tmp_path / "scripthut.yaml"
    # One job per task (arrays: tests/sge/test_sge_arrays.py kills an array submission).
    entry = rig_backend_entry(sge_rig, log_dir, max_concurrent=TASKS, arrays=False)
    settings = {"data_dir": str(tmp_path / "data"), "poll_interval": 2}
    config.write_text(yaml.safe_dump({"backends": [entry], "settings": settings}))
    prefix = f"k{uuid.uuid4().hex[:8]}"
    tasks = [{"id": f"{prefix}-{i}", "command": "true", "memory": MEM} for i in range(TASKS)]
    workflow = tmp_path / "many.json"
    workflow.write_text(json.dumps(tasks))
    env = {**os.environ, "SCRIPTHUT_CONFIG": str(config)}

    first = scripthut("run", str(workflow), "--json", env=env)
    index = Path(sge_rig.remote_home) / log_dir[2:] / ".tags"
    deadline = time.monotonic() + 120
    while not (index.is_dir() and len(os.listdir(index)) >= 30):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "submission did not start"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(os.listdir(index)) < TASKS, "the kill came after the whole submission"

    listing = subprocess.run(
        [sys.executable, "-m", "scripthut.cli", "runs", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    run_id = json.loads(listing.stdout)[0]["id"]
    second = scripthut("watch", run_id, "--json", env=env)
    out, err = second.communicate(timeout=400)
    assert second.returncode == 0, err
    result = json.loads(out)
    assert result["status"] == "completed"
    assert set(result["tasks"].values()) == {"completed"}
    assert len(result["tasks"]) == TASKS

    store = Store.in_data_dir(tmp_path / "data")
    assert len({a.tag for a in store.attempts(run_id)}) == TASKS, "a task was submitted twice"
    # Every task has exactly one Grid Engine job: count the job names qacct recorded.
    names = {task["id"] for task in tasks}
    deadline = time.monotonic() + 60
    while True:
        counts = qacct_names(sge_rig)
        ours = {name: counts[name] for name in names}
        if all(n >= 1 for n in ours.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert set(ours.values()) == {1}, {t: n for t, n in ours.items() if n != 1}
    assert len({a.job_id for a in store.attempts(run_id)}) == TASKS
