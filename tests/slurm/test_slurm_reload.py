"""Engine.reload against the rig's real Slurm over SSH: nothing submitted is touched.

A backend whose connection changed is reached through a new Backend object while a job runs:
the job is followed to its end, never submitted again. A backend removed while its job runs
stops being polled and its run waits, saying why; configured again, the job is adopted and the
run completes, still with one job.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scripthut.backends.slurm import SlurmBackend
from scripthut.config import Config, parse_config
from scripthut.engine.engine import Engine
from scripthut.states import RunState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.slurm.conftest import SlurmRig
from tests.slurm.test_slurm_backend import Place, rig_backend_entry
from tests.slurm.test_slurm_backend import place as place  # the fixture

pytestmark = pytest.mark.slurm


def config_of(
    rig: SlurmRig, place: Place, data: Path, *, rig_on: bool = True, **ssh: Any
) -> Config:
    backends = [{"name": "local", "type": "local"}]
    if rig_on:
        entry = rig_backend_entry(rig, "ssh", place.log_dir)
        entry["ssh"].update(ssh)
        backends.insert(0, entry)
    return parse_config(
        {"backends": backends, "settings": {"data_dir": str(data), "poll_interval": 1}},
        source="test",
    )


async def until(predicate: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def in_queue(rig: SlurmRig, job_id: str) -> bool:
    done = subprocess.run(
        rig.ssh_argv("squeue", "-h", "-j", job_id, "-o", "%i"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return job_id in done.stdout


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_reload_reconnects_and_removes_without_touching_jobs(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    doc = [
        {"id": "a", "command": "sleep 4; echo a", "memory": "100M"},
        {"id": "b", "command": "echo b", "deps": ["a"], "memory": "100M"},
    ]

    async def main() -> None:
        store = Store.in_data_dir(data)
        engine = Engine(config_of(slurm_rig, place, data), store, min_poll_interval=0.5)
        await engine.start()
        try:
            first = engine.submit(parse_document(doc), backend="rig")
            await until(lambda: any(a.job_id for a in store.attempts(first.id)), "a's job")
            old = engine.registry.get("rig")
            plan = await engine.reload(config_of(slurm_rig, place, data, connect_timeout=7))
            assert plan.reconnected == ["rig"]
            new = engine.registry.get("rig")
            assert new is not old and isinstance(new, SlurmBackend)
            assert engine.slots["rig"].backend is new
            assert (await engine.wait(first.id, timeout=120)).state == RunState.COMPLETED
            assert sorted(a.task_id for a in store.attempts(first.id)) == ["a", "b"]

            second = engine.submit(parse_document(doc), backend="rig")
            await until(lambda: any(a.job_id for a in store.attempts(second.id)), "a's job")
            (job_id,) = [a.job_id for a in store.attempts(second.id) if a.job_id]
            plan = await engine.reload(config_of(slurm_rig, place, data, rig_on=False))
            assert plan.removed == ["rig"] and "rig" not in engine.slots
            assert store.get_run(second.id).message == "backend 'rig' is not configured"
            assert in_queue(slurm_rig, job_id)  # the job goes on, untouched
            plan = await engine.reload(config_of(slurm_rig, place, data))
            assert plan.added == ["rig"]
            assert (await engine.wait(second.id, timeout=120)).state == RunState.COMPLETED
            attempts = store.attempts(second.id)
            assert sorted(a.task_id for a in attempts) == ["a", "b"]
            assert [a.job_id for a in attempts if a.task_id == "a"] == [job_id]
        finally:
            await engine.stop()
            store.close()

    asyncio.run(main())
