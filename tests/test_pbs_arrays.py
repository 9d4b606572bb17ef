"""PBS job arrays on the real Torque 6 and PBS Pro formats (fixtures), through the backend's
generated scripts run by bash with fake qsub/qstat/qdel/qmgr (see tests/test_pbs_scripts.py).

The rig's wrappers cannot show elements of their own (tests/pbs/test_pbs_arrays_rig.py):
what real servers print is proven here — `123[]` ids from qsub, `qstat -t -f` elements,
PBS Pro's `-x -t -f -F json` subjobs in states B/X, per-element `qdel`, site limits.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from scripthut.backends import pbs_arrays as pa
from scripthut.backends import pbs_parse as pp
from scripthut.backends.arrays import ARRAYS_DIR, array_tag
from scripthut.backends.base import ArrayGroup, JobPaths, JobRef, JobSpec
from scripthut.backends.pbs import PBSBackend
from scripthut.backends.remote import Section
from scripthut.states import JobState
from tests.test_arrays import HOSTILE, bundle_texts, run_element, write_bundle, write_submission
from tests.test_pbs_scripts import backend, calls, cat

FIXTURES = Path(__file__).parent / "fixtures" / "pbs"


def spec(pbs: PBSBackend, tmp_path: Path, index: int, command: str = "true") -> JobSpec:
    paths = pbs.job_paths("r1", f"t{index}", 1)
    base = JobSpec(
        tag=f"hut.r1.t{index}.1",
        run_id="r1",
        task_id=f"t{index}",
        attempt=1,
        name=f"t{index}",
        script="",
        paths=paths,
        working_dir=str(tmp_path),
        memory_mb=100,
        partition="batch",
    )
    body = f"#!/bin/bash\n{command}\necho $? > {paths.exit_code}\n"
    return replace(base, script=pbs.render_script(base, body))


def element_ref(job_id: str, tmp_path: Path, exit_code: str | None = None) -> JobRef:
    exit_path = tmp_path / "exits" / f"{job_id}.exit"
    if exit_code is not None:
        exit_path.parent.mkdir(exist_ok=True)
        exit_path.write_text(exit_code)
    paths = JobPaths(str(tmp_path / "o"), str(tmp_path / "e"), str(exit_path), "")
    return JobRef(job_id=job_id, tag=f"hut.r1.{job_id}", paths=paths)


# --- ids, limits, the array line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("printed", "element"),
    [
        ("1300[].torque.example.org", "1300[4].torque.example.org"),
        ("4400[]", "4400[4]"),
        ("4400[].pbs01", "4400[4].pbs01"),
        ("37244", "37244[4]"),  # the wrappers print a bare id
    ],
)
def test_element_ids_from_the_id_qsub_printed(printed: str, element: str) -> None:
    assert pp.submitted_job_id(f"{printed}\n") == printed
    assert pa.element_id(printed, 4) == element
    assert pa.split_id(element) == (printed.split("[")[0].split(".")[0], 4)
    assert pa.split_id("1234.server") == ("1234", None)


def test_site_limits_from_qmgr_in_each_dialect() -> None:
    torque = "#\n# Set server attributes.\n#\nset server max_job_array_size = 1000\n"
    pro = "Server pbs01\n\tserver_state = Active\n\tmax_array_size = 10000\n"

    def read(flavor: str, body: str, rc: int = 0) -> pa.SiteLimits | None:
        return pa.read_limits([Section(("qmgr", str(rc)), body)], flavor)

    assert read("torque", torque) == pa.SiteLimits(1000)
    assert read("pbspro", pro) == pa.SiteLimits(10000)
    assert read("pbspro", torque) == pa.SiteLimits(None)  # absent: no limit
    assert read("torque", "bash: qmgr: command not found", 127) == pa.SiteLimits(None)
    assert read("torque", "qmgr: cannot connect to server", 1) is None  # ask again later
    assert pa.SiteLimits(1000).largest_array(None) == 1000
    assert pa.SiteLimits(1000).largest_array(50) == 50
    assert pa.SiteLimits(None).largest_array(None) >= 1 << 20


def test_array_lines_torque_throttles_pbspro_chunks_by_the_throttle() -> None:
    assert pa.array_line("torque", 5, 2) == "#PBS -t 0-4%2"
    assert pa.array_line("torque", 5, 9) == "#PBS -t 0-4"
    assert pa.array_line("pbspro", 5, 2) == "#PBS -J 0-4"
    with pytest.raises(ValueError, match="at least two"):
        pa.array_line("pbspro", 1, None)
    jobs = tuple(
        JobSpec(f"hut.r.{i}.1", "r", f"t{i}", 1, "n", "", JobPaths("", "", "", ""), "~")
        for i in range(5)
    )
    group = ArrayGroup(jobs, throttle=2)
    assert [len(c) for c in pa.chunks_for("pbspro", group, 1000)] == [2, 2, 1]
    assert [len(c) for c in pa.chunks_for("torque", group, 1000)] == [5]
    assert [len(c) for c in pa.chunks_for("torque", group, 3)] == [3, 2]


# --- the wrapper's index ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "ran"),
    [
        ({"PBS_ARRAYID": "1"}, "1"),  # Torque
        ({"PBS_ARRAY_INDEX": "2"}, "2"),  # PBS Pro
        ({"SLURM_ARRAY_TASK_ID": "0"}, "0"),  # Slurm's Torque commands
        ({"PBS_ARRAYID": "", "SLURM_ARRAY_TASK_ID": "2"}, "2"),  # set but empty
    ],
)
def test_the_wrapper_runs_the_element_its_index_names(
    tmp_path: Path, env: dict[str, str], ran: str
) -> None:
    done, folder = run_wrapper(tmp_path, env)
    assert done.returncode == 0, done
    assert sorted(p.name for p in folder.iterdir()) == [f"ran.{ran}"]
    assert (tmp_path / f"t{ran}.out").read_text() == f"element {ran}\n"


def test_an_element_without_an_index_fails_loudly_and_runs_nothing(tmp_path: Path) -> None:
    done, folder = run_wrapper(tmp_path, {"PBS_ARRAYID": ""})
    assert done.returncode == 2
    assert list(folder.iterdir()) == []  # element 0 did not run by mistake
    log = (tmp_path / "wrapper.log").read_text()
    assert "scripthut: this array has no element -1" in log


def run_wrapper(
    tmp_path: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], Path]:
    folder = tmp_path / "ran"
    folder.mkdir()
    jobs = []
    for i in range(3):
        script = tmp_path / f"t{i}.sh"
        text = f"#!/bin/bash\ntouch {folder}/ran.{i}\necho element {i}\n"
        paths = JobPaths(str(tmp_path / f"t{i}.out"), str(tmp_path / f"t{i}.err"), "", str(script))
        jobs.append(JobSpec(f"hut.r.{i}.1", "r", f"t{i}", 1, "n", text, paths, "~"))
    bundle = write_bundle(jobs, tmp_path / "wrapper.elements")
    log = str(tmp_path / "wrapper.log")
    text = pa.wrapper_script(["#PBS -N x"], "#PBS -t 0-2", log, jobs, bundle)
    clean = {k: v for k, v in os.environ.items() if "ARRAY" not in k}
    done = subprocess.run(
        ["bash", "-s"], input=text, env={**clean, **env}, capture_output=True, text=True
    )
    return done, folder


@pytest.mark.parametrize("flavor", ["torque", "pbspro"])
def test_each_element_copies_its_own_script_from_the_bundle_hostile_text_intact(
    tmp_path: Path, flavor: str
) -> None:
    pbs = backend(tmp_path, {}, flavor=flavor)
    pbs.log_dir = str(tmp_path / "logs é 'x'")
    texts = bundle_texts(3)
    texts[2] = f"#!/bin/bash\nprintf '%s\\n' {shlex.quote(HOSTILE)} 'ü'; exit 6\n"
    jobs = [replace(spec(pbs, tmp_path, i), script=texts[i]) for i in range(3)]
    item = pbs.array_submission(ArrayGroup(tuple(jobs)))
    assert item.bundle is not None and item.bundle.path.endswith(".elements")
    write_submission(item, tmp_path)
    assert not any(Path(j.paths.script).exists() for j in jobs), "written when each starts"
    index = "PBS_ARRAYID" if flavor == "torque" else "PBS_ARRAY_INDEX"
    for i, env in [(2, {index: "2"}), (1, {index: "1"}), (0, {"SLURM_ARRAY_TASK_ID": "0"})]:
        done = run_element(item.script_path, env, tmp_path)
        assert done.returncode == i + 4, done
        assert Path(jobs[i].paths.script).read_bytes() == texts[i].encode()
        assert os.stat(jobs[i].paths.script).st_mode & 0o777 == 0o700
    assert Path(jobs[2].paths.stdout).read_text() == f"{HOSTILE}\nü\n"
    assert Path(jobs[0].paths.stdout).read_text().startswith("out 0 é it's")
    assert not (tmp_path / "PWNED").exists()
    done = run_element(item.script_path, {}, tmp_path)  # no index at all: loud, nothing run
    assert done.returncode == 2
    assert "this array has no element -1" in Path(item.logs[0]).read_text()
    bundle = Path(item.bundle.path)
    bundle.write_bytes(bundle.read_bytes()[:-1])  # a short bundle: the last element stops
    Path(jobs[2].paths.script).unlink()
    done = run_element(item.script_path, {index: "2"}, tmp_path)
    assert done.returncode == 2
    assert "cannot write this element's script" in Path(jobs[2].paths.stderr).read_text()
    assert Path(jobs[2].paths.stdout).read_text() == f"{HOSTILE}\nü\n", "it did not run"


# --- submitting through the generated script ----------------------------------------------

# The fake qsub keeps each script it is given (its last argument) as wrapper.<n>.
KEEP = 'n=$(ls "$(dirname "$0")/.." | grep -c wrapper); cp "$5" "$(dirname "$0")/../wrapper.$n"'


def test_torque_array_submission_is_one_qsub_with_t_and_element_ids(tmp_path: Path) -> None:
    qsub = f"{KEEP}; echo '1300[].torque.example.org'"
    qmgr = "echo 'set server max_job_array_size = 1000'"
    pbs = backend(tmp_path, {"qsub": qsub, "qmgr": qmgr}, flavor="torque")
    jobs = tuple(spec(pbs, tmp_path, i) for i in range(3))
    (outcomes,) = asyncio.run(pbs.submit_arrays([ArrayGroup(jobs, throttle=2)]))
    assert [o.job_id for o in outcomes] == [f"1300[{i}].torque.example.org" for i in range(3)]
    assert calls(tmp_path, "qmgr") == ["-c p s"]
    (argv,) = calls(tmp_path, "qsub")
    tag = array_tag(jobs)
    assert argv.endswith(f"/{ARRAYS_DIR}/{tag}.sh")
    wrapper = (tmp_path / "wrapper.0").read_text()
    assert f"#PBS -N {tag}\n" in wrapper and "#PBS -t 0-2%2\n" in wrapper
    assert "#PBS -l nodes=1:ppn=1\n" in wrapper and "PBS_ARRAYID" in wrapper
    assert f"# scripthut array tags: {' '.join(j.tag for j in jobs)}" in wrapper
    bundle = Path(argv.rsplit(" ", 1)[-1]).with_suffix(".elements")
    assert bundle.read_text() == "".join(job.script for job in jobs), "one file before qsub"
    assert not any(Path(job.paths.script).exists() for job in jobs)
    asyncio.run(pbs.submit_arrays([ArrayGroup(jobs[:2])]))
    assert calls(tmp_path, "qmgr") == ["-c p s"], "the limit is asked once"


def test_pbspro_arrays_chunked_by_throttle_and_a_chunk_of_one_is_plain(tmp_path: Path) -> None:
    qsub = (
        f"{KEEP}; "
        'if grep -q "^#PBS -J" "$5"; then echo "44${n}0[].pbs01"; else echo "44${n}0.pbs01"; fi'
    )
    qmgr = "printf 'Server pbs01\\n\\tmax_array_size = 10000\\n'"
    pbs = backend(tmp_path, {"qsub": qsub, "qmgr": qmgr}, flavor="pbspro", qstat_json=True)
    jobs = tuple(spec(pbs, tmp_path, i) for i in range(5))
    (outcomes,) = asyncio.run(pbs.submit_arrays([ArrayGroup(jobs, throttle=2)]))
    assert [o.job_id for o in outcomes] == [
        "4400[0].pbs01",
        "4400[1].pbs01",
        "4410[0].pbs01",
        "4410[1].pbs01",
        "4420.pbs01",
    ]
    assert calls(tmp_path, "qmgr") == ["-c list server"]
    assert "#PBS -J 0-1\n" in (tmp_path / "wrapper.0").read_text()
    assert "select=1:ncpus=1:mem=100mb" in (tmp_path / "wrapper.0").read_text()
    assert "#PBS -J" not in (tmp_path / "wrapper.2").read_text()  # one element: a plain job


# --- polling ----------------------------------------------------------------------------------


def test_torque_elements_are_polled_from_qstat_t_f(tmp_path: Path) -> None:
    pbs = backend(tmp_path, {"qstat": cat("torque_qstat_t_f_array.txt")}, flavor="torque")
    pbs.host.user = "alice"
    refs = [element_ref(f"1300[{i}].torque.example.org", tmp_path) for i in range(3)]
    result = asyncio.run(pbs.poll(refs))
    assert result.ok, result.error
    got = {k: (v.state, v.raw_state, v.exit_code) for k, v in result.jobs.items()}
    assert got == {
        "1300[0].torque.example.org": (JobState.COMPLETED, "C", 0),
        "1300[1].torque.example.org": (JobState.RUNNING, "R", None),
        "1300[2].torque.example.org": (JobState.PENDING, "H", None),
    }
    assert result.jobs["1300[1].torque.example.org"].node == "node07"
    assert calls(tmp_path, "qstat") == ["-t -f"]
    assert result.external == []  # the array's own records are ScriptHut's


def test_pbspro_subjobs_live_and_finished_in_one_round_trip(tmp_path: Path) -> None:
    live = cat("pbspro_qstat_x_t_f_array.txt")
    history = cat("pbspro_qstat_x_t_f_array.json")
    qstat = f'if [ "$1" = -x ]; then {history}; else {live}; fi'
    pbs = backend(tmp_path, {"qstat": qstat}, flavor="pbspro", qstat_json=True)
    refs = [element_ref(f"4400[{i}].pbs.example.org", tmp_path) for i in (1, 2)]
    refs += [element_ref(f"4500[{i}].pbs01", tmp_path) for i in range(4)]
    result = asyncio.run(pbs.poll(refs))
    assert result.ok, result.error
    got = {k: (v.state, v.raw_state, v.exit_code) for k, v in result.jobs.items()}
    assert got == {
        "4400[1].pbs.example.org": (JobState.RUNNING, "R", None),
        "4400[2].pbs.example.org": (JobState.PENDING, "Q", None),
        "4500[0].pbs01": (JobState.COMPLETED, "X", 0),
        "4500[1].pbs01": (JobState.FAILED, "X", 143),  # 271: killed by signal 15
        "4500[2].pbs01": (JobState.RUNNING, "R", None),
        "4500[3].pbs01": (JobState.PENDING, "Q", None),
    }
    assert result.jobs["4500[0].pbs01"].efficiency is not None
    (first, second) = calls(tmp_path, "qstat")
    assert first == "-t -f"
    assert second.startswith("-x -t -f -F json ") and "4500[0]" in second


def test_pbspro_json_subjobs_and_the_parent_in_state_b() -> None:
    jobs = {
        j.key: j for j in pp.parse_qstat((FIXTURES / "pbspro_qstat_x_t_f_array.json").read_text())
    }
    assert jobs["4500[]"].state == "B"
    assert pp.live_status(jobs["4500[]"]).state is JobState.RUNNING
    assert jobs["4500[3]"].get("array_index") == "3"
    assert pp.is_final(jobs["4500[1]"].state)


WRAPPER_RECORDS = """Job Id:\t{id}
\tJob_Name = hut.r1.arr.00aa
\tJob_Owner = alice@localhost
\tjob_state = {state}
\tqueue = debug
"""
NO_T = 'if [ "$1" = -t ]; then echo "Unknown option: t"; echo "Usage: qstat [-f]"; exit 2; fi'


def wrapper_qstat(tmp_path: Path, records: list[tuple[str, str]]) -> str:
    listing = tmp_path / "listing.txt"
    listing.write_text("\n".join(WRAPPER_RECORDS.format(id=i, state=s) for i, s in records))
    return f"{NO_T}\ncat {listing}"


def test_one_record_per_array_elements_take_its_state_until_their_exit_files(
    tmp_path: Path,
) -> None:
    qstat = wrapper_qstat(tmp_path, [("700", "Q"), ("701", "R"), ("702", "C")])
    pbs = backend(tmp_path, {"qstat": qstat, "qdel": "exit 0"}, flavor="torque")
    refs = [
        element_ref("700[0]", tmp_path, "0\n"),
        element_ref("700[1]", tmp_path),
        element_ref("700[2]", tmp_path, "5\n"),
    ]
    result = asyncio.run(pbs.poll(refs))
    assert result.ok, result.error
    got = {k: (v.state, v.exit_code) for k, v in result.jobs.items()}
    assert got == {
        "700[0]": (JobState.COMPLETED, 0),
        "700[1]": (JobState.PENDING, None),  # the array's state
        "700[2]": (JobState.FAILED, 5),
    }
    assert calls(tmp_path, "qstat") == ["-t -f", "-f"]
    assert not pbs.expand_arrays
    asyncio.run(pbs.poll(refs))
    assert calls(tmp_path, "qstat")[2:] == ["-f"], "learnt once: no -t here"
    # The array's own record finished, another element still runs: the array is live.
    (tmp_path / "listing.txt").write_text(
        "\n".join(WRAPPER_RECORDS.format(id=i, state=s) for i, s in [("700", "C"), ("701", "R")])
    )
    assert asyncio.run(pbs.poll(refs)).jobs["700[1]"].state is JobState.RUNNING


def test_cancel_is_qdel_per_element_and_a_whole_array_server_cancels_siblings_honestly(
    tmp_path: Path,
) -> None:
    qstat = wrapper_qstat(tmp_path, [("800", "C")])
    pbs = backend(tmp_path, {"qstat": qstat, "qdel": "exit 0"}, flavor="torque")
    refs = [
        element_ref("800[0]", tmp_path, "0\n"),  # finished before
        element_ref("800[1]", tmp_path, "143\n"),  # the one cancelled
        element_ref("800[2]", tmp_path, "143\n"),  # killed with the array
        element_ref("800[3]", tmp_path),  # never started
    ]
    assert asyncio.run(pbs.poll(refs)).ok  # learns: one record per array
    asyncio.run(pbs.cancel(["800[1]"]))
    assert calls(tmp_path, "qdel") == ["800[1]"]
    result = asyncio.run(pbs.poll(refs))
    got = {k: (v.state, v.exit_code) for k, v in result.jobs.items()}
    assert got == {
        "800[0]": (JobState.COMPLETED, 0),
        "800[1]": (JobState.CANCELLED, 143),
        "800[2]": (JobState.CANCELLED, 143),
        "800[3]": (JobState.CANCELLED, None),
    }
    for job_id in ("800[2]", "800[3]"):
        assert "whole array was deleted with element 800[1]" in (result.jobs[job_id].reason or "")


def test_on_a_server_with_elements_qdel_names_each_and_siblings_are_untouched(
    tmp_path: Path,
) -> None:
    pbs = backend(
        tmp_path,
        {"qstat": cat("torque_qstat_t_f_array.txt"), "qdel": "exit 0"},
        flavor="torque",
    )
    refs = [element_ref(f"1300[{i}].torque.example.org", tmp_path) for i in range(3)]
    asyncio.run(pbs.poll(refs))
    asyncio.run(pbs.cancel(["1300[1].torque.example.org", "1300[2].torque.example.org"]))
    assert calls(tmp_path, "qdel") == ["1300[1].torque.example.org 1300[2].torque.example.org"]
    assert pbs._array_deletes == {}
    assert asyncio.run(pbs.poll(refs)).jobs["1300[0].torque.example.org"].state is (
        JobState.COMPLETED
    )


# --- finding elements again ------------------------------------------------------------------


def test_find_elements_through_the_wrappers_tags_line_and_the_index(tmp_path: Path) -> None:
    qsub = 'echo "1300[].torque.example.org"'
    pbs = backend(tmp_path, {"qsub": qsub, "qmgr": "exit 127", "qstat": "exit 0"}, flavor="torque")
    jobs = tuple(spec(pbs, tmp_path, i) for i in range(3))
    asyncio.run(pbs.submit_arrays([ArrayGroup(jobs)]))
    found = asyncio.run(pbs.find([j.tag for j in jobs] + ["hut.r1.gone.1"]))
    assert found == {j.tag: f"1300[{i}].torque.example.org" for i, j in enumerate(jobs)}


@pytest.mark.parametrize(
    ("listing", "array_id"),
    [
        ("torque_qstat_t_f_array.txt", "1300[].torque.example.org"),
        ("pbspro_qstat_x_t_f_array.txt", "4400[].pbs.example.org"),
    ],
)
def test_find_an_array_by_its_name_when_its_index_entry_is_missing(
    tmp_path: Path, listing: str, array_id: str
) -> None:
    records = pp.parse_qstat_f((FIXTURES / listing).read_text())
    tag = "hut.r1.arr.0123456789abcdef"
    assert pa.arrays_by_name(records, [tag]) == {tag: array_id}
    members = {"hut.r1.t2.1": [(tag, 2)]}
    found = pa.with_elements(["hut.r1.t2.1"], members, {tag: array_id})
    assert found == {"hut.r1.t2.1": array_id.replace("[]", "[2]")}


def test_find_on_the_wrappers_takes_the_lowest_id_named_with_the_array() -> None:
    text = "".join(
        WRAPPER_RECORDS.format(id=i, state="C") + "\n" for i in ("37245", "37244", "37247")
    )
    records = pp.parse_qstat_f(text)
    assert pa.arrays_by_name(records, ["hut.r1.arr.00aa"]) == {"hut.r1.arr.00aa": "37244"}
