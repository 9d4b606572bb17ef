"""Grid Engine parsing and state mapping: output captured from the rig's Son of Grid Engine 8.1.9
(tests/fixtures/sge/) and hand-written Univa / Altair Grid Engine variants where they differ."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from scripthut.backends import sge_parse as gp
from scripthut.states import JobState

FIXTURES = Path(__file__).parent / "fixtures" / "sge"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def epoch(text: str, tz: timezone = UTC) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


# --- captured from the rig -----------------------------------------------------------------------


def test_qstat_xml_running_pending_and_zombies() -> None:
    rows = {row.job_id: row for row in gp.parse_qstat_xml(fixture("qstat.xml"))}
    assert sorted(rows) == ["204", "205", "206", "207"]
    run = rows["204"]
    assert (run.state, run.name, run.user, run.queue, run.node, run.slots) == (
        "r",
        "run-me",
        "hutuser",
        "all.q",
        "vm",
        2,
    )
    assert run.started_at == epoch("2026-12-06T00:14:24")
    assert gp.live_status(run).state == JobState.RUNNING
    assert all(gp.is_ended(rows[i].state) for i in ("205", "206", "207"))
    assert rows["206"].submitted_at == epoch("2026-12-06T00:14:24")


def test_times_use_the_clusters_utc_offset() -> None:
    tz = gp.utc_offset("+0130")
    rows = gp.parse_qstat_xml(fixture("qstat.xml"), tz)
    assert rows[0].started_at == epoch("2026-12-06T00:14:24") - 5400
    assert gp.utc_offset("-0500") == timezone(timedelta(hours=-5))
    assert gp.utc_offset("garbage") == UTC


def test_qacct_exit_status_and_a_limit_kill() -> None:
    jobs = gp.parse_qacct(fixture("qacct.txt"))
    failed, limited = jobs["206"], jobs["207"]
    assert (failed.failed, failed.exit_status, failed.name) == (0, 3, "fail-me")
    status = gp.final_status("206", None, failed, None)
    assert status is not None
    assert (status.state, status.exit_code, status.reason) == (JobState.FAILED, 3, "exit code 3")
    assert (limited.failed, limited.exit_status) == (37, 137)
    assert limited.failed_text == "qmaster enforced h_rt, h_cpu, or h_vmem limit"
    assert limited.maxvmem_mb == pytest.approx(4.605)
    assert limited.wallclock_s == 3.0 and limited.ended_at == epoch("2026-12-06T00:14:27")
    status = gp.final_status("207", None, limited, None)
    assert status is not None and status.state == JobState.FAILED
    assert status.reason == (
        "Grid Engine: failed 37 (qmaster enforced h_rt, h_cpu, or h_vmem limit), "
        "exit code 137 (SIGKILL)"
    )
    assert status.efficiency is not None and status.efficiency["max_vmem_mb"] == 4.605


def test_the_exit_file_decides_over_accounting() -> None:
    acct = gp.parse_qacct(fixture("qacct.txt"))["206"]
    status = gp.final_status("206", None, acct, 0)
    assert status is not None and (status.state, status.raw_state) == (
        JobState.COMPLETED,
        "EXIT_FILE",
    )
    assert gp.final_status("1", None, None, None) is None


def test_contexts_of_qstat_j() -> None:
    assert gp.parse_contexts(fixture("qstat-j.xml")) == {"204": {"scripthut_tag": "hut.r1.t1.1"}}
    assert gp.parse_contexts("not xml") == {}


def test_qhost_and_queue_summary() -> None:
    assert gp.parse_qhost_cpus(fixture("qhost.xml")) == 2
    (queue,) = gp.parse_queue_summary(fixture("qstat-gc.xml"))
    assert (queue.name, queue.cpus_total) == ("all.q", 8)
    assert queue.cpus_idle is not None and 0 <= queue.cpus_idle <= 8


# --- states -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "state", "reason"),
    [
        ("qw", JobState.PENDING, None),
        ("hqw", JobState.PENDING, "held"),
        ("Eqw", JobState.PENDING, "error state"),
        ("r", JobState.RUNNING, None),
        ("t", JobState.RUNNING, "transferred"),
        ("Rr", JobState.RUNNING, "restarted"),
        ("s", JobState.PENDING, "suspended"),
        ("rs", JobState.RUNNING, "suspended"),
        ("S", JobState.PENDING, "suspended"),
        ("dr", JobState.RUNNING, "being deleted"),
        ("dqw", JobState.PENDING, "being deleted"),
        ("hr", JobState.RUNNING, None),
        ("z", JobState.COMPLETED, None),
        ("X", JobState.UNKNOWN, "unknown Grid Engine state"),
        ("", JobState.UNKNOWN, "no state"),
    ],
)
def test_states(raw: str, state: JobState, reason: str | None) -> None:
    got_state, got_reason = gp.state_info(raw)
    assert got_state == state
    if reason is None:
        assert got_reason is None
    else:
        assert got_reason is not None and reason in got_reason


# --- Univa / Altair variants (hand-written from their documented formats) ----------------------

UNIVA_QSTAT = """<?xml version='1.0'?>
<job_info xmlns:xsd="http://www.univa.com/schemas/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>4242</JB_job_number>
      <JAT_prio>0.55500</JAT_prio>
      <JB_name>sweep</JB_name>
      <JB_owner>alice</JB_owner>
      <state>r</state>
      <JAT_start_time>2024-03-05T10:20:30.123</JAT_start_time>
      <queue_name>long.q@node-07.cluster</queue_name>
      <jclass_name></jclass_name>
      <slots>1</slots>
      <tasks>3</tasks>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>4242</JB_job_number>
      <JB_name>sweep</JB_name>
      <JB_owner>alice</JB_owner>
      <state>qw</state>
      <JB_submission_time>2024-03-05T10:20:00.001</JB_submission_time>
      <queue_name></queue_name>
      <slots>1</slots>
      <tasks>4-10:1</tasks>
    </job_list>
    <job_list state="pending">
      <JB_job_number>4300</JB_job_number>
      <JB_name>broken</JB_name>
      <JB_owner>alice</JB_owner>
      <state>Eqw</state>
      <JB_submission_time>2024-03-05T10:21:00.000</JB_submission_time>
      <slots>1</slots>
    </job_list>
  </job_info>
