"""Submitting 1000 tasks to the rig's Slurm over SSH, against two baselines in the same run.

- ours: `SlurmBackend.submit` of N jobs over one SSH connection (a generated script per
  chunk of at most 200 jobs: script file, sbatch on stdin, tag index; 4 chunks at a time),
  until every job is accepted; and the same with one chunk at a time (submit_parallel=1);
- (a) the limit: a plain `for` loop of `sbatch --parsable < script` run on the cluster host
  itself, as the rig user (`runuser -u hutuser`), no SSH at all;
- (b) one `ssh host sbatch` per task with the system OpenSSH client (the rig's key and
  known_hosts, a new connection each time): timed for --ssh-sample tasks and scaled to N.

Every job is the same task script with its #SBATCH header, submitted held (`--hold`) so the
shared rig does not have to run thousands of jobs; all of them are cancelled at the end (by
id, as the rig user: only this bench's jobs). Also counts what a poll cycle costs with N jobs
tracked: transport round trips, and squeue/sacct invocations in the generated script.

Run as root with the rig up (`bash tests/rig/slurm.sh up`):

    .venv/bin/python bench/bench_slurm_submit.py [--jobs 1000] [--ssh-sample 100]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import statistics
import subprocess
import time
import uuid
from dataclasses import replace
from pathlib import Path

from scripthut.backends.base import JobRef, JobSpec
from scripthut.backends.remote import new_marker
from scripthut.backends.slurm import SUBMIT_PARALLEL, SlurmBackend
from scripthut.transport import LocalTransport, SSHTransport
from scripthut.workflow.env import resolve_env
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.script import render_task_script

RIG_SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "rig" / "slurm.sh"
# An invocation: the command word followed by its options (section names are not followed by --).
_COMMAND = re.compile(r"\b(squeue|sacct) --")


def rig_env(script: Path = RIG_SCRIPT) -> dict[str, str]:
    """The connection details a rig script prints (`<rig>.sh env`), without their prefix."""
    out = subprocess.run(["bash", str(script), "env"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the rig ({script.name}) is not up: {out.stderr.strip()}")
    env: dict[str, str] = {}
    for line in out.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export":
            name, _, value = words[1].partition("=")
            env[name.removeprefix("SCRIPTHUT_RIG_")] = value
    return env


def ssh_entry(rig: dict[str, str]) -> dict[str, object]:
    """The `ssh` block of a backend entry reaching the rig's user."""
    return {
        "host": rig["SSH_HOST"],
        "port": int(rig["SSH_PORT"]),
        "user": rig["SSH_USER"],
        "key_path": rig["SSH_KEY"],
        "known_hosts": rig["KNOWN_HOSTS"],
    }


def ssh_argv(rig: dict[str, str], *remote: str) -> list[str]:
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-p",
        rig["SSH_PORT"],
        "-i",
        rig["SSH_KEY"],
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={rig['KNOWN_HOSTS']}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        f"{rig['SSH_USER']}@{rig['SSH_HOST']}",
        *remote,
    ]


def held(script: str) -> str:
    shebang, _, rest = script.partition("\n")
    return f"{shebang}\n#SBATCH --hold\n{rest}"


def job_spec(backend: SlurmBackend, run_id: str, index: int) -> JobSpec:
    task = TaskSpec(id=f"t{index}", command="true", name=f"bench t{index}", memory="100M")
    paths = backend.job_paths(run_id, task.id, 1)
    tag = f"hut.{run_id}.{index}.1"
    body = render_task_script(task, resolve_env([], {}, {}), exit_path=paths.exit_code, tag=tag)
    spec = JobSpec(
        tag=tag,
        run_id=run_id,
        task_id=task.id,
        attempt=1,
        name=task.name,
        script="",
        paths=paths,
        working_dir="~",
        memory_mb=100,
        partition="debug",
    )
    return replace(spec, script=held(backend.render_script(spec, body)))


