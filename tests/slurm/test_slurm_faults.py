"""Transient faults on the real rig lose no task, fail none wrongly and duplicate no job.

1. Our SSH connection is cut while a poll is in flight (its sshd processes are killed).
2. slurmctld is stopped for 30 s mid-run and started again the way the rig starts it.
3. The engine is killed with SIGKILL while it submits a 300-task run; `scripthut watch`
   takes over: every task ends with exactly one Slurm job (counted by tag in sacct).

These need root (to kill sshd processes, to stop slurmctld), like the rig itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripthut.backends.base import PollResult
from scripthut.backends.slurm import SlurmBackend
from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.slurm.conftest import RIG_SCRIPT, SlurmRig
from tests.slurm.test_slurm_backend import Place, rig_backend_entry, rig_config
from tests.slurm.test_slurm_backend import place as place  # the fixture
from tests.slurm.test_transport_ssh import _kill_server_side

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, like the rig")
MEM = "100M"


def engine_run(
    config: Any, doc: Any, during: Any, timeout: float = 240
) -> tuple[str, Store, SlurmBackend]:
    """Run `doc` with an in-process engine; `during(engine, backend, run_id)` runs alongside."""

    async def main() -> str:
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store, min_poll_interval=0.5)
        await engine.start()
        try:
            record = engine.submit(parse_document(doc), name="fault")
            backend = engine.registry.get("rig")
            assert isinstance(backend, SlurmBackend)
            holder.append(backend)
            side = asyncio.create_task(during(engine, backend, record.id))
            try:
                await engine.wait(record.id, timeout=timeout)
            finally:
                await side
            return record.id
        finally:
            await engine.stop()
            store.close()

    holder: list[SlurmBackend] = []
    run_id = asyncio.run(main())
    return run_id, Store.in_data_dir(config.data_dir), holder[0]


def record_polls(backend: SlurmBackend) -> list[PollResult]:
    """Keep every poll result the engine gets."""
    results: list[PollResult] = []
    original = backend.poll

    async def poll(jobs: Any) -> PollResult:
        result = await original(jobs)
        results.append(result)
        return result

    backend.poll = poll  # type: ignore[method-assign]
    return results


def assert_all_completed_once(store: Store, run_id: str, count: int) -> None:
    tasks = store.tasks(run_id)
    assert len(tasks) == count
    assert {t.task_id: t.state for t in tasks} == {t.task_id: TaskState.COMPLETED for t in tasks}
    attempts = store.attempts(run_id)
    assert len(attempts) == count, "a task was submitted more than once"
    assert len({a.job_id for a in attempts}) == count
    assert store.get_run(run_id).state == RunState.COMPLETED


# --- 1. the SSH connection is cut mid-poll --------------------------------------------------------


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_ssh_cut_mid_poll_fails_no_task(slurm_rig: SlurmRig, place: Place, tmp_path: Path) -> None:
    config = rig_config(slurm_rig, "ssh", place.log_dir, tmp_path / "data")
    doc = [{"id": f"t{i}", "command": "sleep 4; echo done", "memory": MEM} for i in range(8)]
    cuts: list[list[int]] = []

    async def cut_twice(engine: Engine, backend: SlurmBackend, run_id: str) -> None:
        transport = backend.transport
        original = transport.run_script
        polls = record_polls(backend)

        async def slow_poll_then_cut(script: str, *, timeout: float = 60) -> Any:
            # A poll that takes a second on the server, and our connection killed meanwhile.
            if "squeue" not in script or len(cuts) >= 2 or len(polls) < 2:
                return await original(script, timeout=timeout)
            client = await transport.run(["printenv", "SSH_CLIENT"])
            client_port = int(client.stdout.split()[1])
            in_flight = asyncio.create_task(original("sleep 1\n" + script, timeout=timeout))
            await asyncio.sleep(0.4)
            cuts.append(_kill_server_side(slurm_rig.ssh_port, client_port))
            return await in_flight

        transport.run_script = slow_poll_then_cut  # type: ignore[method-assign]
        while len(cuts) < 2 and engine.runs.get(run_id):
            await asyncio.sleep(0.2)
        await engine.wait(run_id, timeout=120)
        failed_polls.extend(p for p in polls if not p.ok)

    failed_polls: list[PollResult] = []
    run_id, store, backend = engine_run(config, doc, cut_twice)
    assert len(cuts) == 2 and all(cuts), "both cuts killed our sshd processes"
    assert len(failed_polls) >= 2
    # The cut is seen as a lost connection or as a script killed before its end marker.
    assert all("unknown" in (p.error or "") or "early" in (p.error or "") for p in failed_polls)
    assert backend.transport.stats.connections_lost >= 2
    assert_all_completed_once(store, run_id, len(doc))


# --- 2. slurmctld stopped for 30 s and started again ----------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _ctld_pidfile(rig: SlurmRig) -> Path:
    return rig.state_dir / "run" / "slurm" / "slurmctld.pid"


def _ctld_up() -> bool:
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False)
    return "is UP" in ping.stdout


def stop_slurmctld(rig: SlurmRig) -> None:
    pid = int(_ctld_pidfile(rig).read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _pid_alive(pid):
        assert time.monotonic() < deadline, "slurmctld did not stop"
        time.sleep(0.1)


def start_slurmctld(rig: SlurmRig) -> None:
    """As tests/rig/slurm.sh starts it: `slurmctld` daemonizes, output to the rig's log."""
    with open(rig.log_dir / "slurm" / "slurmctld.out", "ab") as log:
        subprocess.run(["slurmctld"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True)
    deadline = time.monotonic() + 60
    while not _ctld_up():
        assert time.monotonic() < deadline, "slurmctld did not come back"
        time.sleep(0.2)


@contextlib.contextmanager
def slurmctld_restored(rig: SlurmRig) -> Iterator[None]:
    try:
        yield
    finally:
        if not _ctld_up():
            subprocess.run(["bash", str(RIG_SCRIPT), "up"], capture_output=True, check=False)


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_slurmctld_down_for_30s_fails_no_task(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    """Jobs run and end while the controller is away; a run submitted meanwhile waits."""
    config = rig_config(slurm_rig, "ssh", place.log_dir, tmp_path / "data")
    first = [{"id": f"a{i}", "command": "sleep 3; echo a", "memory": MEM} for i in range(6)]
    second = [
        {"id": f"b{i}", "command": "echo b", "memory": MEM, "deps": [f"a{i}"]} for i in range(6)
    ]
    during = [{"id": f"c{i}", "command": "echo c", "memory": MEM} for i in range(4)]
    outage: dict[str, Any] = {}

    async def outage_30s(engine: Engine, backend: SlurmBackend, run_id: str) -> None:
        polls = record_polls(backend)
        while not any(t.state == TaskState.RUNNING for t in engine.store.tasks(run_id)):
            await asyncio.sleep(0.2)
        outage["start"] = time.monotonic()
        await asyncio.to_thread(stop_slurmctld, slurm_rig)
        await asyncio.sleep(3)
        # A run started while slurmctld is down: sbatch cannot reach it.
        outage["run"] = engine.submit(parse_document(during), name="during").id
        await asyncio.sleep(27)
        # The engine noticed: the cluster is marked unreachable (polls then back off).
        outage["noticed"] = engine.slots["rig"].down_since is not None
        await asyncio.to_thread(start_slurmctld, slurm_rig)
        outage["end"] = time.monotonic()
        outage["failed_polls"] = sum(not p.ok for p in polls)
        await engine.wait(outage["run"], timeout=120)

    with slurmctld_restored(slurm_rig):
        run_id, store, _backend = engine_run(config, first + second, outage_30s, timeout=300)
    assert outage["end"] - outage["start"] >= 30
    assert outage["noticed"] or outage["failed_polls"] >= 1
    assert_all_completed_once(store, run_id, len(first + second))
    assert_all_completed_once(store, outage["run"], len(during))


# --- 3. the engine killed while it submits 300 tasks ----------------------------------------

TASKS = 300


def scripthut(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scripthut.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sacct_comments(rig: SlurmRig, since: str) -> list[tuple[str, str]]:
    argv = rig.ssh_argv(
        "sacct",
        "--noheader",
        "--parsable2",
        "--allocations",
        f"--starttime={since}",
        "--format=JobIDRaw,Comment",
    )
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    return [tuple(line.split("|", 1)) for line in out.splitlines() if "|" in line]  # type: ignore[misc]


@pytest.mark.slow
@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_engine_killed_while_submitting_300_tasks(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    config = tmp_path / "scripthut.yaml"
    # One job per task: the crash window of plain submissions (arrays have their own test).
    entry = rig_backend_entry(slurm_rig, "ssh", place.log_dir, max_concurrent=TASKS, arrays=False)
    settings = {"data_dir": str(tmp_path / "data"), "poll_interval": 2}
    config.write_text(yaml.safe_dump({"backends": [entry], "settings": settings}))
    tasks = [
        {"id": f"t{i}", "command": "echo $SCRIPTHUT_TASK_ID", "memory": MEM} for i in range(TASKS)
    ]
    workflow = tmp_path / "many.json"
    workflow.write_text(json.dumps(tasks))
    env = {**os.environ, "SCRIPTHUT_CONFIG": str(config)}
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))

    first = scripthut("run", str(workflow), "--json", env=env)
    index = place.local_dir / ".tags"
    deadline = time.monotonic() + 120
    while not (index.is_dir() and len(os.listdir(index)) >= 40):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "submission did not start"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    submitted_before_kill = len(os.listdir(index))
    assert submitted_before_kill < TASKS, "the kill came after the whole submission"

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
    tags = {a.tag for a in store.attempts(run_id)}
    assert len(tags) == TASKS, "a task was submitted more than once"
    # Every tag has exactly one Slurm job: count by --comment in sacct (wait out stub rows).
    deadline = time.monotonic() + 90
    while True:
        counts = Counter(comment for _job, comment in sacct_comments(slurm_rig, since))
        ours = {tag: counts[tag] for tag in tags}
        if all(n >= 1 for n in ours.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert set(ours.values()) == {1}, {t: n for t, n in ours.items() if n != 1}
    jobs = [a.job_id for a in store.attempts(run_id)]
    assert len(set(jobs)) == TASKS