</job_info>
"""

UNIVA_QACCT = """==============================================================
qname        long.q
hostname     node-07.cluster
owner        alice
jobname      sweep
jobnumber    4242
taskid       3
qsub_time    03/05/2024 10:20:00.001
start_time   03/05/2024 10:20:30.123
end_time     03/05/2024 10:25:30.456
granted_pe   smp
slots        4
failed       0
exit_status  0
ru_wallclock 300.333
cpu          1080.000
maxvmem      1.500G
"""


def test_univa_times_with_milliseconds_and_array_tasks() -> None:
    rows = {row.job_id: row for row in gp.parse_qstat_xml(UNIVA_QSTAT)}
    assert sorted(rows) == ["4242", "4242.3", "4300"]
    task = rows["4242.3"]
    assert (task.queue, task.node, task.tasks) == ("long.q", "node-07.cluster", "3")
    assert task.started_at == epoch("2024-03-05T10:20:30")
    assert rows["4242"].tasks == "4-10:1"
    broken = gp.live_status(rows["4300"])
    assert broken.state == JobState.PENDING and "qmod -cj" in (broken.reason or "")


def test_univa_qacct_formats() -> None:
    job = gp.parse_qacct(UNIVA_QACCT)["4242.3"]
    assert job.started_at == epoch("2024-03-05T10:20:30")
    assert job.ended_at == epoch("2024-03-05T10:25:30")
    assert (job.wallclock_s, job.cpu_s, job.slots) == (300.333, 1080.0, 4)
    assert job.maxvmem_mb == 1536.0
    eff = gp.efficiency(job)
    assert eff is not None and eff["cpu_efficiency"] == pytest.approx(1080 / (300.333 * 4), 1e-3)


# --- values ------------------------------------------------------------------------------------


def test_submitted_ids_and_sizes() -> None:
    assert gp.submitted_job_id("204\n") == "204"
    assert gp.submitted_job_id("2.1-4:1") == "2"
    assert gp.submitted_job_id("Your job 5 has been submitted") is None
    assert gp.parse_size_mb("32.506KB") == pytest.approx(32.506 / 1024)
    assert gp.parse_size_mb("0.000B") == 0.0
    assert gp.parse_size_mb("4825088") == pytest.approx(4825088 / (1 << 20))
    assert gp.parse_seconds("0:05:00") == 300.0


def test_unsafe_values_are_refused_or_made_plain() -> None:
    assert gp.job_name("1 weird: name/é") == "j1_weird__name__"
    assert gp.job_name("") == "job"
    assert gp.job_name("-N x") == "j-N_x"
    assert gp.word("queue", "all.q@node1") == "all.q@node1"
    for bad in ("a b", "a;b", "a,b", "a\nb", "$(x)"):
        with pytest.raises(ValueError, match="queue"):
            gp.word("queue", bad)
    for bad in ("/a b/out", "/a/$JOB_ID", "host:/x", "/a,b", "/a'b", "/a\\b"):
        with pytest.raises(ValueError, match="cannot write"):
            gp.path(bad)
    assert gp.h_rt(3661) == "1:01:01"


def test_xml_with_a_dtd_is_refused() -> None:
    bomb = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><job_info>&a;</job_info>'
    with pytest.raises(ValueError, match="DTD"):
        gp.parse_qstat_xml(bomb)
    with pytest.raises(ValueError, match="not valid XML"):
        gp.parse_qstat_xml("error: commlib error")


def test_a_poll_runs_at_most_two_scheduler_commands() -> None:
    from scripthut.backends import sge_scripts
    from scripthut.backends.base import JobPaths, JobRef

    paths = JobPaths("/l/a.out", "/l/a.err", "/l/a.exit", "/l/a.sh")
    refs = [JobRef(str(i), f"hut.t{i}", paths) for i in range(1000)]
    script = sge_scripts.poll_script(refs, "alice", "@@m", 14)
    # every command of the script runs in a `__hut_out=$(...)` capture
    commands = re.findall(r"__hut_out=\$\((?:set -o pipefail; )?(\w+)", script)
    assert commands == ["qstat", "qacct"]


def test_config_entry_builds_the_backend() -> None:
    from scripthut.backends.registry import AVAILABLE_TYPES, create_backend
    from scripthut.backends.sge import SGEBackend
    from scripthut.config import parse_config
    from scripthut.errors import InvalidInput

    entry = {
        "name": "grid",
        "type": "sge",
        "transport": "local",
        "parallel_env": "smp",
        "queue": "all.q",
        "account": "p1",
        "memory_resource": None,
    }
    config = parse_config({"backends": [entry]}, source="test")
    backend = create_backend(config, config.backend("grid"))
    assert "sge" in AVAILABLE_TYPES and isinstance(backend, SGEBackend)
    assert (backend.parallel_env, backend.queue, backend.memory_resource) == ("smp", "all.q", None)
    with pytest.raises(InvalidInput, match="pe_name"):
        parse_config({"backends": [{**entry, "pe_name": "smp"}]}, source="test")
