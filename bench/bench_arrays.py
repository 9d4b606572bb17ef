"""A large sweep through the engine to the rig's Slurm over SSH: arrays against one job per
task, and a plain `sbatch` loop on the rig host, in the same run.

For each way: seconds until every task is accepted (the run's tasks all `submitted` in the
store; the loop: every sbatch returned), and the slurmctld RPCs it cost (`sdiag` before and
after: all RPCs by message type, and the rig user's). Then one poll cycle of the engine's
backend with every array element tracked: transport round trips and squeue/sacct commands.

Every job is held (`--hold`), so the shared rig never runs them, and cancelled at the end
(whatever happened) by the run's tag in `--comment`: only this bench's jobs. Slurm's
`MaxJobCount` counts every array element, pending or ended less than `MinJobAge` ago, and
past it sbatch blocks: so the sweep is 10,000 tasks when nine tenths of the rig's
MaxJobCount hold them (the backend keeps to that; the rig's slurm.conf sets 25,000), else
the most that fits (9,000 under Slurm's default 10,000); each way waits until the
controller has purged the one before, and the plain ways run `--plain-tasks` (default
2,000) scaled to the sweep (one sbatch per task: linear).

Run as root with the rig up (`bash tests/rig/slurm.sh up`):

    .venv/bin/python bench/bench_arrays.py [--tasks 10000] [--plain-tasks 2000]
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
from scripthut.backends.slurm import SlurmBackend
from scripthut.config import SlurmBackendConfig, parse_config
from scripthut.engine.engine import Engine
from scripthut.store import Store
from scripthut.workflow.parse import parse_document

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_slurm_submit import _COMMAND, cancel, rig_env, run_as_user, ssh_entry

DEADLINE = 600.0
_RPC = re.compile(r"^\s*(\S+)\s+\(\s*\d+\)\s+count:(\d+)", re.MULTILINE)


class HeldSlurm(SlurmBackend):
    """The rig backend with `--hold` on every job and array: nothing runs on the shared rig."""

    busy = 0.0  # seconds spent in submit / submit_arrays (the scheduler side)

    def _directives(self, spec: JobSpec) -> list[str]:
        return [*super()._directives(spec), "#SBATCH --hold"]

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


def sdiag() -> tuple[int, int]:
    """(all RPCs by message type, the rig user's RPCs) so far."""
    text = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    by_type, _, rest = text.partition("Remote Procedure Call statistics by user")
    user = rest.split("Pending RPC", 1)[0]
    total = sum(int(n) for _name, n in _RPC.findall(by_type.split("by message type", 1)[-1]))
    mine = sum(int(n) for name, n in _RPC.findall(user) if name == RIG_USER)
    return total, mine


RIG_USER = ""
ISSUE_TASKS = 10_000  # the sweep the target is stated for
PURGE_LIMIT = 1_000  # job records other ways may leave behind (wait_purged)


def default_tasks() -> int:
    """10,000 when nine tenths of MaxJobCount hold them (what the backend keeps to), else
    the most that fits, in thousands."""
    config = controller_output(["scontrol", "show", "config"])
    found = re.search(r"^MaxJobCount\s*=\s*(\d+)", config, re.MULTILINE)
    room = int(found.group(1)) * 9 // 10 if found else ISSUE_TASKS
    return max(1_000, min(ISSUE_TASKS, room // 1_000 * 1_000))


def entry(rig: dict[str, str], log_dir: str, tasks: int, arrays: bool) -> dict[str, Any]:
    return {
        "name": "rig",
        "type": "slurm",
        "transport": "ssh",
        "log_dir": log_dir,
        "max_concurrent": tasks,
        "arrays": arrays,
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
    assert isinstance(backend_config, SlurmBackendConfig)
    backend = HeldSlurm(
        "rig",
        transport=make_transport(backend_config),
        max_concurrent=tasks,
        log_dir=log_dir,
        arrays=arrays,
    )
    store = Store.in_data_dir(data)
    runs: list[str] = []
    engine = Engine(config, store, min_poll_interval=30)
    engine.registry.add(backend)
    await engine.start()
    try:
        await backend.site_limits()  # asked once at start in normal use; not timed
        doc = [{"id": f"b{i}", "command": "true", "memory": "50M"} for i in range(tasks)]
        workflow = parse_document(doc)
        before = sdiag()
        started = time.perf_counter()
        record = engine.submit(workflow, name="bench")
        runs.append(record.id)
        while store.task_counts(record.id).get("submitted", 0) < tasks:
            if time.perf_counter() - started > DEADLINE:
                raise SystemExit(f"not every task was accepted within {DEADLINE} s")
            await asyncio.sleep(0.1)
        seconds = time.perf_counter() - started
        after = sdiag()
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
        for run in runs:
            cancel_run(rig, run)
    return {
        "seconds": seconds,
        "backend": backend.busy,
        "rpcs": after[0] - before[0],
        "user_rpcs": after[1] - before[1],
        "jobs": len({job_id.split("_", 1)[0] for job_id in ids}),
        **poll,
    }


def cancel_run(rig: dict[str, str], run: str) -> None:
    """Cancel every job (whole arrays) whose comment is a tag of `run`."""
    listing = run_as_user(rig, "squeue --noheader --user=\"$(id -un)\" --format='%F|%k'")
    ids = sorted({line.split("|", 1)[0] for line in listing.splitlines() if f"|hut.{run}." in line})
    cancel(rig, ids)


def controller_output(argv: list[str], timeout: float = 120) -> str:
    """A Slurm command's output, asked again while the controller does not answer (the rig
    is shared: other suites stop and restart slurmctld)."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode == 0 or time.monotonic() > deadline:
            done.check_returncode()
            return done.stdout
        time.sleep(2)


def wait_purged(limit: int = PURGE_LIMIT, timeout: float = 240) -> None:
    """Until the controller holds fewer than `limit` job records (ended ones go after
    MinJobAge), so one way's jobs do not push the next past MaxJobCount."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = controller_output(["squeue", "--noheader", "--array", "--states=all", "--format=%i"])
        if out.count("\n") < limit:
            return
        time.sleep(3)
    raise SystemExit(f"the controller still holds {limit}+ job records after {timeout} s")


async def timed_poll(backend: SlurmBackend, refs: list[JobRef]) -> dict[str, float]:
    script = backend.poll_script(refs, backend.host.user or "", new_marker())
    before = backend.transport.stats.commands
    started = time.perf_counter()
    result = await backend.poll(refs)
    assert result.ok, result.error
    return {
        "poll_trips": backend.transport.stats.commands - before,
        "poll_seconds": time.perf_counter() - started,
        "poll_commands": len(_COMMAND.findall(script)),
        "poll_known": sum(1 for s in result.jobs.values() if s.raw_state),
    }


def sbatch_loop(rig: dict[str, str], work: str, jobs: int) -> dict[str, float]:
    script = "#!/bin/bash\n#SBATCH --hold\n#SBATCH --mem=50M\n#SBATCH --output=/dev/null\ntrue\n"
    run_as_user(rig, f"mkdir -p {shlex.quote(work)} && cat > {shlex.quote(work)}/job.sh", script)
    loop = (
        f"cd {shlex.quote(work)} && for i in $(seq {jobs}); do "
        "sbatch --parsable < job.sh || exit 1; done > ids"
    )
    before = sdiag()
    started = time.perf_counter()
    run_as_user(rig, loop)
    seconds = time.perf_counter() - started
    after = sdiag()
    ids = run_as_user(rig, f"cat {shlex.quote(work)}/ids").split()
    cancel(rig, ids)
    return {
        "seconds": seconds,
        "backend": seconds,
        "rpcs": after[0] - before[0],
        "user_rpcs": after[1] - before[1],
    }


def main() -> None:
    global RIG_USER
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=None, help="default: 10,000 if it fits")
    parser.add_argument("--plain-tasks", type=int, default=2_000)
    args = parser.parse_args()
    if args.tasks is None:
        args.tasks = default_tasks()
    rig = rig_env()
    RIG_USER = rig["SSH_USER"]
    name = f"hut-bench/arrays-{uuid.uuid4().hex[:8]}"
    work = f"{rig['SSH_HOME']}/{name}"
    scale = args.tasks / args.plain_tasks
    print(
        f"tasks={args.tasks} (plain ways: {args.plain_tasks}, scaled x{scale:g}); files in {work}"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wait_purged()
            arrays = asyncio.run(
                through_engine(rig, Path(tmp) / "a", f"~/{name}/arrays", args.tasks, True)
            )
            print("  arrays done")
            wait_purged()
            plain = asyncio.run(
                through_engine(rig, Path(tmp) / "p", f"~/{name}/plain", args.plain_tasks, False)
            )
            print("  one job per task done")
        loop = sbatch_loop(rig, f"{work}/loop", args.plain_tasks)
        print("  sbatch loop done")
    finally:
        parent = shlex.quote(str(Path(work).parent))
        run_as_user(rig, f"rm -rf -- {shlex.quote(work)}; rmdir -- {parent} 2>/dev/null || true")
    report(args, arrays, plain, loop, scale)


def report(
    args: argparse.Namespace,
    arrays: dict[str, float],
    plain: dict[str, float],
    loop: dict[str, float],
    scale: float,
) -> None:
    rows = [
        ("engine, arrays", arrays, 1.0),
        ("engine, one job per task (scaled)", plain, scale),
        ("sbatch loop on the rig host (scaled)", loop, scale),
    ]
    print()
    print("seconds: until every task is accepted; submit: of that, in the backend's submit calls")
    print(
        f"{'accept ' + str(args.tasks) + ' tasks (held)':<40} "
        f"{'seconds':>8} {'submit':>8} {'RPCs':>8} {'user RPCs':>10}"
    )
    for label, row, factor in rows:
        print(
            f"{label:<40} {row['seconds'] * factor:8.2f} {row['backend'] * factor:8.2f} "
            f"{row['rpcs'] * factor:8.0f} "
            f"{row['user_rpcs'] * factor:10.0f}"
        )
    print()
    print(f"arrays: {arrays['jobs']:.0f} array jobs for {args.tasks} tasks")
    speed = plain["seconds"] * scale / arrays["seconds"]
    rpcs = plain["rpcs"] * scale / max(1.0, arrays["rpcs"])
    print(f"one job per task / arrays: {speed:.1f}x the time (target >= 10)")
    side = plain["backend"] * scale / arrays["backend"]
    print(f"  of which the scheduler side (submit calls): {side:.1f}x")
    print(f"one job per task / arrays: {rpcs:.1f}x the controller RPCs (target >= 10)")
    print(f"sbatch loop / arrays:      {loop['seconds'] * scale / arrays['seconds']:.1f}x the time")
    print()
    print(
        f"poll cycle with {args.tasks} array elements tracked: {arrays['poll_trips']:.0f} round "
        f"trip(s), {arrays['poll_commands']:.0f} squeue/sacct command(s) in the script "
        f"(target 1 and <= 2), {arrays['poll_seconds']:.2f} s, "
        f"{arrays['poll_known']:.0f} elements placed"
    )


if __name__ == "__main__":
    main()