def run_as_user(rig: dict[str, str], script: str, stdin: str | None = None) -> str:
    argv = ["runuser", "-u", rig["SSH_USER"], "--", "bash", "-c", script]
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True)
    return done.stdout


def cancel(rig: dict[str, str], job_ids: list[str]) -> None:
    for start in range(0, len(job_ids), 500):
        chunk = " ".join(shlex.quote(j) for j in job_ids[start : start + 500])
        run_as_user(rig, f"cd && scancel {chunk}")


def baseline_local_loop(rig: dict[str, str], work: str, script: str, jobs: int) -> float:
    """(a) `sbatch` in a loop on the cluster host itself."""
    run_as_user(rig, f"mkdir -p {shlex.quote(work)} && cat > {shlex.quote(work)}/job.sh", script)
    loop = (
        f"cd {shlex.quote(work)} && for i in $(seq {jobs}); do "
        "sbatch --parsable < job.sh || exit 1; done > ids"
    )
    started = time.perf_counter()
    run_as_user(rig, loop)
    elapsed = time.perf_counter() - started
    ids = run_as_user(rig, f"cat {shlex.quote(work)}/ids").split()
    assert len(ids) == jobs, len(ids)
    cancel(rig, ids)
    return elapsed


def baseline_ssh_per_task(rig: dict[str, str], script: str, sample: int) -> float:
    """(b) one `ssh host sbatch` per task; seconds for `sample` tasks."""
    ids: list[str] = []
    started = time.perf_counter()
    for _ in range(sample):
        out = subprocess.run(
            ssh_argv(rig, "sbatch", "--parsable"),
            input=script,
            capture_output=True,
            text=True,
            check=True,
        )
        ids.append(out.stdout.strip())
    elapsed = time.perf_counter() - started
    cancel(rig, ids)
    return elapsed


async def ours(
    rig: dict[str, str], log_dir: str, jobs: int, parallel: int = SUBMIT_PARALLEL
) -> dict[str, float]:
    transport = SSHTransport(
        host=rig["SSH_HOST"],
        port=int(rig["SSH_PORT"]),
        user=rig["SSH_USER"],
        key_path=rig["SSH_KEY"],
        known_hosts=rig["KNOWN_HOSTS"],
    )
    backend = SlurmBackend(
        "rig", transport=transport, max_concurrent=jobs, log_dir=log_dir, submit_parallel=parallel
    )
    await backend.start()
    try:
        run_id = f"bench-{uuid.uuid4().hex[:8]}"
        specs = [job_spec(backend, run_id, i) for i in range(jobs)]
        before = transport.stats.commands
        started = time.perf_counter()
        outcomes = await backend.submit(specs)
        elapsed = time.perf_counter() - started
        submit_trips = transport.stats.commands - before
        ids = [o.job_id for o in outcomes if o.job_id]
        assert len(ids) == jobs, [o.error for o in outcomes if o.error][:3]
        refs = [JobRef(i, s.tag, s.paths) for i, s in zip(ids, specs, strict=True)]
        user = backend.host.user or ""
        script = backend.poll_script(refs, user, new_marker())
        commands = len(_COMMAND.findall(script))
        held_poll = await timed_poll(backend, refs)
        await backend.cancel(ids)
        await asyncio.sleep(2)
        ended_poll = await timed_poll(backend, refs)
        return {
            "seconds": elapsed,
            "submit_trips": submit_trips,
            "script_commands": commands,
            "script_kib": len(script) / 1024,
            **{f"held_{k}": v for k, v in held_poll.items()},
            **{f"ended_{k}": v for k, v in ended_poll.items()},
        }
    finally:
        await backend.close()


