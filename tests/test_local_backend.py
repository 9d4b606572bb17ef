"""The local backend against real bash processes: lifecycle, limits, cancel, restart."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from scripthut.backends.base import JobRef, JobSpec, JobStatus
from scripthut.backends.local import LocalBackend
from scripthut.errors import NotFound, ScriptHutError
from scripthut.states import JobState

T = TypeVar("T")

# Jobs outlive the backend instance that started them (restart tests drop one): Python
# warns when it collects the handle of a child that still runs (or awaits reaping).
pytestmark = pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def body(command: str, exit_path: str) -> str:
    """A script that runs `command` and records its exit code (143 on SIGTERM)."""
    return f"trap 'echo $? > {shlex.quote(exit_path)}' EXIT\ntrap 'exit 143' TERM\n{command}\n"


def spec(
    backend: LocalBackend, tag: str, command: str, *, cpus: int = 1, time_limit_s: int = 60
) -> JobSpec:
    paths = backend.job_paths("run1", tag, 1)
    return JobSpec(
        tag=tag,
        run_id="run1",
        task_id=tag,
        attempt=1,
        name=f"task {tag}",
        script=body(command, paths.exit_code),
        paths=paths,
        working_dir="~",
        cpus=cpus,
        time_limit_s=time_limit_s,
    )


def ref(job: JobSpec, *, time_limit_s: int | None = None) -> JobRef:
    limit = job.time_limit_s if time_limit_s is None else time_limit_s
    return JobRef(job_id=job.tag, tag=job.tag, paths=job.paths, time_limit_s=limit)


async def poll_until(
    backend: LocalBackend,
    jobs: Sequence[JobSpec | JobRef],
    done: Callable[[dict[str, JobStatus]], bool],
    timeout: float = 10.0,
) -> dict[str, JobStatus]:
    """Poll (woken by `changed` or every 50 ms) until `done(statuses)` holds."""
    refs = [job if isinstance(job, JobRef) else ref(job) for job in jobs]
    deadline = time.monotonic() + timeout
    while True:
        backend.changed.clear()
        statuses = (await backend.poll(refs)).jobs
        if done(statuses):
            return statuses
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last statuses: {statuses}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(backend.changed.wait(), 0.05)


async def wait_final(
    backend: LocalBackend, jobs: Sequence[JobSpec | JobRef], timeout: float = 10.0
) -> dict[str, JobStatus]:
    return await poll_until(
        backend, jobs, lambda s: all(x.state.is_final for x in s.values()), timeout
    )


def all_in(state: JobState) -> Callable[[dict[str, JobStatus]], bool]:
    return lambda statuses: all(s.state is state for s in statuses.values())


def session_members(sid: int, command: str | None = None) -> list[int]:
    """Live (non-zombie) processes in session `sid` (running `command`, if given)."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            comm, rest = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)
        except (OSError, ValueError):
            continue
        fields = rest.split()
        if int(fields[3]) != sid or fields[0] == b"Z":
            continue
        if command is None or comm.split(b"(", 1)[1] == command.encode():
            members.append(int(name))
    return members


def two_sleeps(pid: int) -> Callable[[], bool]:
    """Both `sleep`s of a job have started (exec'd, not only forked)."""
    return lambda: len(session_members(pid, "sleep")) == 2


def leader_pid(script: str, timeout: float = 2.0) -> int:
    """The session-leading `bash <script>` process.

    Some kernels (gVisor) show an empty cmdline for a few ms after exec: wait it out.
    """
    deadline = time.monotonic() + timeout
    while (pid := find_leader(script)) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"no process runs {script}")
        time.sleep(0.01)
    return pid


def find_leader(script: str) -> int | None:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            if os.fsdecode(argv[-2]) == script and int(name) in session_members(int(name)):
                return int(name)
    return None


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def times(job: JobSpec) -> tuple[float, float]:
    """(start, end) a job printed as "start <t>" and "end <t>" lines."""
    values = dict(line.split() for line in Path(job.paths.stdout).read_text().splitlines())
    return float(values["start"]), float(values["end"])


