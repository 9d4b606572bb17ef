"""The PBS backend's generated scripts, run by bash with fake qsub/qstat/qdel in `bin_dir`.

The fakes print the fixtures of tests/fixtures/pbs and log how they were called, so these
tests prove the plumbing the rig cannot show: the PBS Pro dialect (`qstat -x`, `-F json`),
Torque's exit statuses, and a scheduler that fails.
"""

from __future__ import annotations

import asyncio
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from scripthut.backends.base import JobPaths, JobRef, JobSpec
from scripthut.backends.pbs import PBSBackend
from scripthut.backends.registry import create_backend
from scripthut.config import parse_config
from scripthut.errors import InvalidInput, ScriptHutError
from scripthut.states import JobState
from scripthut.transport import LocalTransport

FIXTURES = Path(__file__).parent / "fixtures" / "pbs"


def fake_bin(tmp_path: Path, commands: dict[str, str]) -> Path:
    """Executables that log their argv (one line per call) to <name>.calls and run `body`."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, body in commands.items():
        path = bindir / name
        path.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {tmp_path}/{name}.calls\n{body}\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bindir


def calls(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / f"{name}.calls"
    return path.read_text().splitlines() if path.exists() else []


def backend(tmp_path: Path, commands: dict[str, str], **options: object) -> PBSBackend:
    pbs = PBSBackend(
        "fake",
        transport=LocalTransport(),
        max_concurrent=10,
        log_dir=str(tmp_path / "logs"),
        bin_dir=str(fake_bin(tmp_path, commands)),
        **options,  # type: ignore[arg-type]
    )
    pbs.host.user = "alice"  # the fixtures' user; home stays this machine's
    pbs.host.home = str(tmp_path)
    return pbs


def ref(tmp_path: Path, job_id: str, exit_code: str | None = None) -> JobRef:
    exit_path = tmp_path / "exits" / f"{job_id}.exit"
    if exit_code is not None:
        exit_path.parent.mkdir(exist_ok=True)
        exit_path.write_text(exit_code)
    paths = JobPaths(str(tmp_path / "o"), str(tmp_path / "e"), str(exit_path), str(tmp_path / "s"))
    return JobRef(job_id=job_id, tag=f"hut.r.{job_id}.1", paths=paths)


def cat(name: str) -> str:
    return f"cat {FIXTURES / name}"


def test_torque_poll_is_one_qstat_and_reads_exit_files_of_finished_jobs(tmp_path: Path) -> None:
    pbs = backend(tmp_path, {"qstat": cat("torque6_qstat_f.txt")}, flavor="torque")
    refs = [
        ref(tmp_path, "1234.torque.example.org"),  # running
        ref(tmp_path, "1235.torque"),  # queued; qsub's id may be shorter than qstat's
        ref(tmp_path, "1230.torque.example.org"),  # C, exit_status 0
        ref(tmp_path, "1232.torque.example.org", "0\n"),  # C 271, but the exit file says 0
        ref(tmp_path, "1299.torque.example.org", "2\n"),  # purged: the exit file decides
        ref(tmp_path, "1298.torque.example.org"),  # purged, nothing: unknown for now
    ]
    result = asyncio.run(pbs.poll(refs))
    assert result.ok, result.error
    got = {k.split(".")[0]: (v.state, v.raw_state, v.exit_code) for k, v in result.jobs.items()}
    assert got == {
        "1234": (JobState.RUNNING, "R", None),
        "1235": (JobState.PENDING, "Q", None),
        "1230": (JobState.COMPLETED, "C", 0),
        "1232": (JobState.COMPLETED, "C", 0),
        "1299": (JobState.FAILED, "EXIT_FILE", 2),
        "1298": (JobState.UNKNOWN, "UNKNOWN", None),
    }
    assert calls(tmp_path, "qstat") == ["-t -f"]
    external = {s.job_id: s.raw_state for s in result.external or []}
    assert external == {"1236.torque.example.org": "H"}  # bob's 1240 filtered out


def test_pbspro_poll_asks_qstat_x_once_for_the_jobs_qstat_no_longer_lists(
    tmp_path: Path,
) -> None:
    history = cat("pbspro_qstat_xf.json")
    qstat = f'if [ "$1" = -x ]; then {history}; else {cat("pbspro_qstat_f.txt")}; fi'
    pbs = backend(tmp_path, {"qstat": qstat}, flavor="pbspro", qstat_json=True)
    refs = [
        ref(tmp_path, "4101.pbs01"),
        ref(tmp_path, "4090.pbs01"),
        ref(tmp_path, "4091.pbs01"),
        ref(tmp_path, "4092.pbs01", "3\n"),
    ]
    result = asyncio.run(pbs.poll(refs))
    assert result.ok, result.error
    got = {k: (v.state, v.raw_state) for k, v in result.jobs.items()}
    assert got == {
        "4101.pbs01": (JobState.RUNNING, "R"),
        "4090.pbs01": (JobState.COMPLETED, "F"),
        "4091.pbs01": (JobState.FAILED, "F"),
        "4092.pbs01": (JobState.FAILED, "F"),
    }
    assert result.jobs["4090.pbs01"].efficiency is not None
    assert calls(tmp_path, "qstat") == ["-t -f", "-x -t -f -F json 4090 4091 4092"]


def test_a_failed_qstat_is_unknown_and_a_failed_history_never_concludes(tmp_path: Path) -> None:
    down = "echo 'qstat: cannot connect to server pbs01 (errno=111)' >&2; exit 15"
    result = asyncio.run(backend(tmp_path, {"qstat": down}).poll([ref(tmp_path, "1.s")]))
    assert not result.ok and "cannot connect to server" in (result.error or "")
    assert result.jobs == {}
    qstat = f'if [ "$1" = -x ]; then exit 15; else {cat("pbspro_qstat_f.txt")}; fi'
    pbs = backend(tmp_path, {"qstat": qstat}, flavor="pbspro", qstat_json=False, missing_grace_s=0)
    result = asyncio.run(pbs.poll([ref(tmp_path, "4999.pbs01")]))
    assert result.ok
    assert result.jobs["4999.pbs01"].state is JobState.UNKNOWN


def test_a_job_that_finished_without_any_code_fails_after_the_grace(tmp_path: Path) -> None:
    pbs = backend(tmp_path, {"qstat": cat("wrapper_qstat_f.txt")}, flavor="torque", ended_grace_s=0)
    pbs.host.user = "hutuser"
    first = asyncio.run(pbs.poll([ref(tmp_path, "7674")]))
    status = first.jobs["7674"]
    assert (status.state, status.raw_state) == (JobState.FAILED, "C")
    assert "without an exit code" in (status.reason or "")
    patient = backend(tmp_path, {"qstat": cat("wrapper_qstat_f.txt"), "qdel": "true"})
    patient.host.user = "hutuser"
    waiting = asyncio.run(patient.poll([ref(tmp_path, "7674")]))
    assert waiting.jobs["7674"].state is JobState.UNKNOWN  # the file may show up late
    asyncio.run(patient.cancel(["7674"]))
    deleted = asyncio.run(patient.poll([ref(tmp_path, "7674")]))
    assert (deleted.jobs["7674"].state, deleted.jobs["7674"].raw_state) == (
        JobState.CANCELLED,
        "C",
    )
    later = asyncio.run(patient.poll([ref(tmp_path, "7674", "0\n")]))
    assert later.jobs["7674"].state is JobState.COMPLETED


def test_flavor_auto_learns_pbspro_and_json_from_the_version(tmp_path: Path) -> None:
    pbs = backend(
        tmp_path,
        {"qstat": "echo 'pbs_version = 2022.1.3'", "pbsnodes": "echo 'pbs_version = 2022.1.3'"},
    )
    asyncio.run(pbs.detect())
    assert (pbs.flavor, pbs.use_json) == ("pbspro", True)
    (tmp_path / "w").mkdir()
    wrappers = backend(tmp_path / "w", {"qstat": "echo 'Unknown option: version'; exit 2"})
    asyncio.run(wrappers.detect())
    assert (wrappers.flavor, wrappers.use_json) == ("torque", False)


def spec(tmp_path: Path, tag: str, **fields: object) -> JobSpec:
    base = tmp_path / "logs" / "r" / tag
    paths = JobPaths(f"{base}.out", f"{base}.err", f"{base}.exit", f"{base}.sh")
    return JobSpec(
        tag=tag,
        run_id="r",
        task_id="t",
        attempt=1,
        name="t",
        script="",
        paths=paths,
        working_dir="~",
        **fields,  # type: ignore[arg-type]
    )


def test_submit_gives_qsub_the_script_as_a_file_and_indexes_the_id(tmp_path: Path) -> None:
    # Like the wrappers: no script on stdin; print the id.
    qsub = (
        '[ -f "${@: -1}" ] || { echo "no script file"; exit 2; }\n'
        '[ -z "$(cat)" ] || { echo "stdin unsupported"; exit 2; }\n'
        'echo "$RANDOM$RANDOM.srv"'
    )
    pbs = backend(tmp_path, {"qsub": qsub}, flavor="torque", queue="batch")
    jobs = [spec(tmp_path, f"hut.r.{n}.1") for n in range(3)]
    jobs = [replace(j, script=pbs.render_script(j, "#!/bin/bash\necho hi\n")) for j in jobs]
    outcomes = asyncio.run(pbs.submit(jobs))
    assert all(o.job_id and o.job_id.endswith(".srv") for o in outcomes), outcomes
    argv = calls(tmp_path, "qsub")
    assert argv[0] == f"-o /dev/null -e /dev/null {jobs[0].paths.script}"
    script = Path(jobs[0].paths.script).read_text()
    assert "#PBS -N hut.r.0.1\n" in script and "#PBS -q batch\n" in script
    assert script.index("#PBS -l mem=4gb") < script.index("exec >>")
    again = asyncio.run(pbs.submit(jobs))  # indexed tags are never submitted twice
    assert [o.job_id for o in again] == [o.job_id for o in outcomes]
    assert len(calls(tmp_path, "qsub")) == 3
    found = asyncio.run(pbs.find([j.tag for j in jobs]))
    assert found == {j.tag: o.job_id for j, o in zip(jobs, outcomes, strict=True)}


def test_a_rejected_job_is_an_error_and_find_reads_job_names(tmp_path: Path) -> None:
    qsub = "echo 'qsub: Unknown queue MSG=requested queue not found' >&2; exit 170"
    qstat = cat("torque6_qstat_f.txt")
    pbs = backend(tmp_path, {"qsub": qsub, "qstat": qstat}, flavor="torque")
    job = spec(tmp_path, "hut.r.9.1")
    (outcome,) = asyncio.run(pbs.submit([job]))
    assert outcome.job_id is None and "Unknown queue" in (outcome.error or "")
    found = asyncio.run(pbs.find(["hut.20261119-100000-ab12.0.1", "hut.nowhere.1.1"]))
    assert found == {"hut.20261119-100000-ab12.0.1": "1234.torque.example.org"}


def test_render_refuses_what_a_pbs_line_cannot_carry(tmp_path: Path) -> None:
    pbs = backend(tmp_path, {}, flavor="pbspro", qstat_json=False)
    with pytest.raises(ScriptHutError, match=r"task 't'.*queue"):
        pbs.render_script(spec(tmp_path, "hut.r.1.1", partition="a b"), "echo\n")
    text = pbs.render_script(spec(tmp_path, "hut.r.1.1", cpus=3, gres="gpu"), "#!/bin/bash\nx\n")
    assert "#PBS -l select=1:ncpus=3:mem=4gb:ngpus=1" in text


def test_cancel_treats_finished_jobs_as_done(tmp_path: Path) -> None:
    qdel = "echo 'qdel: Unknown Job Id 5.srv' >&2; exit 153"
    pbs = backend(tmp_path, {"qdel": qdel})
    asyncio.run(pbs.cancel(["5.srv", "6.srv", "not an id"]))
    assert calls(tmp_path, "qdel") == ["5.srv 6.srv"]
    broken = backend(tmp_path, {"qdel": "echo 'qdel: Server down' >&2; exit 15"})
    with pytest.raises(ScriptHutError, match="Server down"):
        asyncio.run(broken.cancel(["5.srv"]))


def test_info_from_pbsnodes_and_qstat_q(tmp_path: Path) -> None:
    commands = {"pbsnodes": cat("pbspro_pbsnodes.txt"), "qstat": cat("pbspro_qstat_Q.txt")}
    info = asyncio.run(backend(tmp_path, commands, flavor="pbspro", qstat_json=False).info())
    assert info.reachable
    assert (info.cpus_idle, info.cpus_total, info.queue_depth) == (42, 144, 1)
    assert [p.name for p in info.partitions] == ["workq", "express"]


def test_config_builds_a_pbs_backend_and_refuses_what_qsub_cannot_take(tmp_path: Path) -> None:
    entry = {"name": "hpc", "type": "pbs", "transport": "local", "queue": "batch"}
    config = parse_config({"backends": [{**entry, "flavor": "pbspro", "bin_dir": "/opt/pbs/bin/"}]})
    pbs = create_backend(config, config.backend("hpc"))
    assert isinstance(pbs, PBSBackend)
    assert (pbs.flavor, pbs.queue, pbs.bin_dir) == ("pbspro", "batch", "/opt/pbs/bin")
    assert pbs.queue_for("gpu") == "batch"
    for bad, field in (
        ({"queue": "batch -W x"}, "queue"),
        ({"account": "a b"}, "account"),
        ({"flavor": "lsf"}, "flavor"),
        ({"bin_dir": "opt/pbs"}, "bin_dir"),
    ):
        with pytest.raises(InvalidInput) as caught:
            parse_config({"backends": [{**entry, **bad}]})
        assert field in caught.value.render()
