"""Launch throughput of the local backend against `xargs -P`, measured in the same run.

1000 trivial jobs at max_concurrent 8 through LocalBackend (each a script that records its
exit code, as real jobs do), then the same number of `bash -c true` through
`xargs -P 8 -n 1 bash -c`, alternating for a few rounds (this machine is shared: its load
varies). Prints each round's wall times and the median ratio (target <= 2).

Logs go to a temporary folder under ~/.cache (--tmp-parent to change). Each job costs the
backend four file creations (script, tag entry, stdout, stderr) that xargs does not make,
so a slow file system shows in the ratio.

    .venv/bin/python bench/bench_local_backend.py [--jobs 1000] [--parallel 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from scripthut.backends.base import JobRef, JobSpec
from scripthut.backends.local import LocalBackend
from scripthut.states import JobState


def job_spec(backend: LocalBackend, index: int) -> JobSpec:
    paths = backend.job_paths("bench", f"t{index}", 1)
    script = f"trap 'echo $? > {shlex.quote(paths.exit_code)}' EXIT\ntrue\n"
    return JobSpec(
        tag=f"bench-t{index}",
        run_id="bench",
        task_id=f"t{index}",
        attempt=1,
        name=f"t{index}",
        script=script,
        paths=paths,
        working_dir="~",
    )


async def run_backend(log_dir: Path, jobs: int, parallel: int) -> float:
    """Seconds from the first submit to the last job's recorded end."""
    # Capacity as large as the parallelism, so max_concurrent is what limits (as in xargs).
    backend = LocalBackend("bench", max_concurrent=parallel, log_dir=log_dir, cpus=parallel)
    specs = [job_spec(backend, i) for i in range(jobs)]
    started = time.perf_counter()
    outcomes = await backend.submit(specs)
    assert all(outcome.job_id for outcome in outcomes), outcomes[:3]
    while (info := await backend.info()).queue_depth or info.cpus_idle != info.cpus_total:
        backend.changed.clear()
        await backend.changed.wait()
    elapsed = time.perf_counter() - started
    refs = [JobRef(job_id=s.tag, tag=s.tag, paths=s.paths) for s in specs]
    states = {status.state for status in (await backend.poll(refs)).jobs.values()}
    assert states == {JobState.COMPLETED}, states
    await backend.close()
    return elapsed


def run_xargs(jobs: int, parallel: int) -> float:
    commands = "true\n" * jobs
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", str(parallel), "-n", "1", "bash", "-c"],
        input=commands.encode(),
        check=True,
    )
    return time.perf_counter() - started


def one_round(log_dir: Path, jobs: int, parallel: int) -> tuple[float, float]:
    backend_s = asyncio.run(run_backend(log_dir, jobs, parallel))
    return backend_s, run_xargs(jobs, parallel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tmp-parent", type=Path, default=Path.home() / ".cache")
    args = parser.parse_args()
    args.tmp_parent.mkdir(parents=True, exist_ok=True)
    print(f"jobs={args.jobs} parallel={args.parallel} logs under {args.tmp_parent}")
    ratios = []
    # Logs are deleted only after the last round: deleting thousands of files makes work
    # for the file system that would slow the next round's file creation.
    with tempfile.TemporaryDirectory(prefix="scripthut-bench-", dir=args.tmp_parent) as tmp:
        for number in range(1, args.rounds + 1):
            log_dir = Path(tmp) / f"round{number}"
            backend_s, xargs_s = one_round(log_dir, args.jobs, args.parallel)
            ratios.append(backend_s / xargs_s)
            print(
                f"round {number}: local backend {backend_s:.3f} s "
                f"({args.jobs / backend_s:.0f} jobs/s), xargs -P {xargs_s:.3f} s "
                f"({args.jobs / xargs_s:.0f} jobs/s), ratio {ratios[-1]:.2f}"
            )
    print(f"median ratio backend/xargs: {statistics.median(ratios):.2f} (target <= 2)")


if __name__ == "__main__":
    main()
