"""PBS job arrays end to end over SSH against the rig's Torque wrappers (over Slurm).

The wrappers take `#PBS -t 0-<n-1>%<throttle>` and make a Slurm array, but print a bare id
(`123`, not `123[]`), know no `qstat -t` and list one record per element under Slurm's own
ids, give the elements only Slurm's variables (`$SLURM_ARRAY_TASK_ID`, which the wrapper
falls back to), and take `qdel '123[1]'` for `qdel 123`: the whole array. So here elements
take their array's state until their exit-code files say how they ended, and cancelling one
task cancels its siblings too, reported as such (never as failures). Per-element polling
and cancel on real Torque and PBS Pro are proven on fixtures (tests/test_pbs_arrays.py).
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.workflow.parse import parse_document
from tests.helpers import (
    SweepTask,
    assert_sweep,
    run_sweep,
    sweep_document,
    wait_all_running,
)
from tests.pbs.test_pbs_rig import MEM, drive, pbs_config
from tests.pbs.test_pbs_rig import place as place  # the fixture
from tests.slurm.conftest import SlurmRig

ELEMENT = re.compile(r"([0-9]+)\[([0-9]+)\]")

PROBE = r"""set -u
B={bin}
d=$HOME/{folder}; mkdir -p "$d"; cd "$d"
o='"$HOME/{folder}/$1.$SLURM_ARRAY_TASK_ID"'
v='T=${{PBS_ARRAYID-unset}} P=${{PBS_ARRAY_INDEX-unset}} S=$SLURM_ARRAY_TASK_ID'
printf '%s\n' '#!/bin/bash' "echo \"$v\" > $o" > t.sh
cp t.sh j.sh; sed -i 's/\$1/torque/' t.sh; sed -i 's/\$1/pro/' j.sh
a=$("$B/qsub" -h -t 0-2%1 t.sh); b=$("$B/qsub" -h -J 0-2 j.sh)
echo "ids $a $b"
"$B/qstat" -f "$a" | grep -c '^Job Id:' | sed 's/^/records /'
"$B/qstat" -t >/dev/null 2>&1; echo "qstat-t $?"
"$B/qdel" "$a[1]" >/dev/null 2>&1; echo "qdel-element $?"
scontrol release "$a" "$b" >/dev/null
for _ in $(seq 120); do [ "$(ls "$d" | grep -c '^pro\.[0-9]$')" -ge 3 ] && break; sleep 0.5; done
cat "$d"/pro.2; ls "$d" | grep -c '^torque\.' | sed 's/^/torque-elements /'
"$B/qdel" "$a" "$b" >/dev/null 2>&1; cd; rm -rf -- "$d"
"""


def elements(job_ids: list[str]) -> list[tuple[str, int]]:
    """(array id, index) of element ids; fails on a plain job id."""
    out = []
    for job_id in job_ids:
        match = ELEMENT.fullmatch(job_id)
        assert match, f"{job_id} is not an array element"
        out.append((match.group(1), int(match.group(2))))
    return out


def test_what_the_wrappers_do_with_arrays(pbs_rig: SlurmRig) -> None:
    folder = f"hut-pbs-arrays-{uuid.uuid4().hex[:10]}"
    script = PROBE.format(bin=pbs_rig.torque_bin, folder=folder)
    done = subprocess.run(
        pbs_rig.ssh_argv("bash", "-s"),
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = done.stdout.splitlines()
    ids = lines[0].split()[1:]
    assert len(ids) == 2 and all(job_id.isdigit() for job_id in ids), lines  # no `123[]`
    assert lines[1:4] == ["records 1", "qstat-t 2", "qdel-element 0"], lines
    # `qdel 123[1]` deleted the whole held Torque-style array: none of its elements ran.
    assert lines[4:] == ["T=unset P=unset S=2", "torque-elements 0"], lines


def test_a_sweep_runs_as_arrays_with_every_task_its_own(
    pbs_rig: SlurmRig, place: str, tmp_path: Path
) -> None:
    config = pbs_config(pbs_rig, place, tmp_path / "data")
    failing = {3, 11}

    async def body(engine: Engine) -> tuple[RunState, dict[str, SweepTask]]:
        return await run_sweep(engine, sweep_document(24, failing, 4, MEM), "rig", 300)

    state, tasks = drive(config, body)
    assert state == RunState.FAILED
    assert_sweep(tasks, 24, failing, 4)
    placed = elements([str(t.job_id) for t in tasks.values()])
    assert len(set(placed)) == 24, "one element per task"
    assert len({array for array, _ in placed}) <= 2, "the sweep went as one or two arrays"


def test_cancelling_one_task_cancels_its_array_here_and_says_so(
    pbs_rig: SlurmRig, place: str, tmp_path: Path
) -> None:
    config = pbs_config(pbs_rig, place, tmp_path / "data")
    doc = [{"id": f"s{i}", "command": "sleep 120", "memory": MEM} for i in range(3)]

    async def body(engine: Engine) -> dict[str, Any]:
        record = engine.submit(parse_document(doc), name="cancel-one")
        tasks = await wait_all_running(engine, record.id, 120)
        victim = tasks["s1"].job_id
        assert victim is not None
        await engine.cancel_job("rig", victim)
        final = await engine.wait(record.id, timeout=120)
        return {
            "state": final.state,
            "tasks": {t.task_id: (t.state, t.reason) for t in engine.store.tasks(record.id)},
            "ids": {t.task_id: t.job_id for t in engine.store.tasks(record.id)},
        }

    got = drive(config, body)
    assert len({array for array, _ in elements(list(got["ids"].values()))}) == 1
    states = {task: state for task, (state, _reason) in got["tasks"].items()}
    assert states == {
        "s0": TaskState.CANCELLED,
        "s1": TaskState.CANCELLED,
        "s2": TaskState.CANCELLED,
    }
    for task in ("s0", "s2"):
        reason = got["tasks"][task][1] or ""
        assert "whole array was deleted" in reason and got["ids"]["s1"] in reason, reason
    assert got["state"] != RunState.COMPLETED
