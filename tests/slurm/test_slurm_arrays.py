"""Job arrays on the real rig: sweeps, failures, cancel, throttle, limits, crash safety.

Ready tasks of one run with the same resources go as one `--array` job per chunk; each
element runs its own task script. Everything stays per task: logs, exit codes, cancel.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripthut.backends.arrays import ARRAYS_DIR, tags_of_wrapper
from scripthut.backends.base import ArrayGroup
from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.helpers import (
    SweepTask,
    assert_sweep,
    run_sweep,
    sweep_document,
    wait_all_running,
)
from tests.slurm.conftest import SlurmRig
from tests.slurm.test_slurm_backend import (
    Place,
    all_final,
    job_spec,
    make_backend,
    poll_until,
    refs_for,
    rig_backend_entry,
    rig_config,
    run_id,
    with_backend,
)
from tests.slurm.test_slurm_backend import place as place  # the fixture
from tests.slurm.test_slurm_faults import scripthut
from tests.slurm.test_slurm_workflows import drive, slurm_of

MEM = "100M"
ELEMENT = re.compile(r"([0-9]+)_([0-9]+)")


def squeue_ours(rig: SlurmRig, prefix: str) -> list[tuple[str, str]]:
    """(element id, state) of the user's jobs whose comment starts with `prefix`."""
    argv = rig.ssh_argv(
        "squeue",
        "--noheader",
        "--array",
        "--all",
        "-O",
        shlex.quote("JobArrayID:|,State:|,Comment:;"),
    )
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [record.strip().split("|") for record in out.split(";") if record.strip()]
    return [(r[0], r[1]) for r in rows if len(r) == 3 and r[2].startswith(prefix)]


