"""Grid Engine job arrays on the real rig: a sweep as one `-t` job, per-task logs and exit
codes, a failing element failing only its task, find by the wrapper's tags line, and cancelling
one element with `qdel <job> -t <task>`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from scripthut.backends.base import ArrayGroup, JobStatus
from scripthut.backends.sge import SGEBackend
from scripthut.engine.engine import Engine
from scripthut.states import JobState, RunState
from scripthut.store import Store
from tests.helpers import SweepTask, assert_sweep, run_sweep, sweep_document
from tests.sge.conftest import SGERig
from tests.sge.test_sge_backend import (
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
from tests.sge.test_sge_backend import log_dir as log_dir  # the fixture
from tests.sge.test_sge_workflows import drive
from tests.slurm.test_slurm_faults import scripthut


def test_a_sweep_runs_as_one_array_with_per_task_logs_and_exit_codes(
    sge_rig: SGERig, log_dir: str, tmp_path: Path
) -> None:
    backend = make_backend(sge_rig, log_dir, tmp_path)
    assert backend.arrays_enabled()
    run = run_id()
    commands = ["echo out-0", "echo out-1; exit 3", "echo out-2 >&2", "echo out-3"]
    specs = [job_spec(backend, run, i, command) for i, command in enumerate(commands)]

    async def body(sge: SGEBackend) -> tuple[list[str | None], dict[str, JobStatus], object]:
        (outcomes,) = await sge.submit_arrays([ArrayGroup(specs, 2)])
        ids = [outcome.job_id for outcome in outcomes]
        statuses = await poll_until(sge, refs_for(specs, ids), all_final)
        found = await sge.find([spec.tag for spec in specs])
        return ids, statuses, found

    ids, statuses, found = with_backend(backend, body)
    number = str(ids[0]).split(".")[0]
    assert ids == [f"{number}.{task}" for task in range(1, 5)]
    assert [statuses[str(i)].state for i in ids] == [
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.COMPLETED,
        JobState.COMPLETED,
    ]
    assert statuses[str(ids[1])].exit_code == 3
    assert found == {spec.tag: job_id for spec, job_id in zip(specs, ids, strict=True)}
    outs = sge_rig.ssh(" ".join(f"cat {spec.paths.stdout};" for spec in specs))
    assert outs.split() == ["out-0", "out-1", "out-3"]
    assert sge_rig.ssh(f"cat {specs[2].paths.stderr}").strip() == "out-2"
    wrapper = sge_rig.ssh(f"cat {log_dir}/.arrays/*.sh")
    assert "#$ -t 1-4" in wrapper and "#$ -tc 2" in wrapper


def test_one_element_is_cancelled_alone(sge_rig: SGERig, log_dir: str, tmp_path: Path) -> None:
    backend = make_backend(sge_rig, log_dir, tmp_path)
    run = run_id()
    specs = [job_spec(backend, run, i, "sleep 3") for i in range(3)]

    async def body(sge: SGEBackend) -> tuple[list[str | None], dict[str, JobStatus]]:
        (outcomes,) = await sge.submit_arrays([ArrayGroup(specs, 1)])
        ids = [outcome.job_id for outcome in outcomes]
        await sge.cancel([str(ids[2])])
        return ids, await poll_until(sge, refs_for(specs, ids), all_final, timeout=120)

    ids, statuses = with_backend(backend, body)
    assert [statuses[str(i)].state for i in ids] == [
        JobState.COMPLETED,
        JobState.COMPLETED,
        JobState.CANCELLED,
    ]


def test_an_engine_sweep_goes_as_arrays_and_every_task_keeps_its_own(
    sge_rig: SGERig, log_dir: str, tmp_path: Path
) -> None:
    config = rig_config(sge_rig, log_dir, tmp_path / "data", max_concurrent=30)
    size, failing = 30, {4, 17}

    async def body(engine: Engine) -> tuple[RunState, dict[str, SweepTask]]:
        return await run_sweep(engine, sweep_document(size, failing, 3, "100M"), "rig", 300)

    state, tasks = drive(config, body)
    assert state == RunState.FAILED
    assert_sweep(tasks, size, failing, 3)
    placed = [str(t.job_id).split(".") for t in tasks.values()]
    assert all(len(p) == 2 for p in placed), "every task is an array element"
    assert len({tuple(p) for p in placed}) == size, "one element per task"
    assert len({p[0] for p in placed}) <= 2, "the sweep went as one or two arrays"


KILLED_SWEEP = 200


@pytest.mark.slow
def test_engine_killed_while_submitting_an_array_sweep(
    sge_rig: SGERig, log_dir: str, tmp_path: Path
) -> None:
    config = tmp_path / "scripthut.yaml"
    entry = rig_backend_entry(sge_rig, log_dir, max_concurrent=KILLED_SWEEP, max_array_size=10)
    settings = {"data_dir": str(tmp_path / "data"), "poll_interval": 2}
    config.write_text(yaml.safe_dump({"backends": [entry], "settings": settings}))
    prefix = f"k{uuid.uuid4().hex[:8]}"  # job names unique to this run, for qacct
    tasks = [
        {"id": f"{prefix}-{i}", "command": "true", "memory": "100M"} for i in range(KILLED_SWEEP)
    ]
    workflow = tmp_path / "sweep.json"
    workflow.write_text(json.dumps(tasks))
    env = {**os.environ, "SCRIPTHUT_CONFIG": str(config)}

    first = scripthut("run", str(workflow), "--json", env=env)
    count = f"ls {log_dir}/.tags 2>/dev/null | wc -l"
    deadline = time.monotonic() + 120
    while int(sge_rig.ssh(count).strip() or 0) < 2:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "submission did not start"
    first.send_signal(signal.SIGKILL)
    first.wait()
    accepted_at_kill = int(sge_rig.ssh(count).strip() or 0)
    # The remote script may finish the submission after the kill: what matters is that the
    # engine died before it heard back.
    assert first.returncode == -signal.SIGKILL and accepted_at_kill >= 2

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
    assert set(result["tasks"].values()) == {"completed"}
    assert len(result["tasks"]) == KILLED_SWEEP

    store = Store.in_data_dir(tmp_path / "data")
    attempts = store.attempts(run)
    assert len({a.tag for a in attempts}) == KILLED_SWEEP, "a task was submitted twice"
    assert len({a.job_id for a in attempts}) == KILLED_SWEEP
    # Every array went to Grid Engine once: one job number for its job name (`#$ -N`, the
    # first task's name and `(+n)`, unique to this run) in qacct.
    jobs_per_name = (
        f"for f in {log_dir}/.arrays/*.sh; do n=$(sed -n 's/^#[$] -N //p' \"$f\"); "
        'printf "%s " "$n"; qacct -j "$n" 2>/dev/null | awk \'$1 == "jobnumber" { print $2 }\' '
        "| sort -u | wc -l; done"
    )
    deadline = time.monotonic() + 60  # accounting may lag the exit-code files
    while True:
        per_array = dict(line.split() for line in sge_rig.ssh(jobs_per_name).strip().splitlines())
        if "0" not in per_array.values() or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert per_array and set(per_array.values()) == {"1"}, per_array
