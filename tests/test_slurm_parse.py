# ruff: noqa: E501 - captured scheduler output is kept verbatim, one record per line
"""Slurm parsing and the generated scripts, from output captured on the rig (Slurm 22.05).

The captures below are `cat -A` views of real squeue/sacct output: `^_` is the unit separator
(0x1F) between fields, `^^` the record separator (0x1E), `$` an end of line. The scripts the
backend generates are run for real by bash, with fake `squeue`/`sacct`/`sbatch` commands on
PATH that print captured output and record how they were called.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from scripthut.backends import slurm_parse as sp
from scripthut.backends.base import JobPaths, JobRef, JobSpec
from scripthut.backends.remote import chunk_slices, parse_sections, submit_replies
from scripthut.backends.slurm import SlurmBackend
from scripthut.errors import ScriptHutError
from scripthut.states import JobState
from scripthut.transport import LocalTransport, TransportError
from scripthut.transport.base import script_input


def uncat(text: str) -> str:
    """Undo `cat -A` for the characters our captures hold."""
    return (
        "\n".join(line.removesuffix("$") for line in text.strip().splitlines())
        .replace("^_", sp.FIELD_SEP)
        .replace("^^", sp.RECORD_SEP)
    ) + "\n"


# squeue --noheader --all --states=all --user=hutuser --Format=<sp.squeue_format()>
SQUEUE = uncat(r"""
23^_CANCELLED^_None^_debug^_1795489274^_1795489274^_1795489277^_localhost^_1^_15^_hutuser^_(null)^_to cancel^^$
19^_COMPLETED^_None^_debug^_1795489263^_1795489264^_1795489264^_localhost^_1^_0^_hutuser^_hut.run1.0.1^_a b|c^^$
24^_FAILED^_NonZeroExitCode^_debug^_1795489274^_1795489274^_1795489274^_localhost^_1^_768^_hutuser^_hut.20261124-000000-abcd.1.1^_fails^^$
26^_FAILED^_JobLaunchFailure^_debug^_1795489274^_1795489274^_1795489274^_localhost^_1^_9^_hutuser^_(null)^_killed^^$
25^_PENDING^_Dependency^_debug^_1795489274^_N/A^_N/A^_^_1^_0^_hutuser^_(null)^_dep^^$
22^_PENDING^_JobHeldUser^_debug^_1795489274^_N/A^_N/A^_^_1^_0^_hutuser^_(null)^_held^^$
21^_RUNNING^_None^_debug^_1795489274^_1795489274^_1827025274^_localhost^_1^_0^_hutuser^_hut.20261124-000000-abcd.0.1^_runner | with spaces^^$
20^_FAILED^_NonZeroExitCode^_normal^_1795489263^_1795489264^_1795489264^_localhost^_1^_1792^_hutuser^_hut.run1.1.1^_bad^^$
""")

# sacct --noheader --parsable2 --delimiter=<0x1F> --format=<sp.sacct_format()> --jobs=21,...,27
SACCT = uncat(r"""
21^_RUNNING^_0:0^_1795489274^_Unknown^_9^_00:00:00^_1^_^_$
21.batch^_RUNNING^_0:0^_1795489274^_Unknown^_9^_00:00:00^_1^_^_$
22^_PENDING^_0:0^_Unknown^_Unknown^_0^_00:00:00^_1^_^_$
23^_CANCELLED by 1001^_0:0^_1795489274^_1795489277^_3^_00:00.002^_1^_^_$
23.batch^_CANCELLED^_0:15^_1795489274^_1795489277^_3^_00:00.002^_1^_^_$
24^_FAILED^_3:0^_1795489274^_1795489274^_0^_00:00.002^_1^_^_hut.20261124-000000-abcd.1.1$
24.batch^_FAILED^_3:0^_1795489274^_1795489274^_0^_00:00.002^_1^_^_$
25^_PENDING^_0:0^_Unknown^_Unknown^_0^_00:00:00^_1^_^_$
26^_FAILED^_0:9^_1795489274^_1795489274^_0^_00:00.002^_1^_^_$
26.batch^_CANCELLED^_0:9^_1795489274^_1795489274^_0^_00:00.002^_1^_^_$
27^_TIMEOUT^_0:0^_1795489301^_1795489319^_18^_00:00.004^_1^_^_$
27.batch^_CANCELLED^_0:15^_1795489301^_1795489319^_18^_00:00.004^_1^_^_$
""")

# sinfo --noheader --format=%R<0x1F>%a<0x1F>%C
SINFO = uncat(r"""
debug^_up^_0/8/0/8$
normal^_up^_2/6/0/8$
gpu^_down^_0/0/4/4$
""")

NO_ACCOUNTING = "sacct: error: Slurm accounting storage is disabled\n"
NO_CONTROLLER = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"


# --- states ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("PENDING", JobState.PENDING),
        ("CONFIGURING", JobState.PENDING),
        ("POWER_UP_NODE", JobState.PENDING),
        ("REQUEUED", JobState.PENDING),
        ("REQUEUE_HOLD", JobState.PENDING),
        ("REQUEUE_FED", JobState.PENDING),
        ("RESV_DEL_HOLD", JobState.PENDING),
        ("SPECIAL_EXIT", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETING", JobState.RUNNING),
        ("RESIZING", JobState.RUNNING),
        ("SIGNALING", JobState.RUNNING),
        ("STAGE_OUT", JobState.RUNNING),
        ("STOPPED", JobState.RUNNING),
        ("SUSPENDED", JobState.RUNNING),
        ("COMPLETED", JobState.COMPLETED),
        ("FAILED", JobState.FAILED),
        ("CANCELLED", JobState.CANCELLED),
        ("CANCELLED by 1001", JobState.CANCELLED),
        ("CANCELLED+", JobState.CANCELLED),
        ("TIMEOUT", JobState.FAILED),
        ("OUT_OF_MEMORY", JobState.FAILED),
        ("NODE_FAIL", JobState.FAILED),
        ("PREEMPTED", JobState.FAILED),
        ("BOOT_FAIL", JobState.FAILED),
        ("DEADLINE", JobState.FAILED),
        ("REVOKED", JobState.FAILED),
        ("PD", JobState.PENDING),
        ("CG", JobState.RUNNING),
        ("OOM", JobState.FAILED),
        ("SOMETHING_NEW", JobState.UNKNOWN),
        ("", JobState.UNKNOWN),
    ],
)
def test_every_slurm_state_has_a_meaning(raw: str, state: JobState) -> None:
    assert sp.state_info(raw).state is state


def test_final_state_reasons_say_what_happened() -> None:
    assert sp.state_info("CANCELLED by 1001").reason == "cancelled by uid 1001"
    assert sp.state_info("TIMEOUT").reason == "time limit exceeded"
    assert "memory" in (sp.state_info("OUT_OF_MEMORY").reason or "")
    assert "held" in (sp.state_info("REQUEUE_HOLD").reason or "")
    assert sp.state_info("SOMETHING_NEW").reason == "unknown Slurm state 'SOMETHING_NEW'"


# --- squeue ----------------------------------------------------------------------------------


def test_squeue_capture_parses_every_field() -> None:
    rows = {row.job_id: row for row in sp.parse_squeue(SQUEUE)}
    assert sorted(rows, key=int) == ["19", "20", "21", "22", "23", "24", "25", "26"]
    running = rows["21"]
    assert running.name == "runner | with spaces"
    assert running.comment == "hut.20261124-000000-abcd.0.1"
    assert (running.state, running.partition, running.node) == ("RUNNING", "debug", "localhost")
    assert (running.submitted_at, running.started_at) == (1795489274.0, 1795489274.0)
    assert (running.cpus, running.user) == (1, "hutuser")
    pending = rows["25"]
    assert (pending.reason, pending.started_at, pending.node, pending.comment) == (
        "Dependency",
        None,
        None,
        None,
    )
    assert sp.wait_status_exit(rows["20"].exit_status) == 7
    assert sp.wait_status_exit(rows["26"].exit_status) == 128 + 9


def test_squeue_names_with_separators_newlines_and_unicode() -> None:
    name = "x | y, z\tw\n2nd line ✓ 日本 'q' \"d\" $(id)"
    record = sp.FIELD_SEP.join(
        ["7", "RUNNING", "None", "debug", "1", "2", "3", "n1", "4", "0", "me", "(null)", name]
    )
    text = record + sp.RECORD_SEP + "\n" + SQUEUE
    rows = {row.job_id: row for row in sp.parse_squeue(text)}
    assert rows["7"].name == name
    assert rows["7"].cpus == 4
    assert len(rows) == 9


def test_squeue_malformed_records_are_skipped() -> None:
    bad = sp.FIELD_SEP.join(["8", "RUNNING", "only three"]) + sp.RECORD_SEP + "\n"
    rows = sp.parse_squeue(bad + "garbage\n" + SQUEUE)
    assert "8" not in {row.job_id for row in rows}
    assert len(rows) == 8


def test_squeue_format_separates_every_field() -> None:
    fmt = sp.squeue_format()
    assert fmt.count(sp.FIELD_SEP) == len(sp.SQUEUE_FIELDS) - 1
    assert fmt.endswith("Name:" + sp.RECORD_SEP)


# --- sacct -----------------------------------------------------------------------------------


def test_sacct_capture_keeps_allocation_rows_and_steps() -> None:
    jobs = sp.parse_sacct(SACCT)
    assert sorted(jobs, key=int) == ["21", "22", "23", "24", "25", "26", "27"]
    assert jobs["23"].state == "CANCELLED by 1001"
    assert jobs["23"].steps == ["batch"]
    assert (jobs["24"].exit_code, jobs["24"].comment) == (3, "hut.20261124-000000-abcd.1.1")
    assert jobs["26"].exit_code == 137
    assert (jobs["27"].state, jobs["27"].elapsed_s) == ("TIMEOUT", 18.0)
    assert jobs["22"].started_at is None


def test_efficiency_from_allocation_and_step_rows() -> None:
    rows = [
        ["31", "COMPLETED", "0:0", "100", "160", "60", "01:30.000", "2", "", "hut.r.0.1"],
        ["31.batch", "COMPLETED", "0:0", "100", "160", "60", "01:30.000", "2", "2048K", ""],
        ["31.extern", "COMPLETED", "0:0", "100", "160", "60", "00:00:00", "2", "512K", ""],
        ["31.0", "COMPLETED", "0:0", "100", "160", "60", "00:00:00", "2", "1.5M", ""],
    ]
    jobs = sp.parse_sacct("\n".join(sp.FIELD_SEP.join(row) for row in rows))
    assert sp.efficiency(jobs["31"]) == {
        "elapsed_s": 60.0,
        "total_cpu_s": 90.0,
        "alloc_cpus": 2.0,
        "max_rss_mb": 2.0,
        "cpu_efficiency": 0.75,
    }


def test_accounting_state_tells_disabled_from_down() -> None:
    assert sp.accounting_state(0, "") == "ok"
    assert sp.accounting_state(1, NO_ACCOUNTING) == "disabled"
    refused = "sacct: error: Problem talking to the database: Connection refused"
    assert sp.accounting_state(1, refused) == "failed"


# --- one job's status ------------------------------------------------------------------------


def rows() -> dict[str, sp.QueueRow]:
    return {row.job_id: row for row in sp.parse_squeue(SQUEUE)}


def test_live_status_keeps_the_pending_reason() -> None:
    status = sp.live_status(rows()["25"])
    assert (status.state, status.raw_state, status.reason) == (
        JobState.PENDING,
        "PENDING",
        "Dependency",
    )
    assert (status.started_at, status.node) == (None, None)
    running = sp.live_status(rows()["21"])
    assert (running.state, running.reason, running.node) == (JobState.RUNNING, None, "localhost")
    assert running.name == "runner | with spaces"


def test_exit_file_decides_completed_or_failed() -> None:
    acct = sp.parse_sacct(SACCT)
    failed = sp.final_status("24", rows()["24"], acct["24"], 3)
    assert failed is not None
    assert (failed.state, failed.exit_code, failed.reason) == (JobState.FAILED, 3, "exit code 3")
    # The command's own code wins over what the scheduler summarised.
    flipped = sp.final_status("24", rows()["24"], acct["24"], 0)
    assert flipped is not None and flipped.state is JobState.COMPLETED


def test_scheduler_final_states_keep_their_meaning() -> None:
    acct = sp.parse_sacct(SACCT)
    timeout = sp.final_status("27", None, acct["27"], 143)
    assert timeout is not None
    assert (timeout.state, timeout.raw_state, timeout.exit_code) == (
        JobState.FAILED,
        "TIMEOUT",
        143,
    )
    assert timeout.reason == "time limit exceeded"
    cancelled = sp.final_status("23", rows()["23"], acct["23"], None)
    assert cancelled is not None
    assert (cancelled.state, cancelled.reason) == (JobState.CANCELLED, "cancelled by uid 1001")
    killed = sp.final_status("26", rows()["26"], acct["26"], None)
    assert killed is not None
    assert (killed.state, killed.exit_code, killed.reason) == (
        JobState.FAILED,
        137,
        "exit code 137 (SIGKILL)",
    )


def test_squeue_alone_gives_final_states_when_sacct_has_nothing_yet() -> None:
    status = sp.final_status("20", rows()["20"], None, None)
    assert status is not None
    assert (status.state, status.exit_code, status.efficiency) == (JobState.FAILED, 7, None)
    done = sp.final_status("19", rows()["19"], None, None)
    assert done is not None and (done.state, done.exit_code) == (JobState.COMPLETED, 0)


def test_a_lagging_accounting_record_does_not_hide_squeue_s_final_state() -> None:
    lagging = sp.AcctJob("20", state="RUNNING", exit_text="0:0", exit_code=0)
    status = sp.final_status("20", rows()["20"], lagging, None)
    assert status is not None and status.state is JobState.FAILED


def test_stub_accounting_rows_give_state_and_exit_code() -> None:
    # For a few seconds after a short job, sacct may hold a placeholder row (no comment, no
    # name) that already says how the job ended: its state and exit code are right.
    stub = sp.parse_sacct(
        sp.FIELD_SEP.join(["40", "COMPLETED", "0:0", "5", "6", "1", "", "1", "", ""])
    )
    status = sp.final_status("40", None, stub["40"], None)
    assert status is not None and (status.state, status.exit_code) == (JobState.COMPLETED, 0)


def test_without_accounting_the_exit_file_decides() -> None:
    done = sp.final_status("50", None, None, 0)
    assert done is not None
    assert (done.state, done.raw_state, done.exit_code) == (JobState.COMPLETED, "EXIT_FILE", 0)
    failed = sp.final_status("51", None, None, 2)
    assert failed is not None and (failed.state, failed.reason) == (JobState.FAILED, "exit code 2")
    assert sp.final_status("52", None, None, None) is None


def test_external_jobs_keep_state_partition_times_and_reason() -> None:
    held = sp.external_status(rows()["22"])
    assert held.external
    assert (held.state, held.reason, held.partition, held.name) == (
        JobState.PENDING,
        "JobHeldUser",
        "debug",
        "held",
    )
    assert held.submitted_at == 1795489274.0
    cancelled = sp.external_status(rows()["23"])
    assert cancelled.state is JobState.CANCELLED and cancelled.ended_at == 1795489277.0


# --- small values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00.002", 0.002),
        ("01:30.500", 90.5),
        ("02:03:04", 7384.0),
        ("1-00:00:01", 86401.0),
        ("INVALID", None),
        ("", None),
    ],
)
def test_durations(text: str, seconds: float | None) -> None:
    assert sp.parse_duration(text) == pytest.approx(seconds) if seconds else seconds is None


@pytest.mark.parametrize(
    ("text", "mb"),
    [("2048K", 2.0), ("1.5G", 1536.0), ("3M", 3.0), ("1048576", 1.0), ("", None), ("x", None)],
)
def test_sizes(text: str, mb: float | None) -> None:
    assert sp.parse_size_mb(text) == mb


def test_exit_codes() -> None:
    assert [sp.sacct_exit(t) for t in ("0:0", "3:0", "0:9", "0:15", "")] == [0, 3, 137, 143, None]
    assert [sp.wait_status_exit(s) for s in (0, 768, 9, 15, None)] == [0, 3, 137, 143, None]
    assert sp.describe_exit(143) == "exit code 143 (SIGTERM)"
    assert sp.describe_exit(7) == "exit code 7"


def test_submitted_job_id() -> None:
    assert sp.submitted_job_id("123\n") == "123"
    assert sp.submitted_job_id("123;rig") == "123"
    assert sp.submitted_job_id("sbatch: warning: something\n456") == "456"
    assert sp.submitted_job_id("sbatch: error: nope") is None
    assert sp.submitted_job_id("") is None


def test_hut_tags() -> None:
    assert sp.is_hut_tag("hut.20261124-000000-abcd.0.1")
    assert not sp.is_hut_tag("hut.x y")
    assert not sp.is_hut_tag(None)
    assert not sp.is_hut_tag("my own comment")


def test_partitions_from_sinfo() -> None:
    parts = {p.name: p for p in sp.parse_partitions(SINFO)}
    assert (parts["normal"].cpus_idle, parts["normal"].cpus_total) == (6, 8)
    assert parts["gpu"].state == "down"


# --- #SBATCH values --------------------------------------------------------------------------


def test_sbatch_values_are_quoted_for_sbatch_s_parser() -> None:
    assert sp.sbatch_value('a b|c "q" \\ #x') == '"a b|c \\"q\\" \\\\ #x"'
    with pytest.raises(ValueError, match="span lines"):
        sp.sbatch_value("a\nb")


def test_sbatch_paths_turn_percent_patterns_off_and_refuse_backslashes() -> None:
    assert sp.sbatch_path("/logs/a b.out") == '"/logs/a b.out"'
    assert sp.sbatch_path("/logs/%j.out") == '"/\\\\logs/%j.out"'
    assert sp.sbatch_path("rel/%j.out") == '"\\\\rel/%j.out"'
    with pytest.raises(ValueError, match="backslash"):
        sp.sbatch_path("/logs/a\\b")


def test_slurm_time() -> None:
    assert [sp.slurm_time(s) for s in (30, 3600, 90061)] == [
        "0-00:00:30",
        "0-01:00:00",
        "1-01:01:01",
    ]


# --- sections of generated scripts ------------------------------------------------------------


def test_sections_ignore_forged_markers() -> None:
    marker = "@@hut-0123456789abcdef"
    text = (
        f"noise\n{marker} squeue 0\nline 1\n@@hut-ffffffffffffffff end\nline 3\n"
        f"{marker} exit 5 0\n{marker} end\n"
    )
    sections = parse_sections(text, marker)
    assert [s.words for s in sections] == [("squeue", "0"), ("exit", "5", "0"), ("end",)]
    assert sections[0].body == "line 1\n@@hut-ffffffffffffffff end\nline 3"
    assert sections[0].rc() == 0


def test_submit_replies_by_index() -> None:
    marker = "@@hut-1"
    text = f"{marker} job 1 rc 0\n42\n{marker} job 0 error\nno dir\n{marker} job 7 rc 0\n1\n"
    replies = submit_replies(parse_sections(text, marker), 3)
    assert replies[0] is not None and (replies[0].kind, replies[0].text) == ("error", "no dir")
    assert replies[1] is not None and (replies[1].rc, replies[1].text) == (0, "42")
    assert replies[2] is None


# --- the backend's scripts, run by bash with fake Slurm commands --------------------------------


def fake_bin(tmp_path: Path, commands: dict[str, str]) -> Path:
    """Executables that log their argv (one line per call) to <name>.calls and run `body`."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, body in commands.items():
        path = bindir / name
        calls = tmp_path / f"{name}.calls"
        path.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {calls}\n{body}\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bindir