TIMED = 'echo start "$(date +%s.%N)"; sleep 0.3; echo end "$(date +%s.%N)"'


def backend_in(tmp_path: Path, **kwargs: Any) -> LocalBackend:
    options: dict[str, Any] = {"max_concurrent": 8, "cpus": 4, **kwargs}
    return LocalBackend("local", log_dir=tmp_path / "logs", **options)


def with_backend(
    tmp_path: Path, test: Callable[[LocalBackend], Awaitable[None]], **kwargs: Any
) -> None:
    async def main() -> None:
        backend = backend_in(tmp_path, **kwargs)
        try:
            await test(backend)
        finally:
            await backend.close()

    run(main())


# --- basics --------------------------------------------------------------------------------


def test_paths_and_script(tmp_path: Path) -> None:
    backend = backend_in(tmp_path)
    paths = backend.job_paths("r-1", "fit_2.a", 3)
    base = tmp_path / "logs" / "r-1" / "fit_2.a.3"
    assert (paths.stdout, paths.stderr) == (f"{base}.out", f"{base}.err")
    assert (paths.exit_code, paths.script) == (f"{base}.exit", f"{base}.sh")
    job = spec(backend, "t", "true")
    assert backend.render_script(job, "echo hi\n") == "echo hi\n"
    with pytest.raises(ValueError, match="run id"):
        backend.job_paths("..", "t", 1)