def elements(job_ids: list[str]) -> list[tuple[str, int]]:
    """(array job id, index) of element ids; fails on a plain job id."""
    out = []
    for job_id in job_ids:
        match = ELEMENT.fullmatch(job_id)
        assert match, f"{job_id} is not an array element"
        out.append((match.group(1), int(match.group(2))))
    return out


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_a_sweep_of_200_runs_as_arrays_with_every_task_its_own(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    config = rig_config(slurm_rig, "ssh", place.log_dir, tmp_path / "data", max_concurrent=200)
    failing = {i for i in range(200) if i % 40 == 7}

    async def body(engine: Engine) -> tuple[RunState, dict[str, SweepTask]]:
        return await run_sweep(engine, sweep_document(200, failing, 3, MEM), "rig", 400)

    state, tasks = drive(config, body)
    assert state == RunState.FAILED
    assert_sweep(tasks, 200, failing, 3)
    placed = elements([str(t.job_id) for t in tasks.values()])
    assert len(set(placed)) == 200, "one element per task"
    assert len({array for array, _ in placed}) <= 3, "the sweep went as a few arrays"


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_cancelling_one_task_cancels_only_its_element(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    config = rig_config(slurm_rig, "ssh", place.log_dir, tmp_path / "data")
    doc = [{"id": f"s{i}", "command": "sleep 120", "memory": MEM} for i in range(4)]

    async def body(engine: Engine) -> dict[str, Any]:
        record = engine.submit(parse_document(doc), name="cancel-one")
        deadline = time.monotonic() + 120
        tasks = await wait_all_running(engine, record.id, 120)
        victim = tasks["s1"].job_id
        assert victim is not None
        await engine.cancel_job("rig", victim)
        while engine.store.task(record.id, "s1").state != TaskState.CANCELLED:
            assert time.monotonic() < deadline + 60, "the element was not cancelled"
            await asyncio.sleep(0.5)
        queue = dict(squeue_ours(slurm_rig, f"hut.{record.id}."))
        states = {t.task_id: t.state for t in engine.store.tasks(record.id)}
        ids = {t.task_id: t.job_id for t in engine.store.tasks(record.id)}
        await engine.cancel(record.id)
        await engine.wait(record.id, timeout=120)
        return {"queue": queue, "states": states, "ids": ids}

    got = drive(config, body)
    elements([job_id for job_id in got["ids"].values() if job_id])
    assert got["states"] == {
        "s0": TaskState.RUNNING,
        "s1": TaskState.CANCELLED,
        "s2": TaskState.RUNNING,
        "s3": TaskState.RUNNING,
    }
    for task in ("s0", "s2", "s3"):
        assert got["queue"][got["ids"][task]] == "RUNNING", got["queue"]


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_the_array_throttle_holds_on_the_scheduler(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    backend = make_backend(slurm_rig, place, tmp_path)
    rid = run_id()
    specs = [job_spec(backend, rid, i, "sleep 3; echo $SCRIPTHUT_TASK_ID") for i in range(6)]

    async def body(backend: Any) -> tuple[list[int], dict[str, Any]]:
        (outcomes,) = await backend.submit_arrays([ArrayGroup(tuple(specs), throttle=2)])
        refs = refs_for(specs, [o.job_id for o in outcomes])
        running: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = squeue_ours(slurm_rig, f"hut.{rid}.")
            running.append(sum(state == "RUNNING" for _id, state in rows))
            if not any(state in ("RUNNING", "PENDING") for _id, state in rows):
                break
            await asyncio.sleep(0.3)
        statuses = await poll_until(backend, refs, all_final)
        return running, {ref.job_id: statuses[ref.job_id] for ref in refs}

    running, statuses = with_backend(backend, body)
    assert len(statuses) == 6
    assert {s.state.value for s in statuses.values()} == {"completed"}
    assert max(running) == 2, running  # throttled, and it did run two at once


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_max_concurrent_holds_with_arrays(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    config = rig_config(slurm_rig, "ssh", place.log_dir, tmp_path / "data", max_concurrent=3)
    doc = [{"id": f"m{i}", "command": "sleep 2", "memory": MEM} for i in range(9)]
    samples: list[int] = []

    async def body(engine: Engine) -> dict[str, Any]:
        record = engine.submit(parse_document(doc), name="limit")
        waiting = asyncio.create_task(engine.wait(record.id, timeout=240))
        while not waiting.done():
            rows = await asyncio.to_thread(squeue_ours, slurm_rig, f"hut.{record.id}.")
            samples.append(sum(state in ("RUNNING", "PENDING") for _id, state in rows))
            await asyncio.sleep(0.3)
        final = await waiting
        return {"state": final.state, "ids": [t.job_id for t in engine.store.tasks(record.id)]}

    got = drive(config, body)
    assert got["state"] == RunState.COMPLETED
    assert max(samples) <= 3 and max(samples) >= 2, samples
    assert any(ELEMENT.fullmatch(job_id or "") for job_id in got["ids"]), "arrays were used"


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_the_site_and_configured_array_size_are_honoured(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    argv = slurm_rig.ssh_argv("scontrol", "show", "config")
    config_text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    site = int(re.search(r"MaxArraySize\s*=\s*([0-9]+)", config_text).group(1))  # type: ignore[union-attr]
    config = rig_config(
        slurm_rig, "ssh", place.log_dir, tmp_path / "data", max_array_size=7, max_concurrent=50
    )
    doc = [{"id": f"c{i}", "command": "true", "memory": MEM} for i in range(20)]

    async def body(engine: Engine) -> dict[str, Any]:
        record = engine.submit(parse_document(doc), name="chunks")
        final = await engine.wait(record.id, timeout=240)
        slurm = slurm_of(engine)
        limits = slurm.limits
        assert limits is not None
        return {
            "state": final.state,
            "site": limits.max_array_size,
            "ids": [t.job_id for t in engine.store.tasks(record.id)],
        }

    got = drive(config, body)
    assert got["state"] == RunState.COMPLETED
    assert got["site"] == site  # read from the cluster, not assumed
    placed = elements(got["ids"])
    sizes = Counter(array for array, _ in placed)
    assert sorted(sizes.values()) == [6, 7, 7], sizes
    assert max(index for _, index in placed) < 7


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_arrays_off_submits_plain_jobs(slurm_rig: SlurmRig, place: Place, tmp_path: Path) -> None:
    config = rig_config(slurm_rig, "ssh", place.log_dir, tmp_path / "data", arrays=False)
    doc = [{"id": f"o{i}", "command": "echo $SCRIPTHUT_TASK_ID", "memory": MEM} for i in range(4)]

    async def body(engine: Engine) -> dict[str, Any]:
        record = engine.submit(parse_document(doc), name="plain")
        final = await engine.wait(record.id, timeout=240)
        return {"state": final.state, "ids": [t.job_id for t in engine.store.tasks(record.id)]}

    got = drive(config, body)
    assert got["state"] == RunState.COMPLETED
    assert len(set(got["ids"])) == 4 and all(j and j.isdigit() for j in got["ids"]), got["ids"]


# --- SIGKILL of the engine while it submits a 1,000-task array sweep --------------------------

SWEEP = 1000


def sacct_elements(rig: SlurmRig, since: str) -> list[tuple[str, str]]:
    """(JobID, Comment) of every job and array element since `since` (one row each)."""
    argv = rig.ssh_argv(
        "sacct",
        "--noheader",
        "--parsable2",
        "--allocations",
        f"--starttime={since}",
        "--format=JobID,Comment",
    )
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    return [tuple(line.split("|", 1)) for line in out.splitlines() if "|" in line]  # type: ignore[misc]


def wrapper_tags(arrays_dir: Path) -> dict[str, list[str]]:
    """array tag -> its element tags, from the wrappers' tags lines."""
    out: dict[str, list[str]] = {}
    for path in arrays_dir.glob("*.sh"):
        for line in path.read_text().splitlines():
            if tags := tags_of_wrapper(line):
                out[path.name.removesuffix(".sh")] = tags
    return out


@pytest.mark.slow
@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_engine_killed_while_submitting_a_1000_task_array_sweep(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    config = tmp_path / "scripthut.yaml"
    entry = rig_backend_entry(
        slurm_rig, "ssh", place.log_dir, max_concurrent=SWEEP, max_array_size=40
    )
    settings = {"data_dir": str(tmp_path / "data"), "poll_interval": 2}
    config.write_text(yaml.safe_dump({"backends": [entry], "settings": settings}))
    tasks = [{"id": f"k{i}", "command": "true", "memory": MEM} for i in range(SWEEP)]
    workflow = tmp_path / "sweep.json"
    workflow.write_text(json.dumps(tasks))
    env = {**os.environ, "SCRIPTHUT_CONFIG": str(config)}
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))

    first = scripthut("run", str(workflow), "--json", env=env)
    index = place.local_dir / ".tags"
    deadline = time.monotonic() + 120
    while not (index.is_dir() and len(os.listdir(index)) >= 3):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "submission did not start"
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait()
    accepted_before_kill = len(os.listdir(index))
    assert accepted_before_kill < SWEEP // 40, "the kill came after the whole submission"

    listing = subprocess.run(
        [sys.executable, "-m", "scripthut.cli", "runs", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    run = json.loads(listing.stdout)[0]["id"]
    second = scripthut("watch", run, "--json", env=env)
    out, err = second.communicate(timeout=900)
    assert second.returncode == 0, err
    result = json.loads(out)
    assert result["status"] == "completed"
    assert set(result["tasks"].values()) == {"completed"} and len(result["tasks"]) == SWEEP

    store = Store.in_data_dir(tmp_path / "data")
    attempts = store.attempts(run)
    assert len({a.tag for a in attempts}) == SWEEP, "a task was submitted more than once"
    assert len({a.job_id for a in attempts}) == SWEEP
    # Every attempt has exactly one scheduler element: count sacct's elements by the tag
    # their array's wrapper lists at their index (wait out accounting's lag).
    members = wrapper_tags(place.local_dir / ARRAYS_DIR)
    tags = {a.tag for a in attempts}
    deadline = time.monotonic() + 120
    while True:
        counts: Counter[str] = Counter()
        for job_id, comment in sacct_elements(slurm_rig, since):
            match = ELEMENT.fullmatch(job_id)
            if match and comment in members:
                counts[members[comment][int(match.group(2))]] += 1
            elif comment in tags:
                counts[comment] += 1
        ours = {tag: counts[tag] for tag in tags}
        if all(n >= 1 for n in ours.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert set(ours.values()) == {1}, {t: n for t, n in ours.items() if n != 1}