def capture_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def calls(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / f"{name}.calls"
    # not splitlines(): it also splits at the 0x1E record separator in squeue's arguments
    return path.read_text().split("\n")[:-1] if path.exists() else []


def backend(tmp_path: Path, **options: object) -> SlurmBackend:
    return SlurmBackend(
        "fake",
        transport=LocalTransport(),
        max_concurrent=10,
        log_dir=str(tmp_path / "logs"),
        **options,  # type: ignore[arg-type]
    )


def ref(tmp_path: Path, job_id: str, exit_code: str | None = None) -> JobRef:
    exit_path = tmp_path / "exits" / f"{job_id}.exit"
    if exit_code is not None:
        exit_path.parent.mkdir(exist_ok=True)
        exit_path.write_text(exit_code)
    paths = JobPaths(str(tmp_path / "o"), str(tmp_path / "e"), str(exit_path), str(tmp_path / "s"))
    return JobRef(job_id=job_id, tag=f"hut.r.{job_id}.1", paths=paths)


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    def install(commands: dict[str, str]) -> None:
        bindir = fake_bin(tmp_path, commands)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    return install


def test_poll_runs_one_squeue_and_one_sacct_for_the_ended_jobs_only(
    tmp_path: Path, on_path: object
) -> None:
    squeue = capture_file(tmp_path, "squeue.txt", SQUEUE)
    sacct = capture_file(tmp_path, "sacct.txt", SACCT)
    on_path({"squeue": f"cat {squeue}", "sacct": f"cat {sacct}"})  # type: ignore[operator]
    refs = [
        ref(tmp_path, "21"),  # running: no exit file read, no sacct
        ref(tmp_path, "24", "3\n"),  # FAILED in squeue, exit file 3
        ref(tmp_path, "27", "143\n"),  # gone from squeue, TIMEOUT in sacct
        ref(tmp_path, "90", "0\n"),  # gone everywhere, exit file 0
        ref(tmp_path, "91"),  # gone everywhere, nothing: unknown for now
        ref(tmp_path, "92", ""),  # exit file still empty: not yet written
    ]
    result = asyncio.run(backend(tmp_path).poll(refs))
    assert result.ok, result.error
    got = {k: (v.state, v.raw_state, v.exit_code) for k, v in result.jobs.items()}
    assert got == {
        "21": (JobState.RUNNING, "RUNNING", None),
        "24": (JobState.FAILED, "FAILED", 3),
        "27": (JobState.FAILED, "TIMEOUT", 143),
        "90": (JobState.COMPLETED, "EXIT_FILE", 0),
        "91": (JobState.UNKNOWN, "UNKNOWN", None),
        "92": (JobState.UNKNOWN, "UNKNOWN", None),
    }
    assert len(calls(tmp_path, "squeue")) == 1
    (sacct_call,) = calls(tmp_path, "sacct")
    assert "--jobs=24,27,90,91,92" in sacct_call
    assert "--user=" in calls(tmp_path, "squeue")[0]
    external = {s.job_id for s in result.external or []}
    assert external == {"22", "23", "25", "26"}  # no hut tag; 19/20 are other runs' jobs


def test_poll_without_accounting_relies_on_exit_files_then_gives_up_after_the_grace(
    tmp_path: Path, on_path: object
) -> None:
    squeue = capture_file(tmp_path, "squeue.txt", SQUEUE)
    on_path(  # type: ignore[operator]
        {"squeue": f"cat {squeue}", "sacct": f"printf '%s' {NO_ACCOUNTING!r} >&2; exit 1"}
    )
    slurm = backend(tmp_path, missing_grace_s=0.5)
    refs = [ref(tmp_path, "60", "0\n"), ref(tmp_path, "61")]

    async def twice() -> tuple[dict[str, JobState], dict[str, JobState], str | None]:
        first = await slurm.poll(refs)
        await asyncio.sleep(0.6)
        second = await slurm.poll(refs)
        lost = second.jobs["61"].reason
        return (
            {k: v.state for k, v in first.jobs.items()},
            {k: v.state for k, v in second.jobs.items()},
            lost,
        )

    first, second, lost = asyncio.run(twice())
    assert first == {"60": JobState.COMPLETED, "61": JobState.UNKNOWN}
    assert second["61"] is JobState.FAILED
    assert lost is not None and "left Slurm's queue" in lost


def test_poll_when_sacct_is_down_never_concludes_lost(tmp_path: Path, on_path: object) -> None:
    squeue = capture_file(tmp_path, "squeue.txt", SQUEUE)
    down = "sacct: error: Problem talking to the database: Connection refused"
    on_path({"squeue": f"cat {squeue}", "sacct": f"echo {down!r} >&2; exit 1"})  # type: ignore[operator]
    slurm = backend(tmp_path, missing_grace_s=0)
    result = asyncio.run(slurm.poll([ref(tmp_path, "70")]))
    assert result.ok
    assert result.jobs["70"].state is JobState.UNKNOWN
    assert "sacct did not answer" in (result.jobs["70"].reason or "")


def test_a_failed_squeue_is_unknown_not_failed(tmp_path: Path, on_path: object) -> None:
    on_path({"squeue": f"echo {NO_CONTROLLER.strip()!r} >&2; exit 1", "sacct": "exit 0"})  # type: ignore[operator]
    result = asyncio.run(backend(tmp_path).poll([ref(tmp_path, "21")]))
    assert not result.ok
    assert "Unable to contact slurm controller" in (result.error or "")
    assert result.jobs == {}
    assert calls(tmp_path, "sacct") == []


def spec(tmp_path: Path, slurm: SlurmBackend, index: int, **fields: object) -> JobSpec:
    paths = slurm.job_paths("run1", f"t{index}", 1)
    job = JobSpec(
        tag=f"hut.run1.{index}.1",
        run_id="run1",
        task_id=f"t{index}",
        attempt=1,
        name=f"task {index}",
        script="",
        paths=paths,
        working_dir="~",
        **fields,  # type: ignore[arg-type]
    )
    return replace(job, script=slurm.render_script(job, "#!/bin/bash\necho hi\n"))


SBATCH = r"""
script=$(cat)
case $script in
  *'partition="nope"'*)
    echo 'sbatch: error: Batch job submission failed: Invalid partition name specified' >&2; exit 1 ;;
  *'job-name="down"'*)
    echo 'sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)' >&2; exit 1 ;;
esac
n=$(cat "$COUNTER" 2>/dev/null || echo 100); n=$((n + 1)); echo $n > "$COUNTER"
echo "sbatch: warning: a warning first" >&2
echo "$n;rig"
"""


def test_submit_writes_scripts_indexes_tags_and_reports_each_job(
    tmp_path: Path, on_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COUNTER", str(tmp_path / "counter"))
    on_path({"sbatch": SBATCH})  # type: ignore[operator]
    slurm = backend(tmp_path)
    jobs = [
        spec(tmp_path, slurm, 0),
        spec(tmp_path, slurm, 1, partition="nope"),
        spec(tmp_path, slurm, 2),
    ]
    outcomes = asyncio.run(slurm.submit(jobs))
    assert [o.job_id for o in outcomes] == ["101", None, "102"]
    assert outcomes[1].error == (
        "sbatch: error: Batch job submission failed: Invalid partition name specified"
    )
    assert Path(jobs[0].paths.script).read_text() == jobs[0].script
    assert (tmp_path / "logs" / ".tags" / jobs[2].tag).read_text() == "102;rig\n"
    # Submitting an indexed tag again reports the same job without a second sbatch.
    again = asyncio.run(slurm.submit([jobs[0]]))
    assert again[0].job_id == "101"
    assert len(calls(tmp_path, "sbatch")) == 3
    assert asyncio.run(slurm.find([jobs[0].tag, jobs[2].tag])) == {
        jobs[0].tag: "101",
        jobs[2].tag: "102",
    }


def test_submit_stops_and_raises_when_the_controller_does_not_answer(
    tmp_path: Path, on_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COUNTER", str(tmp_path / "counter"))
    on_path({"sbatch": SBATCH})  # type: ignore[operator]
    slurm = backend(tmp_path)
    jobs = [spec(tmp_path, slurm, 0), spec(tmp_path, slurm, 1), spec(tmp_path, slurm, 2)]
    jobs[1] = replace(jobs[1], name="down", script=jobs[1].script.replace("task 1", "down"))
    with pytest.raises(TransportError, match="Unable to contact slurm controller"):
        asyncio.run(slurm.submit(jobs))
    assert len(calls(tmp_path, "sbatch")) == 2  # the third was not tried
    assert (tmp_path / "logs" / ".tags" / jobs[0].tag).exists()


# --- the header ---------------------------------------------------------------------------------


def test_header_holds_every_directive(tmp_path: Path) -> None:
    slurm = backend(
        tmp_path,
        account="proj 1",
        partition_map={"normal": "compute"},
        login_shell=True,
    )
    job = spec(
        tmp_path,
        slurm,
        0,
        partition="normal",
        cpus=4,
        memory_mb=2048,
        time_limit_s=5400,
        gres="gpu:1",
    )
    lines = job.script.splitlines()
    assert lines[0] == "#!/bin/bash -l"
    out = job.paths.stdout
    assert lines[1:11] == [
        '#SBATCH --job-name="task 0"',
        '#SBATCH --partition="compute"',
        '#SBATCH --account="proj 1"',
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=2048M",
        "#SBATCH --time=0-01:30:00",
        '#SBATCH --gres="gpu:1"',
        f'#SBATCH --output="{out}"',
        f'#SBATCH --error="{job.paths.stderr}"',
        "#SBATCH --comment=hut.run1.0.1",
    ]
    assert lines[11] == "echo hi"


def test_partition_fallbacks() -> None:
    slurm = SlurmBackend(
        "x",
        transport=LocalTransport(),
        max_concurrent=1,
        log_dir="/l",
        partition_map={"gpu": "a100"},
        default_partition="batch",
    )
    assert slurm.partition_for("gpu") == "a100"
    assert slurm.partition_for("normal") == "batch"
    slurm.default_partition = None
    assert slurm.partition_for("normal") == "normal"


def test_home_paths_are_absolute_once_home_is_known_relative_before() -> None:
    slurm = SlurmBackend("x", transport=LocalTransport(), max_concurrent=1, log_dir="~/logs")
    assert slurm.job_paths("r", "t", 1).stdout == "~/logs/r/t.1.out"
    job = JobSpec("hut.r.0.1", "r", "t", 1, "t", "", slurm.job_paths("r", "t", 1), "~")
    assert '#SBATCH --output="logs/r/t.1.out"' in slurm.render_script(job, "#!/bin/bash\n")
    slurm.host.home = "/home/me"
    assert slurm.job_paths("r", "t", 1).stdout == "/home/me/logs/r/t.1.out"
    assert '#SBATCH --output="/home/me/logs/r/t.1.out"' in slurm.render_script(job, "#!/bin/bash\n")


def test_unwritable_values_are_refused_before_submission(tmp_path: Path) -> None:
    slurm = backend(tmp_path)
    job = spec(tmp_path, slurm, 0)
    bad_path = replace(job, paths=replace(job.paths, stdout="/tmp/a\\b.out"))
    with pytest.raises(ScriptHutError, match="backslash"):
        slurm.render_script(bad_path, "#!/bin/bash\n")
    with pytest.raises(ScriptHutError, match="not safe"):
        slurm.render_script(replace(job, tag="hut.a b"), "#!/bin/bash\n")
    with pytest.raises(ScriptHutError, match="safe file name"):
        slurm.job_paths("run/../x", "t", 1)


@pytest.mark.parametrize(
    ("count", "sizes"),
    [
        (0, []),
        (1, [1]),
        (39, [39]),
        (40, [20, 20]),
        (300, [75, 75, 75, 75]),
        (1000, [125] * 8),
        (2000, [167] * 11 + [163]),
    ],
)
def test_chunks_keep_every_stream_busy_and_stay_under_the_limit(
    count: int, sizes: list[int]
) -> None:
    slices = chunk_slices(count, 200, 4)
    assert [s.stop - s.start for s in slices] == sizes
    assert [i for s in slices for i in range(s.start, s.stop)] == list(range(count))


def test_submission_stops_when_nobody_reads_the_replies(
    tmp_path: Path, on_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine died mid-batch: the script submits at most the job in flight, even with
    SIGPIPE ignored, so a new engine's `find` cannot race a batch that keeps going."""
    monkeypatch.setenv("COUNTER", str(tmp_path / "counter"))
    on_path({"sbatch": SBATCH})  # type: ignore[operator]
    slurm = backend(tmp_path)
    items = [slurm._submission(spec(tmp_path, slurm, i)) for i in range(5)]
    script = script_input(slurm.submit_script(items, "@@hut-test"))
    proc = subprocess.Popen(
        ["bash", "-s"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGPIPE, signal.SIG_IGN),
    )
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.close()
    proc.stdin.write(script)
    proc.stdin.close()
    assert proc.wait(timeout=30) != 0
    assert len(calls(tmp_path, "sbatch")) == 1
    assert len(list((tmp_path / "logs" / ".tags").iterdir())) == 1


def test_find_without_the_index_reads_squeue_and_sacct_comments(
    tmp_path: Path, on_path: object
) -> None:
    squeue = capture_file(tmp_path, "squeue.txt", SQUEUE)
    lines = [
        ["300", "hut.old.0.1", "COMPLETED"],
        ["301", "someone else's comment", "FAILED"],
        ["302", "hut.old.1.1", "CANCELLED by 1001"],
    ]
    sacct = capture_file(
        tmp_path, "sacct.txt", "".join(sp.FIELD_SEP.join(row) + "\n" for row in lines)
    )
    on_path({"squeue": f"cat {squeue}", "sacct": f"cat {sacct}"})  # type: ignore[operator]
    tags = ["hut.20261124-000000-abcd.0.1", "hut.old.0.1", "hut.old.1.1", "hut.none.0.1"]
    found = asyncio.run(backend(tmp_path).find(tags))
    assert found == {
        "hut.20261124-000000-abcd.0.1": "21",  # squeue's comment
        "hut.old.0.1": "300",  # sacct's
        "hut.old.1.1": "302",
    }
    (sacct_call,) = calls(tmp_path, "sacct")
    assert "--starttime=now-14days" in sacct_call and "--allocations" in sacct_call


def test_find_is_none_when_squeue_fails_and_tolerates_disabled_accounting(
    tmp_path: Path, on_path: object
) -> None:
    squeue = capture_file(tmp_path, "squeue.txt", SQUEUE)
    on_path(  # type: ignore[operator]
        {"squeue": f"cat {squeue}", "sacct": f"printf '%s' {NO_ACCOUNTING!r} >&2; exit 1"}
    )
    tags = ["hut.20261124-000000-abcd.0.1", "hut.gone.0.1"]
    assert asyncio.run(backend(tmp_path).find(tags)) == {"hut.20261124-000000-abcd.0.1": "21"}
    on_path({"squeue": f"echo {NO_CONTROLLER.strip()!r} >&2; exit 1"})  # type: ignore[operator]
    assert asyncio.run(backend(tmp_path).find(tags)) is None
