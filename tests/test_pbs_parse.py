"""PBS parsing and the #PBS header, on Torque 6, PBS Pro / OpenPBS and the rig's wrappers.

The fixtures (tests/fixtures/pbs) are hand-written in the formats Torque 6 and PBS Pro
document, and captured from the Torque-like wrappers of the test rig (see their README).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripthut.backends import pbs_parse as pp
from scripthut.backends import pbs_script as ps
from scripthut.states import JobState

FIXTURES = Path(__file__).parent / "fixtures" / "pbs"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def by_key(jobs: list[pp.PBSJob]) -> dict[str, pp.PBSJob]:
    return {job.key: job for job in jobs}


# --- qstat -f -------------------------------------------------------------------------------


def test_torque6_records_with_four_space_indents_and_wrapped_values() -> None:
    jobs = pp.parse_qstat_f(fixture("torque6_qstat_f.txt"))
    assert [job.job_id for job in jobs] == [
        "1234.torque.example.org",
        "1235.torque.example.org",
        "1236.torque.example.org",
        "1230.torque.example.org",
        "1231.torque.example.org",
        "1232.torque.example.org",
        "1240.torque.example.org",
    ]
    running = jobs[0]
    assert running.key == "1234"
    assert running.state == "R"
    assert running.owner == "alice"
    variables = running.attrs["Variable_List"]
    assert "PBS_O_PATH=/usr/local/bin:/usr/bin:/bin:/opt/pbs/bin," in variables
    assert variables.endswith("PBS_O_SERVER=torque.example.org")
    assert "\t" not in variables
    assert running.attrs["submit_args"].endswith("/20261119-100000-ab12/a.1.sh")
    assert running.attrs["euser"] == "alice"  # the attribute after a wrapped one
    assert pp.job_cpus(running) == 4  # nodes=1:ppn=4
    assert pp.job_node(running) == "node07"


def test_pbspro_text_records_with_a_wrapped_comment_and_an_array() -> None:
    jobs = by_key(pp.parse_qstat_f(fixture("pbspro_qstat_f.txt")))
    assert set(jobs) == {"4101", "4102", "4103", "4200[]", "4300"}
    assert jobs["4102"].get("comment") == (
        "Not Running: Insufficient amount of resource: ncpus (R: 64 A: 48 T: 48)"
    )
    assert jobs["4200[]"].state == "B"
    assert jobs["4101"].attrs["Submit_arguments"].endswith("/20261119-100000-cd34/a.1.sh")
    assert pp.job_cpus(jobs["4101"]) == 2
    assert pp.job_node(jobs["4101"]) == "cn012"


def test_the_wrappers_tab_indents_and_bare_ids() -> None:
    jobs = by_key(pp.parse_qstat_f(fixture("wrapper_qstat_f.txt")))
    assert set(jobs) == {"8025", "8026", "7674", "7658"}
    assert jobs["8025"].job_id == "8025"
    assert jobs["8025"].name == "hut.capture.0.1"
    assert jobs["8026"].state == "Q"
    assert jobs["7674"].state == "C"
    assert jobs["7674"].exit_status is None  # the wrappers never report one
    assert jobs["7658"].name == "not-hut 2d7ab934"
    assert pp.job_cpus(jobs["7674"]) == 2


def test_stderr_lines_between_records_are_not_taken_for_values() -> None:
    text = fixture("pbspro_qstat_f.txt").replace(
        "\nJob Id: 4103", "\nqstat: Unknown Job Id 4999.pbs01\nJob Id: 4103"
    )
    jobs = by_key(pp.parse_qstat_f(text))
    assert jobs["4102"].attrs["project"] == "_pbs_project_default"
    assert "Unknown" not in "".join(jobs["4102"].attrs.values())


def test_qstat_json_flattens_nested_attributes() -> None:
    jobs = by_key(pp.parse_qstat(fixture("pbspro_qstat_xf.json")))
    assert set(jobs) == {"4090", "4091", "4092", "4093"}
    done = jobs["4090"]
    assert done.exit_status == 0
    assert done.get("resources_used.cput") == "00:19:40"
    assert done.get("Resource_List.ncpus") == "2"
    assert done.get("Variable_List.PBS_O_HOME") == "/home/alice"
    assert pp.parse_qstat_json("") == []
    with pytest.raises(ValueError, match="no JSON"):
        pp.parse_qstat_json("qstat: illegal option -- F")


def test_owned_by_keeps_the_users_jobs() -> None:
    jobs = pp.parse_qstat_f(fixture("torque6_qstat_f.txt"))
    assert "1240" not in {job.key for job in pp.owned_by(jobs, "alice")}
    assert [job.key for job in pp.owned_by(jobs, "bob")] == ["1240"]


@pytest.mark.parametrize(
    ("text", "key"),
    [("123", "123"), ("123.srv", "123"), ("123.srv.example.org", "123"), ("7[4].s", "7[4]")],
)
def test_job_keys(text: str, key: str) -> None:
    assert pp.is_job_id(text)
    assert pp.job_key(text) == key


def test_submitted_job_id_is_the_last_line() -> None:
    assert pp.submitted_job_id("warning: x\n1234.torque.example.org\n") == "1234.torque.example.org"
    assert pp.submitted_job_id("8025\n") == "8025"
    assert pp.submitted_job_id("qsub: Unknown queue\n") is None


# --- values ---------------------------------------------------------------------------------


def test_times_sizes_and_durations() -> None:
    assert pp.parse_time("Sun Dec  6 00:01:19 2026") == 1796515279.0  # read as UTC
    assert pp.parse_time("1480000000") == 1480000000.0
    assert pp.parse_time("garbage") is None
    assert pp.parse_size_mb("2097152kb") == 2048.0
    assert pp.parse_size_mb("4gb") == 4096.0
    assert pp.parse_size_mb("1mw") == 8.0
    assert pp.parse_duration("100:00:30") == 360030.0
    assert pp.parse_duration("45") == 45.0


# --- states and statuses --------------------------------------------------------------------


def test_live_states_of_both_dialects() -> None:
    torque = by_key(pp.parse_qstat_f(fixture("torque6_qstat_f.txt")))
    queued = pp.live_status(torque["1235"])
    assert (queued.state, queued.raw_state) == (JobState.PENDING, "Q")
    assert queued.reason == "job would exceed the queue's gpu limit"
    held = pp.live_status(torque["1236"])
    assert held.state is JobState.PENDING and "held" in (held.reason or "")
    running = pp.live_status(torque["1234"])
    assert (running.state, running.node, running.cpus) == (JobState.RUNNING, "node07", 4)
    assert running.started_at == pp.parse_time("Thu Nov 19 10:05:00 2026")
    pbspro = by_key(pp.parse_qstat_f(fixture("pbspro_qstat_f.txt")))
    assert pp.live_status(pbspro["4200[]"]).state is JobState.RUNNING  # B: array begun
    assert pp.state_info("Z").state is JobState.UNKNOWN


@pytest.mark.parametrize(
    ("key", "state", "code", "reason"),
    [
        ("1230", JobState.COMPLETED, 0, None),
        ("1231", JobState.FAILED, None, "walltime exceeded"),
        ("1232", JobState.FAILED, 143, "SIGTERM"),
    ],
)
def test_torque_exit_status_decides_without_an_exit_file(
    key: str, state: JobState, code: int | None, reason: str | None
) -> None:
    job = by_key(pp.parse_qstat_f(fixture("torque6_qstat_f.txt")))[key]
    status = pp.final_status(job.job_id, job, None)
    assert status is not None
    assert (status.state, status.exit_code, status.raw_state) == (state, code, "C")
    assert (reason is None and status.reason is None) or reason in (status.reason or "")


def test_pbspro_history_statuses_and_efficiency() -> None:
    jobs = by_key(pp.parse_qstat(fixture("pbspro_qstat_xf.json")))
    done = pp.final_status("4090.pbs01", jobs["4090"], None)
    assert done is not None and done.state is JobState.COMPLETED and done.raw_state == "F"
    assert done.efficiency == {
        "elapsed_s": 600.0,
        "total_cpu_s": 1180.0,
        "alloc_cpus": 2.0,
        "max_rss_mb": 1024.0,
        "cpu_efficiency": 0.9833,
    }
    assert done.started_at == pp.parse_time("Thu Nov 19 09:40:05 2026")
    assert done.ended_at == pp.parse_time("Thu Nov 19 09:50:05 2026")
    walltime = pp.final_status("4091", jobs["4091"], None)
    assert walltime is not None and "walltime" in (walltime.reason or "")
    failed = pp.final_status("4092", jobs["4092"], None)
    assert failed is not None and (failed.state, failed.exit_code) == (JobState.FAILED, 3)
    killed = pp.final_status("4093", jobs["4093"], None)
    assert killed is not None and killed.exit_code == 137 and "SIGKILL" in (killed.reason or "")


def test_the_exit_file_wins_and_a_silent_finish_is_undecided() -> None:
    jobs = by_key(pp.parse_qstat_f(fixture("wrapper_qstat_f.txt")))
    assert pp.final_status("7674", jobs["7674"], None) is None  # C, no exit_status
    failed = pp.final_status("7674", jobs["7674"], 3)
    assert failed is not None and (failed.state, failed.raw_state) == (JobState.FAILED, "C")
    torque = by_key(pp.parse_qstat_f(fixture("torque6_qstat_f.txt")))
    ok = pp.final_status("1232", torque["1232"], 0)  # exit file 0 beats exit_status 271
    assert ok is not None and ok.state is JobState.COMPLETED
    gone = pp.final_status("99", None, 0)
    assert gone is not None and gone.raw_state == "EXIT_FILE"
    assert pp.final_status("99", None, None) is None


def test_external_jobs_keep_the_raw_state() -> None:
    jobs = by_key(pp.parse_qstat_f(fixture("wrapper_qstat_f.txt")))
    finished = pp.external_status(jobs["7658"])
    assert (finished.state, finished.raw_state, finished.external) == (JobState.UNKNOWN, "C", True)
    queued = pp.external_status(jobs["8026"])
    assert (queued.state, queued.raw_state, queued.name) == (JobState.PENDING, "Q", "held-one")


# --- nodes, queues, flavor ---------------------------------------------------------------------


def test_pbsnodes_cpus() -> None:
    assert pp.parse_pbsnodes(fixture("torque6_pbsnodes.txt")) == (13, 36)
    assert pp.parse_pbsnodes(fixture("pbspro_pbsnodes.txt")) == (42, 144)
    assert pp.parse_pbsnodes(fixture("wrapper_pbsnodes.txt")) == (8, 8)
    assert pp.parse_pbsnodes("") is None


def test_qstat_queues() -> None:
    queues, queued, running = pp.parse_queues(fixture("torque6_qstat_Q.txt"))
    assert [(q.name, q.state) for q in queues] == [("batch", "up"), ("debug", "inactive")]
    assert (queued, running) == (1, 1)
    queues, queued, running = pp.parse_queues(fixture("pbspro_qstat_Q.txt"))
    assert [q.name for q in queues] == ["workq", "express"] and (queued, running) == (1, 1)
    queues, queued, running = pp.parse_queues(fixture("wrapper_qstat_Q.txt"))
    assert [q.name for q in queues] == ["debug", "normal"] and queued is None


def test_flavor_detection() -> None:
    assert pp.detect_flavor("pbs_version = 19.1.3\n") == "pbspro"
    assert pp.detect_flavor("Version: 6.1.2\nCommit: abc\n") == "torque"
    assert pp.detect_flavor("Unknown option: version\nUsage:\n    qstat [-f]") == "torque"


# --- the #PBS header ------------------------------------------------------------------------


def test_torque_header() -> None:
    res = ps.Resources(cpus=4, memory_mb=4096, time_limit_s=90061, gres="gpu:2")
    header = ps.job_header("torque", name="hut.r.1.1", queue="batch", account="lab-1", res=res)
    assert header == [
        "#PBS -N hut.r.1.1",
        "#PBS -S /bin/bash",
        "#PBS -q batch",
        "#PBS -A lab-1",
        "#PBS -l walltime=25:01:01",
        "#PBS -l nodes=1:ppn=4:gpus=2",
        "#PBS -l mem=4gb",
    ]


def test_pbspro_header() -> None:
    res = ps.Resources(cpus=2, memory_mb=1500, time_limit_s=60, gres="ngpus=1:gpu_model=a100")
    header = ps.job_header("pbspro", name="hut.r.1.1", queue=None, account=None, res=res)
    assert header[2:] == [
        "#PBS -l walltime=00:01:00",
        "#PBS -l select=1:ncpus=2:mem=1500mb:ngpus=1:gpu_model=a100",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("queue", "batch -W x"),
        ("queue", "q\n#PBS -l x"),
        ("queue", "$(touch /tmp/p)"),
        ("account", "a;b"),
        ("gres", "gpu:a100:2"),
        ("gres", "ngpus=1 -W"),
    ],
)
def test_values_a_pbs_line_cannot_carry_are_refused(field: str, value: str) -> None:
    res = ps.Resources(gres=value if field == "gres" else None)
    options = {"queue": None, "account": None}
    if field != "gres":
        options[field] = value
    with pytest.raises(ValueError, match=field if field != "gres" else "gres"):
        ps.job_header("torque", name="hut.r.1.1", res=res, **options)


def test_memory_and_log_redirect() -> None:
    assert ps.pbs_memory(4096) == "4gb"
    assert ps.pbs_memory(1000) == "1000mb"
    line = ps.log_redirect("~/logs/a b.out", "/x/'q'.err")
    assert line == "exec >>\"$HOME\"/'logs/a b.out' 2>>'/x/'\\''q'\\''.err' || exit 1"


# --- job arrays (the real formats; the rig's wrappers show one record per array) ----------


def test_torque_array_elements_in_qstat_t_f() -> None:
    jobs = by_key(pp.parse_qstat_f(fixture("torque_qstat_t_f_array.txt")))
    assert set(jobs) == {"1300[]", "1300[0]", "1300[1]", "1300[2]"}
    assert [jobs[f"1300[{i}]"].state for i in range(3)] == ["C", "R", "H"]
    assert jobs["1300[0]"].get("exit_status") == "0"
    assert jobs["1300[1]"].get("job_array_id") == "1"
    assert [job.key for job in pp.owned_by(list(jobs.values()), "alice")] == list(jobs)


def test_pbspro_array_subjobs_in_qstat_x_t_f() -> None:
    jobs = by_key(pp.parse_qstat_f(fixture("pbspro_qstat_x_t_f_array.txt")))
    assert set(jobs) == {"4400[]", "4400[0]", "4400[1]", "4400[2]"}
    assert jobs["4400[]"].state == "B"
    assert [jobs[f"4400[{i}]"].state for i in range(3)] == ["F", "R", "Q"]
    assert jobs["4400[0]"].get("Exit_status") == "3"
    assert jobs["4400[2]"].get("array_index") == "2"


@pytest.mark.parametrize(
    ("printed", "array_key", "element", "element_key"),
    [
        ("1300[].torque.example.org", "1300[]", "1300[4].torque.example.org", "1300[4]"),
        ("4400[].pbs", "4400[]", "4400[4].pbs", "4400[4]"),
        ("4400[]", "4400[]", "4400[4]", "4400[4]"),
    ],
)
def test_array_ids_qsub_prints_and_their_elements(
    printed: str, array_key: str, element: str, element_key: str
) -> None:
    assert pp.submitted_job_id(f"{printed}\n") == printed
    assert pp.job_key(printed) == array_key
    assert pp.is_job_id(element) and pp.job_key(element) == element_key