async def timed_poll(backend: SlurmBackend, refs: list[JobRef]) -> dict[str, float]:
    before = backend.transport.stats.commands
    started = time.perf_counter()
    result = await backend.poll(refs)
    assert result.ok, result.error
    states = {s.state.value for s in result.jobs.values()}
    return {
        "trips": backend.transport.stats.commands - before,
        "seconds": time.perf_counter() - started,
        "final": sum(s.state.is_final for s in result.jobs.values()),
        "states": len(states),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--ssh-sample", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="(a) and ours, alternating order")
    args = parser.parse_args()
    rig = rig_env()
    name = f"hut-bench/{uuid.uuid4().hex[:8]}"
    work = f"{rig['SSH_HOME']}/{name}"
    print(f"jobs={args.jobs}, ssh sample={args.ssh_sample}, rounds={args.rounds}, files in {work}")
    locals_: list[float] = []
    results: list[dict[str, float]] = []
    try:
        # The same script as ours (absolute log paths: no connection needed to render it).
        renderer = SlurmBackend("a", transport=LocalTransport(), max_concurrent=1, log_dir=work)
        script = job_spec(renderer, "bench-a", 0).script
        for round_ in range(args.rounds):
            steps = ["a", "ours"] if round_ % 2 == 0 else ["ours", "a"]
            for step in steps:
                if step == "a":
                    locals_.append(baseline_local_loop(rig, f"{work}/a{round_}", script, args.jobs))
                else:
                    log_dir = f"~/{name}/ours{round_}"
                    results.append(asyncio.run(ours(rig, log_dir, args.jobs)))
                print(f"  round {round_ + 1}: {step} done")
        serial = asyncio.run(ours(rig, f"~/{name}/serial", args.jobs, parallel=1))["seconds"]
        print("  ours with one stream done")
        sample = baseline_ssh_per_task(rig, script, args.ssh_sample)
    finally:
        parent = shlex.quote(str(Path(work).parent))
        run_as_user(rig, f"rm -rf -- {shlex.quote(work)}; rmdir -- {parent} 2>/dev/null || true")
    report(args, locals_, results, sample, serial)


def report(
    args: argparse.Namespace,
    locals_: list[float],
    results: list[dict[str, float]],
    sample: float,
    serial: float,
) -> None:
    per_task = sample * args.jobs / args.ssh_sample
    mine = statistics.median(r["seconds"] for r in results)
    local = statistics.median(locals_)
    each = lambda values: ", ".join(f"{v:.1f}" for v in values)  # noqa: E731
    rows = [
        (
            "ours: SlurmBackend.submit over SSH",
            mine,
            f"median of {each(r['seconds'] for r in results)} s; "
            f"{results[0]['submit_trips']:.0f} round trips",
        ),
        ("ours, one stream (submit_parallel=1)", serial, "chunks one after another"),
        ("(a) sbatch loop on the cluster host", local, f"median of {each(locals_)} s; the limit"),
        (
            f"(b) ssh+sbatch per task (x{args.jobs / args.ssh_sample:g})",
            per_task,
            f"{sample:.1f} s measured for {args.ssh_sample}, scaled",
        ),
    ]
    print()
    print(f"{'submit ' + str(args.jobs) + ' jobs (held)':<40} {'seconds':>8} {'jobs/s':>7}  note")
    for label, seconds, note in rows:
        print(f"{label:<40} {seconds:8.2f} {args.jobs / seconds:7.0f}  {note}")
    print()
    print(f"ours / (a) = {mine / local:.2f}  (target <= 1.5); one stream: {serial / local:.2f}")
    print(f"(b) / ours = {per_task / mine:.1f}  (target >= 10)")
    print()
    result = results[-1]
    print(f"poll cycle with {args.jobs} jobs tracked:")
    print(
        f"  generated script: {result['script_commands']:.0f} squeue/sacct invocations "
        f"(neither in a loop), {result['script_kib']:.0f} KiB"
    )
    print(
        f"  all held (squeue only):       {result['held_trips']:.0f} round trip, "
        f"{result['held_seconds']:.2f} s"
    )
    print(
        f"  all ended (squeue + 1 sacct): {result['ended_trips']:.0f} round trip, "
        f"{result['ended_seconds']:.2f} s, {result['ended_final']:.0f} final"
    )


if __name__ == "__main__":
    main()