def test_completes_with_output_env_and_home(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        job = spec(backend, "ok", 'echo "out $SCRIPTHUT_TAG $PWD"; echo err >&2')
        assert [o.job_id for o in await backend.submit([job])] == ["ok"]
        status = (await wait_final(backend, [job]))["ok"]
        assert (status.state, status.exit_code, status.reason) == (JobState.COMPLETED, 0, None)
        assert status.name == "task ok"
        assert status.started_at
        assert status.ended_at
        assert Path(job.paths.stdout).read_text() == f"out ok {Path.home()}\n"
        assert Path(job.paths.stderr).read_text() == "err\n"
        assert os.stat(job.paths.script).st_mode & 0o777 == 0o600

    with_backend(tmp_path, test)


def test_failure_has_exit_code_and_reason(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        job = spec(backend, "bad", "exit 3")
        await backend.submit([job])
        status = (await wait_final(backend, [job]))["bad"]
        assert (status.state, status.exit_code, status.reason) == (
            JobState.FAILED,
            3,
            "exit code 3",
        )

    with_backend(tmp_path, test)


def test_killed_by_signal_without_exit_file(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        job = spec(backend, "k", "sleep 30")
        await backend.submit([job])
        os.killpg(leader_pid(job.paths.script), signal.SIGKILL)
        status = (await wait_final(backend, [job]))["k"]
        assert (status.state, status.exit_code) == (JobState.FAILED, 137)
        assert status.reason == "killed by signal 9 (SIGKILL)"

    with_backend(tmp_path, test)


def test_login_shell(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        job = spec(backend, "login", "shopt -q login_shell && echo login")
        await backend.submit([job])
        assert (await wait_final(backend, [job]))["login"].state is JobState.COMPLETED
        assert Path(job.paths.stdout).read_text().endswith("login\n")

    with_backend(tmp_path, test, login_shell=True)


def test_bad_tags_and_paths_are_refused(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        job = spec(backend, "dup", "sleep 5")
        unsafe = dataclasses.replace(job, tag="a/b")
        paths = dataclasses.replace(job.paths, stdout=f"{tmp_path}/two\nlines.out")
        newline = dataclasses.replace(job, tag="nl", paths=paths)
        outcomes = await backend.submit([job, job, unsafe, newline])
        assert [o.job_id for o in outcomes] == ["dup", None, None, None]
        errors = [o.error or "" for o in outcomes]
        assert "already" in errors[1]
        assert "safe file name" in errors[2]
        assert "newline" in errors[3]
        await backend.cancel(["dup"])

    with_backend(tmp_path, test)


def test_changed_is_set_when_a_job_ends(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        job = spec(backend, "c", "sleep 0.2")
        await backend.submit([job])
        await poll_until(backend, [job], all_in(JobState.RUNNING))
        backend.changed.clear()
        await asyncio.wait_for(backend.changed.wait(), 5)
        assert (await backend.poll([ref(job)])).jobs["c"].state is JobState.COMPLETED

    with_backend(tmp_path, test)


# --- limits --------------------------------------------------------------------------------


def test_cpu_capacity_runs_two_cpu_jobs_one_at_a_time(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        jobs = [spec(backend, f"c{i}", TIMED, cpus=2) for i in range(3)]
        await backend.submit(jobs)
        info = await backend.info()
        assert (info.queue_depth, info.cpus_idle, info.cpus_total) == (2, 0, 2)
        assert backend.free_slots() == 0
        statuses = await wait_final(backend, jobs)
        assert all(s.state is JobState.COMPLETED for s in statuses.values())
        spans = sorted(times(job) for job in jobs)
        assert all(spans[i][1] <= spans[i + 1][0] for i in range(2))
        assert backend.free_slots() == 2

    with_backend(tmp_path, test, cpus=2)


def test_max_concurrent_is_honoured(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        jobs = [spec(backend, f"m{i}", TIMED) for i in range(5)]
        await backend.submit(jobs)
        statuses = (await backend.poll([ref(job) for job in jobs])).jobs
        assert [s.raw_state for s in statuses.values()].count("QUEUED") == 3
        await wait_final(backend, jobs)
        spans = [times(job) for job in jobs]
        overlap = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
        assert overlap == 2

    with_backend(tmp_path, test, cpus=8, max_concurrent=2)


def test_job_larger_than_capacity_runs_alone(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        small, big = spec(backend, "small", TIMED), spec(backend, "big", TIMED, cpus=4)
        await backend.submit([small, big])
        pending = (await backend.poll([ref(big)])).jobs["big"]
        assert pending.state is JobState.PENDING
        assert "runs alone" in (pending.reason or "")
        statuses = await wait_final(backend, [small, big])
        assert statuses["big"].state is JobState.COMPLETED
        assert times(small)[1] <= times(big)[0]

    with_backend(tmp_path, test, cpus=1)


def test_time_limit_kills_and_reports_timeout(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        job = spec(backend, "slow", "sleep 30", time_limit_s=1)
        await backend.submit([job])
        started = time.monotonic()
        status = (await wait_final(backend, [job]))["slow"]
        assert time.monotonic() - started < 5
        assert (status.state, status.raw_state) == (JobState.FAILED, "TIMEOUT")
        assert status.reason == "time limit exceeded (1 s)"
        assert status.exit_code == 143

    with_backend(tmp_path, test)


# --- cancel --------------------------------------------------------------------------------


def test_cancel_kills_the_whole_process_group(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        job = spec(backend, "tree", "sleep 100 & sleep 100; wait")
        await backend.submit([job])
        await poll_until(backend, [job], all_in(JobState.RUNNING))
        pid = leader_pid(job.paths.script)
        await until(two_sleeps(pid))
        await backend.cancel(["tree"])
        status = (await wait_final(backend, [job]))["tree"]
        assert (status.state, status.reason) == (JobState.CANCELLED, "cancelled")
        await until(lambda: not session_members(pid), timeout=3)

    with_backend(tmp_path, test)


def test_cancel_sends_sigkill_after_the_grace(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        job = spec(backend, "stubborn", "trap '' TERM; sleep 100 & sleep 100; wait")
        await backend.submit([job])
        pid = leader_pid(job.paths.script)
        await until(two_sleeps(pid))
        await backend.cancel(["stubborn"])
        await asyncio.sleep(0.1)
        assert session_members(pid), "TERM is ignored: still alive within the grace"
        status = (await wait_final(backend, [job]))["stubborn"]
        assert (status.state, status.exit_code) == (JobState.CANCELLED, 137)
        await until(lambda: not session_members(pid), timeout=3)

    with_backend(tmp_path, test, kill_grace_s=0.4)


def test_cancel_queued_job_never_runs(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        first, second = spec(backend, "first", "sleep 0.3"), spec(backend, "second", "true")
        await backend.submit([first, second])
        await backend.cancel(["second"])
        assert (await backend.poll([ref(second)])).jobs["second"].state is JobState.CANCELLED
        await wait_final(backend, [first])
        assert not os.path.exists(second.paths.stdout)

    with_backend(tmp_path, test, max_concurrent=1)


# --- restart -------------------------------------------------------------------------------


async def start_and_close(tmp_path: Path, jobs: Callable[[LocalBackend], list[JobSpec]]) -> None:
    """Submit jobs with one backend instance, then drop it as a stopping engine would."""
    first = backend_in(tmp_path, max_concurrent=1)
    specs = jobs(first)
    await first.submit(specs)
    await poll_until(first, specs[:1], all_in(JobState.RUNNING))
    await first.close()


def test_restart_adopts_running_and_finished_jobs(tmp_path: Path) -> None:
    async def main() -> None:
        first = backend_in(tmp_path)
        done, running = spec(first, "done", "exit 4"), spec(first, "running", "sleep 1")
        await first.submit([done, running])
        await wait_final(first, [done])
        await first.close()
        second = backend_in(tmp_path)
        leader_pid(running.paths.script)  # a restart takes longer than a process's exec
        statuses = (await second.poll([ref(done), ref(running)])).jobs
        assert (statuses["done"].state, statuses["done"].exit_code) == (JobState.FAILED, 4)
        assert statuses["running"].state is JobState.RUNNING
        assert (await second.info()).cpus_idle == 3
        second.changed.clear()
        await asyncio.wait_for(second.changed.wait(), 5)
        status = (await wait_final(second, [running]))["running"]
        assert (status.state, status.exit_code) == (JobState.COMPLETED, 0)
        await second.close()

    run(main())


def test_restart_enforces_time_limit_of_adopted_job(tmp_path: Path) -> None:
    async def main() -> None:
        await start_and_close(tmp_path, lambda b: [spec(b, "long", "sleep 30")])
        second = backend_in(tmp_path)
        long_ref = ref(spec(second, "long", "sleep 30"), time_limit_s=1)
        pid = leader_pid(long_ref.paths.script)
        status = (await wait_final(second, [long_ref]))["long"]
        assert (status.state, status.raw_state) == (JobState.FAILED, "TIMEOUT")
        await until(lambda: not session_members(pid), timeout=3)
        await second.close()

    run(main())


def test_restart_cancels_adopted_job_by_tag(tmp_path: Path) -> None:
    async def main() -> None:
        await start_and_close(tmp_path, lambda b: [spec(b, "long", "sleep 100 & wait")])
        second = backend_in(tmp_path)
        long_job = spec(second, "long", "")
        pid = leader_pid(long_job.paths.script)
        await second.cancel(["long"])
        status = (await wait_final(second, [long_job]))["long"]
        assert status.state is JobState.CANCELLED
        await until(lambda: not session_members(pid), timeout=3)
        await second.close()

    run(main())


def test_missing_process_is_unknown_then_failed(tmp_path: Path) -> None:
    async def main() -> None:
        def jobs(b: LocalBackend) -> list[JobSpec]:
            return [spec(b, "killed", "sleep 30")]

        await start_and_close(tmp_path, jobs)
        second = backend_in(tmp_path, missing_grace_s=0.3)
        (killed,) = jobs(second)
        os.killpg(leader_pid(killed.paths.script), signal.SIGKILL)
        await asyncio.sleep(0.1)
        statuses = (await second.poll([ref(killed)])).jobs
        assert statuses["killed"].state is JobState.UNKNOWN
        assert statuses["killed"].reason == "no process and no exit code"
        statuses = await wait_final(second, [killed])
        assert (statuses["killed"].state, statuses["killed"].raw_state) == (JobState.FAILED, "LOST")
        assert statuses["killed"].reason == "process ended without recording an exit code (killed?)"
        await second.close()

    run(main())


def test_job_queued_when_its_engine_ended_runs_once_after_restart(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"

    async def main() -> None:
        def jobs(b: LocalBackend) -> list[JobSpec]:
            return [spec(b, "busy", "sleep 0.5"), spec(b, "queued", f"echo ran >> {ledger}")]

        await start_and_close(tmp_path, jobs)
        assert not ledger.exists()
        second = backend_in(tmp_path, missing_grace_s=0.3)
        busy, queued = jobs(second)
        statuses = await wait_final(second, [busy, queued])
        assert statuses["queued"].state is JobState.COMPLETED
        assert statuses["busy"].state is JobState.COMPLETED
        await second.close()

    run(main())
    assert ledger.read_text() == "ran\n"


def test_find_after_a_crash(tmp_path: Path) -> None:
    async def main() -> None:
        def jobs(b: LocalBackend) -> list[JobSpec]:
            return [spec(b, "run", "sleep 0.5"), spec(b, "queued", "true")]

        await start_and_close(tmp_path, jobs)
        second = backend_in(tmp_path)
        tags = ["run", "queued", "never-seen", "../etc"]
        assert await second.find(tags) == {"run": "run"}
        # A crash between the launch and recording it: only the process tells.
        leader_pid(jobs(second)[0].paths.script)
        entry = tmp_path / "logs" / ".tags" / "run"
        entry.write_text("".join(f"{line}\n" for line in entry.read_text().splitlines()[:4]))
        assert await second.find(tags) == {"run": "run"}
        await wait_final(second, jobs(second)[:1])
        assert await second.find(tags) == {"run": "run"}
        outcome = await second.submit(jobs(second)[1:])
        assert outcome[0].job_id == "queued"
        assert await second.find(tags) == {"run": "run", "queued": "queued"}
        await second.close()

    run(main())


# --- logs ----------------------------------------------------------------------------------


def test_read_log_offsets_tail_and_missing(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        path = tmp_path / "log.txt"
        path.write_bytes(b"0123456789")
        head = await backend.read_log(str(path), 0, 4)
        assert (head.data, head.offset, head.size, head.next_offset) == (b"0123", 0, 10, 4)
        assert (await backend.read_log(str(path), 8)).data == b"89"
        tail = await backend.read_log(str(path), -3)
        assert (tail.data, tail.offset) == (b"789", 7)
        assert (await backend.read_log(str(path), -100)).data == b"0123456789"
        past = await backend.read_log(str(path), 12)
        assert (past.data, past.offset, past.missing) == (b"", 12, False)
        missing = await backend.read_log(str(tmp_path / "nope"))
        assert (missing.missing, missing.data, missing.size) == (True, b"", 0)

    with_backend(tmp_path, test)


def test_read_text(tmp_path: Path) -> None:
    async def test(backend: LocalBackend) -> None:
        path = tmp_path / "tasks.json"
        path.write_text('{"tasks": []}')
        assert await backend.read_text(str(path)) == '{"tasks": []}'
        with pytest.raises(ScriptHutError, match="larger than 4 bytes"):
            await backend.read_text(str(path), limit=4)
        with pytest.raises(NotFound):
            await backend.read_text(str(tmp_path / "nope"))

    with_backend(tmp_path, test)
