"""Grid Engine arrays without a cluster: ranges, limits, element ids, the poll's live scan
(real bash on qstat's XML), pending elements read out of an array's `<tasks>` range, and the
array job's wrapper run by bash as each element (its script copied out of the bundle)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from scripthut.backends import sge_arrays as ga
from scripthut.backends.arrays import members_script, read_members
from scripthut.backends.base import ArrayGroup, JobPaths, JobRef, JobSpec
from scripthut.backends.remote import Section, parse_sections
from scripthut.backends.sge import SGEBackend, _pending_elements
from scripthut.backends.sge_parse import parse_qstat_xml
from scripthut.backends.sge_scripts import _LIVE_SCAN
from scripthut.errors import ScriptHutError
from scripthut.transport import LocalTransport
from tests.test_arrays import HOSTILE, bundle_texts, run_element, write_submission

QSTAT = """<?xml version='1.0'?>
<job_info>
  <queue_info>
    <job_list state="running">
      <JB_job_number>862</JB_job_number>
      <JB_name>hut.r1.arr.0123456789abcdef</JB_name>
      <JB_owner>hutuser</JB_owner>
      <state>r</state>
      <queue_name>all.q@vm</queue_name>
      <slots>1</slots>
      <tasks>1</tasks>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>862</JB_job_number>
      <JB_name>hut.r1.arr.0123456789abcdef</JB_name>
      <JB_owner>hutuser</JB_owner>
      <state>qw</state>
      <slots>1</slots>
      <tasks>3-7:2,9</tasks>
    </job_list>
    <job_list state="zombie">
      <JB_job_number>700</JB_job_number>
      <state>z</state>
      <tasks>4</tasks>
    </job_list>
  </job_info>
