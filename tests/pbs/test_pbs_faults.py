"""Transient faults on the rig's PBS commands lose no task, fail none wrongly, duplicate no job.

1. Our SSH connection is cut while a poll is in flight (its sshd processes are killed).
2. The engine is killed with SIGKILL while it submits a large run; `scripthut watch` takes
   over: every task ends with exactly one scheduler job (counted by job name, the tag).

These need root (to kill sshd processes), like the rig itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripthut.backends.base import PollResult
from scripthut.backends.pbs import PBSBackend
from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.pbs.test_pbs_rig import pbs_config, pbs_entry
from tests.pbs.test_pbs_rig import place as place  # the fixture
from tests.slurm.conftest import SlurmRig
from tests.slurm.test_transport_ssh import _kill_server_side

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, like the rig")
MEM = "100M"
TASKS = 150


def test_ssh_cut_mid_poll_fails_no_task(pbs_rig: SlurmRig, place: str, tmp_path: Path) -> None:
    config = pbs_config(pbs_rig, place, tmp_path / "data")
    doc = [{"id": f"t{i}", "command": "sleep 4; echo done", "memory": MEM} for i in range(6)]
    cuts: list[list[int]] = []
    failed: list[PollResult] = []

    async def main() -> str:
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store, min_poll_interval=0.5)
        await engine.start()
        try:
            record = engine.submit(parse_document(doc), name="cut")
            backend = engine.registry.get("rig")
            assert isinstance(backend, PBSBackend)
            original_poll, original_run = backend.poll, backend.transport.run_script

            async def poll(jobs: Any) -> PollResult:
                result = await original_poll(jobs)
                if not result.ok:
                    failed.append(result)
                return result

            async def slow_then_cut(script: str, *, timeout: float = 60) -> Any:
                if "job_state" not in script or len(cuts) >= 2:
                    return await original_run(script, timeout=timeout)
                client = await backend.transport.run(["printenv", "SSH_CLIENT"])
                in_flight = asyncio.create_task(original_run("sleep 1\n" + script, timeout=timeout))
                await asyncio.sleep(0.4)
                cuts.append(_kill_server_side(pbs_rig.ssh_port, int(client.stdout.split()[1])))
                return await in_flight

            backend.poll = poll  # type: ignore[method-assign]
            backend.transport.run_script = slow_then_cut  # type: ignore[method-assign]
            await engine.wait(record.id, timeout=150)
            return record.id
        finally:
            await engine.stop()
            store.close()

    run_id = asyncio.run(main())
    assert len(cuts) == 2 and all(cuts), "both cuts killed our sshd processes"
    assert len(failed) >= 2
    store = Store.in_data_dir(config.data_dir)
    tasks = store.tasks(run_id)
    assert {t.state for t in tasks} == {TaskState.COMPLETED}
    assert len(store.attempts(run_id)) == len(doc)
    assert store.get_run(run_id).state == RunState.COMPLETED


def scripthut(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scripthut.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def job_names(rig: SlurmRig, since: str) -> list[str]:
    """Names of the rig user's jobs since `since`, from Slurm's accounting (the tags)."""
    argv = rig.ssh_argv(
        "sacct", "--noheader", "--parsable2", "--allocations", f"--starttime={since}",
        "--format=JobName",
    )  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    return out.split()


@pytest.mark.slow
def test_engine_killed_while_submitting_makes_one_job_per_tag(
    pbs_rig: SlurmRig, place: str, tmp_path: Path
) -> None:
    config = tmp_path / "scripthut.yaml"
    # One job per task: the kill must land between the submissions of one batch.
    entry = pbs_entry(pbs_rig, place, max_concurrent=TASKS, arrays=False)
    settings = {"data_dir": str(tmp_path / "data"), "poll_interval": 2}
    config.write_text(yaml.safe_dump({"backends": [entry], "settings": settings}))
    tasks = [{"id": f"t{i}", "command": "true", "memory": MEM} for i in range(TASKS)]
    workflow = tmp_path / "many.json"
    workflow.write_text(json.dumps(tasks))
    env = {**os.environ, "SCRIPTHUT_CONFIG": str(config)}
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))

    first = scripthut("run", str(workflow), "--json", env=env)
    index = Path(pbs_rig.remote_home) / place[2:] / ".tags"
    deadline = time.monotonic() + 120
    while not (index.is_dir() and len(os.listdir(index)) >= 20):
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
    assert set(result["tasks"].values()) == {"completed"} and len(result["tasks"]) == TASKS

    store = Store.in_data_dir(tmp_path / "data")
    tags = {a.tag for a in store.attempts(run_id)}
    assert len(tags) == TASKS, "a task was submitted more than once"
    deadline = time.monotonic() + 90
    while True:  # accounting lags the controller by a moment
        counts = Counter(job_names(pbs_rig, since))
        ours = {tag: counts[tag] for tag in tags}
        if all(n >= 1 for n in ours.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert set(ours.values()) == {1}, {t: n for t, n in ours.items() if n != 1}
