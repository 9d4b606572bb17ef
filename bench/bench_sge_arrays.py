"""A sweep through the engine to the rig's Grid Engine over SSH: arrays against one job per
task, and a plain `qsub` loop on the rig host, in the same run.

For each way: seconds until every task is accepted (the run's tasks all `submitted` in the
store; the loop: every qsub returned). Then one poll cycle of the engine's backend with every
array element tracked: transport round trips and qstat/qacct commands in the script.

Every job is held (`-h`), so the shared rig never runs them, and deleted at the end (whatever
happened) by the job numbers this bench was given: only this bench's jobs.

Run as root with the rig up (`bash tests/rig/sge.sh up`):

    .venv/bin/python bench/bench_sge_arrays.py [--tasks 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripthut.backends.base import ArrayGroup, JobRef, JobSpec, SubmitOutcome
from scripthut.backends.remote import make_transport, new_marker
from scripthut.backends.sge import SGEBackend
from scripthut.config import SGEBackendConfig, parse_config
from scripthut.engine.engine import Engine
from scripthut.store import Store
from scripthut.workflow.parse import parse_document

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_slurm_submit import rig_env, ssh_argv, ssh_entry

RIG_SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "rig" / "sge.sh"
DEADLINE = 600.0
_COMMAND = re.compile(r"\b(qstat|qacct) -")


class HeldSGE(SGEBackend):
    """The rig backend with `-h` on every job and array: nothing runs on the shared rig."""

    busy = 0.0  # seconds spent in submit / submit_arrays (the scheduler side)

    def _directives(self, spec: JobSpec, shell: str) -> tuple[list[str], list[str]]:
        header, prologue = super()._directives(spec, shell)
        return [*header, "#$ -h"], prologue

    async def submit(self, jobs: Sequence[JobSpec]) -> list[SubmitOutcome]:
        started = time.perf_counter()
        try:
            return await super().submit(jobs)
        finally:
            self.busy += time.perf_counter() - started

    async def submit_arrays(self, groups: Sequence[ArrayGroup]) -> list[list[SubmitOutcome]]:
        started = time.perf_counter()
        try:
            return await super().submit_arrays(groups)
        finally:
            self.busy += time.perf_counter() - started


def on_rig(rig: dict[str, str], script: str) -> str:
    """Run `script` (trusted bench text) as the rig user over SSH; its stdout."""
    argv = ssh_argv(rig, script)
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=900).stdout


def delete(rig: dict[str, str], numbers: Sequence[str]) -> None:
    """`qdel` these job numbers (whole arrays), 500 at a time."""
    unique = sorted({n for n in numbers if n.isdigit()})
    for start in range(0, len(unique), 500):
        on_rig(rig, f"qdel {' '.join(unique[start : start + 500])} >/dev/null 2>&1 || true")


def entry(rig: dict[str, str], log_dir: str, tasks: int, arrays: bool) -> dict[str, Any]:
    return {
        "name": "rig",
        "type": "sge",
        "log_dir": log_dir,
        "max_concurrent": tasks,
        "arrays": arrays,
        "parallel_env": rig["SGE_PE"],
        "ssh": ssh_entry(rig),
    }


async def through_engine(
    rig: dict[str, str], data: Path, log_dir: str, tasks: int, arrays: bool
) -> dict[str, float]:
    config = parse_config(
        {
            "backends": [entry(rig, log_dir, tasks, arrays)],
            "settings": {"data_dir": str(data), "poll_interval": 30},
        },
        source="bench",
    )
    backend_config = config.backend("rig")
    assert isinstance(backend_config, SGEBackendConfig)
    backend = HeldSGE(
        "rig",
        transport=make_transport(backend_config),
        max_concurrent=tasks,
        log_dir=log_dir,
        parallel_env=rig["SGE_PE"],
        arrays=arrays,
    )
    store = Store.in_data_dir(data)
    engine = Engine(config, store, min_poll_interval=30)
    engine.registry.add(backend)
    await engine.start()
    ids: list[str] = []
    try:
        await backend.site_limits()  # asked once at start in normal use; not timed
        doc = [{"id": f"b{i}", "command": "true", "memory": "50M"} for i in range(tasks)]
        started = time.perf_counter()
        record = engine.submit(parse_document(doc), name="bench")
        while store.task_counts(record.id).get("submitted", 0) < tasks:
            if time.perf_counter() - started > DEADLINE:
                raise SystemExit(f"not every task was accepted within {DEADLINE} s")
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - started
        attempts = store.attempts(record.id)
        ids = [a.job_id for a in attempts if a.job_id]
        refs = [
            JobRef(job_id, a.tag, backend.job_paths(record.id, a.task_id, 1))
            for a in attempts
            if (job_id := a.job_id)
        ]
        poll = await timed_poll(backend, refs)
    finally:
        await engine.stop()
        store.close()
        delete(rig, [job_id.split(".", 1)[0] for job_id in ids])
    return {
        "seconds": seconds,
        "backend": backend.busy,
        "jobs": len({job_id.split(".", 1)[0] for job_id in ids}),
        **poll,
    }


async def timed_poll(backend: SGEBackend, refs: list[JobRef]) -> dict[str, float]:
    script = backend.poll_script(refs, backend.host.user or "", new_marker())
    before = backend.transport.stats.commands
    started = time.perf_counter()
    result = await backend.poll(refs)
    assert result.ok, result.error
    return {
        "poll_trips": backend.transport.stats.commands - before,
        "poll_seconds": time.perf_counter() - started,
        "poll_commands": len(_COMMAND.findall(script)),
        "poll_known": sum(1 for s in result.jobs.values() if s.state.value == "pending"),
    }


def qsub_loop(rig: dict[str, str], work: str, jobs: int) -> float:
    """`qsub -terse -h` of one trivial script, `jobs` times, on the rig host itself."""
    script = "#!/bin/bash\n#$ -h\n#$ -o /dev/null\n#$ -e /dev/null\ntrue\n"
    folder = shlex.quote(work)
    on_rig(rig, f"mkdir -p {folder} && printf %s {shlex.quote(script)} > {folder}/job.sh")
    loop = f"cd {folder} && for i in $(seq {jobs}); do qsub -terse job.sh || exit 1; done > ids"
    started = time.perf_counter()
    try:
        on_rig(rig, loop)
        return time.perf_counter() - started
    finally:
        delete(rig, on_rig(rig, f"cat {folder}/ids 2>/dev/null || true").split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000)
    args = parser.parse_args()
    rig = rig_env(RIG_SCRIPT)
    name = f"hut-bench/sge-arrays-{uuid.uuid4().hex[:8]}"
    print(f"tasks={args.tasks}; files in ~/{name}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            arrays = asyncio.run(
                through_engine(rig, Path(tmp) / "a", f"~/{name}/arrays", args.tasks, True)
            )
            print("  arrays done")
            plain = asyncio.run(
                through_engine(rig, Path(tmp) / "p", f"~/{name}/plain", args.tasks, False)
            )
            print("  one job per task done")
        loop = qsub_loop(rig, f"{name}/loop", args.tasks)
        print("  qsub loop done")
    finally:
        on_rig(rig, f"rm -rf -- {shlex.quote(name)}; rmdir -- hut-bench 2>/dev/null || true")
    report(args.tasks, arrays, plain, loop)


def report(tasks: int, arrays: dict[str, float], plain: dict[str, float], loop: float) -> None:
    print()
    print("seconds: until every task is accepted; submit: of that, in the backend's submit calls")
    print(f"{'accept ' + str(tasks) + ' tasks (held)':<40} {'seconds':>8} {'submit':>8}")
    for label, row in (("engine, arrays", arrays), ("engine, one job per task", plain)):
        print(f"{label:<40} {row['seconds']:8.2f} {row['backend']:8.2f}")
    print(f"{'qsub loop on the rig host':<40} {loop:8.2f} {loop:8.2f}")
    print()
    print(f"arrays: {arrays['jobs']:.0f} array job(s) for {tasks} tasks")
    speed = plain["seconds"] / arrays["seconds"]
    print(f"one job per task / arrays: {speed:.1f}x the time (target >= 10)")
    print(f"  of which the scheduler side: {plain['backend'] / arrays['backend']:.1f}x")
    print(f"qsub loop / arrays:        {loop / arrays['seconds']:.1f}x the time")
    print()
    print(
        f"poll cycle with {tasks} array elements tracked: {arrays['poll_trips']:.0f} round "
        f"trip(s), {arrays['poll_commands']:.0f} qstat/qacct command(s) in the script "
        f"(target 1 and <= 2), {arrays['poll_seconds']:.2f} s, "
        f"{arrays['poll_known']:.0f} elements seen pending"
    )


if __name__ == "__main__":
    main()