</job_info>
"""


def ref(job_id: str) -> JobRef:
    return JobRef(job_id, f"tag-{job_id}", JobPaths("o", "e", "x", "s"), 60)


def test_task_ranges_are_expanded_and_junk_is_not_a_range() -> None:
    assert ga.task_numbers("3-7:2,9") == {3, 5, 7, 9}
    assert ga.task_numbers("4") == {4}
    assert ga.task_numbers("1-3") == {1, 2, 3}
    assert ga.task_numbers("x") == set()
    assert ga.task_numbers("1-9999999") == set()


def test_limits_come_from_qconf_and_zero_means_no_limit() -> None:
    body = "execd_spool_dir /var\nmax_aj_instances             2000\nmax_aj_tasks 500\n"
    limits = ga.read_limits([Section(("sconf", "0"), body)])
    assert limits == ga.SiteLimits(500, 2000)
    assert limits.largest_array(None) == 500 and limits.largest_array(40) == 40
    assert limits.throttle(None) == 2000 and limits.throttle(5) == 5
    unlimited = ga.read_limits([Section(("sconf", "0"), "max_aj_tasks 0\nmax_aj_instances 0\n")])
    assert unlimited == ga.SiteLimits(None, None)
    assert unlimited.largest_array(None) > 1_000_000 and unlimited.throttle(None) is None
    assert ga.read_limits([Section(("sconf", "1"), "denied")]) is None


def test_element_ids_are_task_numbers_from_one_and_the_throttle_only_when_it_limits() -> None:
    assert ga.element_id("862", 0) == "862.1"
    assert ga.split_id("862.4") == ("862", "4") and ga.split_id("862") == ("862", None)
    assert ga.array_options(4, 2) == [("t", "1-4"), ("tc", "2")]
    assert ga.array_options(4, 4) == [("t", "1-4"), ("tc", None)]


def test_pending_elements_get_the_array_rows_state() -> None:
    rows = {row.job_id: row for row in parse_qstat_xml(QSTAT)}
    assert rows["862.1"].state == "r"
    found = _pending_elements([ref("862.1"), ref("862.5"), ref("862.6"), ref("700")], rows)
    assert set(found) == {"862.5"}
    assert found["862.5"].state == "qw" and found["862.5"].tasks == "5"


def test_the_live_scan_marks_running_and_pending_tasks_but_not_zombies() -> None:
    script = "__hut_out=$(cat)\n" + _LIVE_SCAN + 'printf "%s\\n" "${!__hut_live[@]}"\n'
    done = subprocess.run(
        ["bash", "-c", script], input=QSTAT, capture_output=True, text=True, check=True
    )
    assert set(done.stdout.split()) == {"862", "862.1", "862.3", "862.5", "862.7", "862.9"}


def test_elements_to_cancel_become_runs_of_tasks_per_array() -> None:
    ids = ["862.4", "862.2", "862.3", "862.9", "700", "901.1", "862.3"]
    assert ga.task_ranges(ids) == [("862", "2-4"), ("862", "9-9"), ("901", "1-1")]
    assert ga.task_ranges(["700"]) == []


def test_each_element_copies_its_own_script_from_the_bundle_hostile_text_intact(
    tmp_path: Path,
) -> None:
    sge = SGEBackend(
        "sge",
        transport=LocalTransport(),
        max_concurrent=10,
        log_dir=str(tmp_path / "logs é 'x'"),
    )
    sge.host.user, sge.host.home = "alice", str(tmp_path)
    texts = bundle_texts(3)
    texts[2] = f"#!/bin/bash\nprintf '%s\\n' {shlex.quote(HOSTILE)} 'ü'; exit 6\n"
    jobs = []
    for i, text in enumerate(texts):
        paths = sge.job_paths("r1", f"t{i}", 1)
        jobs.append(JobSpec(f"hut.r1.t{i}.1", "r1", f"t{i}", 1, f"t{i}", text, paths, "~"))
    item = sge.array_submission(ArrayGroup(tuple(jobs), throttle=2))
    assert "#$ -t 1-3\n" in item.text and "#$ -tc 2\n" in item.text
    assert item.bundle is not None and item.bundle.path.endswith(".elements")
    write_submission(item, tmp_path)
    assert Path(item.bundle.path).read_bytes() == "".join(texts).encode()
    assert not any(Path(j.paths.script).exists() for j in jobs), "written when each starts"
    for task in (3, 2, 1):  # Grid Engine's tasks count from 1
        done = run_element(item.script_path, {"SGE_TASK_ID": str(task)}, tmp_path)
        assert done.returncode == task + 3, done
        assert Path(jobs[task - 1].paths.script).read_bytes() == texts[task - 1].encode()
        assert os.stat(jobs[task - 1].paths.script).st_mode & 0o777 == 0o700
    assert Path(jobs[2].paths.stdout).read_text() == f"{HOSTILE}\nü\n"
    assert Path(jobs[1].paths.stdout).read_text() == "out 1\n"
    assert not (tmp_path / "PWNED").exists()
    for bad in ({}, {"SGE_TASK_ID": "0"}, {"SGE_TASK_ID": "4"}, {"SGE_TASK_ID": "undefined"}):
        done = run_element(item.script_path, bad, tmp_path)
        assert done.returncode == 2
    # The wrapper's own output goes to its log (this folder's name is too odd for `-o`).
    assert Path(item.logs[0]).read_text().count("scripthut: this array has no element") == 4
    bundle = Path(item.bundle.path)
    bundle.write_bytes(bundle.read_bytes()[:-1])  # a short bundle: the last element stops
    Path(jobs[2].paths.script).unlink()
    done = run_element(item.script_path, {"SGE_TASK_ID": "3"}, tmp_path)
    assert done.returncode == 2
    assert "cannot write this element's script" in Path(jobs[2].paths.stderr).read_text()
    assert Path(jobs[2].paths.stdout).read_text() == f"{HOSTILE}\nü\n", "it did not run"
    # After a restart the wrapper's tags line places each element; the bundle is not read.
    text = "__hut_m=@@m\n" + members_script([j.tag for j in jobs], sge.log_dir)
    out = subprocess.run(["bash", "-c", text], capture_output=True, text=True, check=True)
    members = read_members(parse_sections(out.stdout, "@@m"))
    assert members == {j.tag: [(item.tag, i)] for i, j in enumerate(jobs)}


def test_a_value_grid_engine_cannot_take_names_the_task() -> None:
    sge = SGEBackend("sge", transport=LocalTransport(), max_concurrent=10, log_dir="/logs")
    sge.host.user, sge.host.home = "alice", "/home/alice"
    paths = JobPaths("/l/o", "/l/e", "/l/x", "/l/s")
    jobs = [
        JobSpec(f"hut.r1.t{i}.1", "r1", f"t{i}", 1, "t", "", paths, "~", cpus=2) for i in (0, 1)
    ]
    with pytest.raises(ScriptHutError, match=r"task 't0'.*parallel_env"):
        sge.array_submission(ArrayGroup(tuple(jobs)))
