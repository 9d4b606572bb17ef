"""Job arrays without a scheduler: grouping, chunking, the wrapper (run by a real bash),
the submission script writing the elements' bundle, site limits and finding elements again.

`bundle_texts`, `write_submission` and `run_element` serve the Grid Engine and PBS tests too."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from scripthut.backends import slurm_arrays as sa
from scripthut.backends.arrays import (
    BUNDLE_SUFFIX,
    ArrayFiles,
    array_tag,
    bundled_submission,
    group_jobs,
    split_group,
    tags_of_wrapper,
    wrapper_body,
)
from scripthut.backends.base import ArrayGroup, JobPaths, JobSpec, SubmitOutcome
from scripthut.backends.local import LocalBackend
from scripthut.backends.remote import Submission, parse_sections, submit_replies, submit_script
from scripthut.engine.engine import Engine
from scripthut.states import RunState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from scripthut.workflow.script import shell_quote
from tests.helpers import local_config

HOSTILE = 'it\'s "odd" $(touch PWNED) `id` ; x | y\n&& z é'
MARKER = "@@hut-test"


def bundle_texts(count: int) -> list[str]:
    """Element scripts with hostile and non-ASCII text; element 1 is long (3,000 lines);
    element `i` prints `out <i> ...` and exits `i + 4`."""
    texts = [
        f"#!/bin/bash\necho out {i} é {shell_quote(HOSTILE)}; exit {i + 4}\n" for i in range(count)
    ]
    texts[1] = "#!/bin/bash\n" + "# é long\n" * 3000 + "echo out 1; exit 5\n"
    return texts


def write_submission(item: Submission, tmp_path: Path) -> None:
    """Run the generated submission script for `item`, `cat` standing for the submit command:
    the folders, the wrapper and the bundle are written as for the real one."""
    text = submit_script(
        [item], command=("cat",), index_dir=str(tmp_path / "idx"), marker=MARKER, transient=()
    )
    subprocess.run(["bash", "-c", text], cwd=tmp_path, capture_output=True, check=True)


def run_element(wrapper: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The wrapper run by bash as one element, with only the array variables of `env`."""
    clean = {k: v for k, v in os.environ.items() if "ARRAY" not in k and "TASK_ID" not in k}
    return subprocess.run(
        ["bash", wrapper], env={**clean, **env}, cwd=cwd, capture_output=True, text=True
    )


def write_bundle(jobs: Sequence[JobSpec], path: Path) -> str:
    """The elements' scripts as the one file a submission writes; its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(job.script for job in jobs).encode())
    return str(path)


def spec(
    index: int, run: str = "r1", *, cpus: int = 1, base: Path | None = None, **extra: object
) -> JobSpec:
    folder = f"{base}/{HOSTILE}" if base else "/logs"
    paths = JobPaths(
        stdout=f"{folder}/t{index}.out",
        stderr=f"{folder}/t{index}.err",
        exit_code=f"{folder}/t{index}.exit",
        script=f"{folder}/t{index}.sh",
    )
    job = JobSpec(
        tag=f"hut.{run}.{index}.1",
        run_id=run,
        task_id=f"t{index}",
        attempt=1,
        name=f"t{index}",
        script="",
        paths=paths,
        working_dir="~",
        cpus=cpus,
    )
    return replace(job, **extra)  # type: ignore[arg-type]


def test_tasks_group_by_run_and_every_resource_in_batch_order() -> None:
    jobs = [
        spec(0),
        spec(1, cpus=2),
        spec(2),
        spec(3, run="r2"),
        spec(4),
        spec(5, memory_mb=10),
        spec(6, run="r2"),
        spec(7, gres="gpu:1"),
        spec(8, partition="long"),
        spec(9, time_limit_s=5),
        spec(10, image="x"),
    ]
    plain, groups = group_jobs(jobs)
    assert [[j.task_id for j in g] for g in groups] == [["t0", "t2", "t4"], ["t3", "t6"]]
    assert [j.task_id for j in plain] == ["t1", "t5", "t7", "t8", "t9", "t10"]


def test_small_groups_stay_plain() -> None:
    plain, groups = group_jobs([spec(0), spec(1), spec(2)], minimum=4)
    assert groups == [] and len(plain) == 3
    plain, groups = group_jobs([spec(0)], minimum=1)  # never an array of one
    assert groups == [] and len(plain) == 1


def test_a_group_is_chunked_evenly_under_the_limit() -> None:
    group = ArrayGroup(tuple(spec(i) for i in range(20)), throttle=4)
    chunks = split_group(group, 7)
    assert [len(c) for c in chunks] == [7, 7, 6]
    assert all(c.throttle == 4 for c in chunks)
    assert [j for c in chunks for j in c.jobs] == list(group.jobs)
    assert split_group(group, 20) == [group]


def test_the_array_tag_is_a_hut_tag_stable_for_the_same_elements() -> None:
    jobs = [spec(i) for i in range(3)]
    tag = array_tag(jobs)
    assert tag.startswith("hut.r1.arr.") and tag == array_tag(list(jobs))
    assert tag != array_tag(jobs[:2])


def test_the_throttle_option() -> None:
    assert sa.array_option(10, 3) == "0-9%3"
    assert sa.array_option(10, 10) == "0-9"
    assert sa.array_option(10, None) == "0-9"


def test_the_wrapper_runs_its_own_element_with_its_own_logs(tmp_path: Path) -> None:
    jobs = [
        replace(
            spec(i, base=tmp_path),
            script=f"#!/bin/bash\necho out {i} $X; echo err {i} >&2; exit {i + 4}\n",
        )
        for i in range(3)
    ]
    folder = tmp_path / HOSTILE
    folder.mkdir()
    bundle = write_bundle(jobs, tmp_path / f"a{BUNDLE_SUFFIX}")
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(
        "#!/bin/bash\n" + wrapper_body(jobs, index_expr="${SLURM_ARRAY_TASK_ID-}", bundle=bundle)
    )
    for index in (2, 0):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(index), "X": "x"}
        done = subprocess.run(
            ["bash", "-c", 'umask 022; exec bash "$0"', str(wrapper)], env=env, check=False
        )
        assert done.returncode == index + 4
    assert Path(jobs[0].paths.stdout).read_text() == "out 0 x\n"
    assert Path(jobs[2].paths.stderr).read_text() == "err 2\n"
    assert not Path(jobs[1].paths.stdout).exists()
    for log in (jobs[0].paths.stdout, jobs[0].paths.stderr):
        assert stat.S_IMODE(os.stat(log).st_mode) == 0o600  # private, whatever the umask
    assert not (tmp_path / "PWNED").exists()
    for bad in ("3", "-1", "x", ""):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": bad}
        done = subprocess.run(["bash", str(wrapper)], env=env, capture_output=True, check=False)
        assert done.returncode == 2 and b"no element" in done.stderr
    first = wrapper.read_text().splitlines()[1]
    assert tags_of_wrapper(first) == [j.tag for j in jobs]


def test_a_bundled_element_writes_its_own_script_from_the_one_file_then_runs_it(
    tmp_path: Path,
) -> None:
    texts = bundle_texts(3)
    jobs = [replace(spec(i, base=tmp_path), script=texts[i]) for i in range(3)]
    files = ArrayFiles(array_tag(jobs), str(tmp_path / "arrays"))
    body = wrapper_body(jobs, index_expr="${I-}", bundle=files.bundle)
    item = bundled_submission(files, "#!/bin/bash\n" + body, jobs)
    assert item.dirs == tuple(sorted({files.folder, str(tmp_path / HOSTILE)}))
    write_submission(item, tmp_path)
    bundle = Path(files.bundle)
    assert bundle.read_bytes() == "".join(texts).encode()
    assert stat.S_IMODE(os.stat(bundle).st_mode) == 0o600
    assert not any(Path(j.paths.script).exists() for j in jobs), "written when each starts"
    wrapper = Path(files.wrapper)
    for index in (2, 1, 0):
        done = run_element(str(wrapper), {"I": str(index)}, tmp_path)
        assert done.returncode == index + 4
        assert Path(jobs[index].paths.script).read_bytes() == texts[index].encode()
        assert stat.S_IMODE(os.stat(jobs[index].paths.script).st_mode) == 0o700
    assert Path(jobs[0].paths.stdout).read_text() == f"out 0 é {HOSTILE}\n"
    assert Path(jobs[1].paths.stdout).read_text() == "out 1\n"
    assert not (tmp_path / "PWNED").exists()
    bundle.write_bytes(bundle.read_bytes()[:-3])  # cut short: the last element cannot run
    Path(jobs[2].paths.script).unlink()
    before = Path(jobs[2].paths.stdout).read_text()
    done = run_element(str(wrapper), {"I": "2"}, tmp_path)
    assert done.returncode == 2
    assert "cannot write this element's script" in Path(jobs[2].paths.stderr).read_text()
    assert Path(jobs[2].paths.stdout).read_text() == before, "nothing of it ran"


def test_the_submission_writes_the_bundle_privately_then_submits_once(tmp_path: Path) -> None:
    jobs = [replace(spec(i, base=tmp_path), script=f"#!/bin/bash\necho {i}\n") for i in range(2)]
    files = ArrayFiles("hut.r1.arr.x", str(tmp_path / "arrays"))
    wrapper = "#!/bin/bash\n" + wrapper_body(jobs, index_expr="$I", bundle=files.bundle)
    item = bundled_submission(files, wrapper, jobs)
    counter = tmp_path / "calls"
    command = ("bash", "-c", f"cat >> {counter}; echo 77")
    text = submit_script(
        [item, item],
        command=command,
        index_dir=str(tmp_path / "idx"),
        marker=MARKER,
        transient=(),
    )
    out = subprocess.run(["bash", "-c", text], capture_output=True, text=True, check=True)
    replies = submit_replies(parse_sections(out.stdout, MARKER), 2)
    assert [(r.kind, r.text.strip()) for r in replies if r] == [("rc", "77"), ("known", "77")]
    assert counter.read_text().count("__hut_scripts=") == 1, "submitted once"
    assert Path(files.bundle).read_text() == "#!/bin/bash\necho 0\n#!/bin/bash\necho 1\n"
    assert stat.S_IMODE(os.stat(files.bundle).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(files.log).st_mode) == 0o600
    assert not any(Path(j.paths.script).exists() for j in jobs), "written when each starts"
    assert (tmp_path / "idx" / "hut.r1.arr.x").read_text() == "77\n"


def test_element_scripts_share_their_common_text_and_are_written_byte_for_byte(
    tmp_path: Path,
) -> None:
    common = "".join(f"# a line every element has, long enough to share {n}\n" for n in range(30))
    odd = [
        "",
        "no newline at the end",
        f"{HOSTILE}\n",
        "'\n'\"\n$(touch PWNED)\r\n\\\n",
        "\x1c\x0b\x0c\u2028 lines that splitlines cuts\n",
        f"{common}'\"${{__hut_p[0]}}\"'\n{common}",
    ]
    texts = [f"#!/bin/bash\n{common}echo {i} {odd[i % len(odd)]}\n{common}" for i in range(30)]
    texts += odd
    jobs = [replace(spec(i, base=tmp_path), script=text) for i, text in enumerate(texts)]
    files = ArrayFiles("hut.r1.arr.y", str(tmp_path / "arrays"))
    wrapper = "#!/bin/bash\n" + wrapper_body(jobs, index_expr="$I", bundle=files.bundle)
    item = bundled_submission(files, wrapper, jobs)
    text = submit_script(
        [item], command=("cat",), index_dir=str(tmp_path / "idx"), marker=MARKER, transient=()
    )
    line = "long enough to share 7"
    assert sum(t.count(line) for t in texts) >= 60
    assert text.count(line) <= 10, "the shared lines are sent once, not once per element"
    subprocess.run(["bash", "-c", text], cwd=tmp_path, capture_output=True, check=True)
    assert Path(files.bundle).read_bytes() == "".join(texts).encode()
    assert not (tmp_path / "PWNED").exists()


def test_site_limits_are_read_from_the_config_and_associations() -> None:
    marker = "@@m"
    config = "Configuration data as of x\nMaxArraySize            = 501\nMaxJobCount = 9000\n"
    text = f"{marker} config 0\n{config}\n{marker} assoc 0\n\n200\n{marker} end\n"
    limits = sa.read_limits(parse_sections(text, marker))
    assert limits == sa.SiteLimits(501, 9000, 200)
    assert limits.largest_array(None) == 200
    assert limits.concurrency(10_000) == 200
    assert sa.SiteLimits(1001, 10_000, None).concurrency(10_000) == 9000
    assert sa.SiteLimits(1001, 10_000, None).concurrency(50) == 50
    assert sa.SiteLimits(1001, None, None).concurrency(10_000) == 10_000
    assert sa.SiteLimits(501).largest_array(40) == 40
    assert sa.SiteLimits().largest_array(None) == sa.DEFAULT_MAX_ARRAY_SIZE
    failed = f"{marker} config 1\nUnable to contact slurm controller\n{marker} end\n"
    assert sa.read_limits(parse_sections(failed, marker)) is None
    no_acct = f"{marker} config 0\n{config}\n{marker} assoc 1\nno dbd\n{marker} end\n"
    assert sa.read_limits(parse_sections(no_acct, marker)) == sa.SiteLimits(501, 9000, None)


def test_elements_are_found_again_through_their_array(tmp_path: Path) -> None:
    arrays = tmp_path / ".arrays"
    arrays.mkdir()
    jobs = [spec(i) for i in range(3)]
    first = array_tag(jobs)
    body = wrapper_body(jobs, index_expr="$I", bundle=f"{first}{BUNDLE_SUFFIX}")
    (arrays / f"{first}.sh").write_text("#!/bin/bash\n#SBATCH --x\n" + body)
    again = array_tag(jobs[1:])  # t1 and t2 were submitted again in another array
    body = wrapper_body(jobs[1:], index_expr="$I", bundle=f"{again}{BUNDLE_SUFFIX}")
    (arrays / f"{again}.sh").write_text("#!/bin/bash\n" + body)
    # A bundle holds the tasks' own text, which may look like a tags line: never read.
    forged = wrapper_body(jobs[:1], index_expr="$I", bundle="x")
    (arrays / f"hut.r1.arr.forged{BUNDLE_SUFFIX}").write_text(forged)
    marker = "@@m"
    text = (
        f"__hut_m={marker}\n"
        + sa.members_script([j.tag for j in jobs] + ["hut.other.1.1"], str(tmp_path))
        + 'printf "%s arrays\\n%s\\n" "$__hut_m" "$__hut_arrays"\n'
    )
    out = subprocess.run(["bash", "-c", text], capture_output=True, text=True, check=True).stdout
    sections = parse_sections(out, marker)
    members = sa.read_members(sections)
    assert sorted(members["hut.r1.1.1"]) == sorted([(first, 1), (again, 0)])
    assert set(sections[-1].body.split()) == {first, again}
    found = sa.found_tags([j.tag for j in jobs], members, {again: "55"})
    assert found == {"hut.r1.1.1": "55_0", "hut.r1.2.1": "55_1"}
    found = sa.found_tags([j.tag for j in jobs], members, {first: "9", again: "55"})
    assert found["hut.r1.0.1"] == "9_0" and len(found) == 3
    assert sa.base_job_id("12_[3-9%2]") == "12" and sa.base_job_id("12") == "12"


def test_round_trips_pack_arrays_by_elements() -> None:
    groups = [ArrayGroup(tuple(spec(i) for i in range(n))) for n in (5, 5, 12, 1)]
    trips = sa.packed(groups, 10)
    assert [[len(g) for g in trip] for trip in trips] == [[5, 5], [12], [1]]


# --- the engine's part: grouping picks, throttles, plain leftovers ------------------------------


class ArrayLocal(LocalBackend):
    """The real local backend, taking arrays through the interface's default (plain jobs)."""

    groups: list[ArrayGroup]

    def arrays_enabled(self) -> bool:
        return True

    async def submit_arrays(self, groups: Sequence[ArrayGroup]) -> list[list[SubmitOutcome]]:
        self.groups.extend(groups)
        return await super().submit_arrays(groups)


def test_the_engine_groups_ready_tasks_of_a_run_by_resources(tmp_path: Path) -> None:
    config = local_config(tmp_path / "data", max_concurrent=8)
    backend = ArrayLocal("local", max_concurrent=8, log_dir=tmp_path / "logs", cpus=8)
    backend.groups = []
    doc = [
        *({"id": f"a{i}", "command": "echo a"} for i in range(4)),
        *({"id": f"m{i}", "command": "echo m", "memory": "64M"} for i in range(2)),
        {"id": "solo", "command": "echo s", "cpus": 2},
    ]

    async def main() -> dict[str, Any]:
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store, min_poll_interval=0.2)
        engine.registry.add(backend)
        await engine.start()
        try:
            record = engine.submit(parse_document(doc), max_concurrent=5)
            final = await engine.wait(record.id, timeout=60)
            return {"state": final.state, "tasks": {t.task_id: t for t in store.tasks(record.id)}}
        finally:
            await engine.stop()
            store.close()

    got = asyncio.run(main())
    assert got["state"] == RunState.COMPLETED
    first = backend.groups[0]
    # Five picks (the run's limit): a0-a3 share an array, m0 is alone so goes plain.
    assert [j.task_id for j in first.jobs] == ["a0", "a1", "a2", "a3"]
    assert first.throttle == 5  # the smaller of the run's 5 and the backend's 8
    grouped = {j.task_id for g in backend.groups for j in g.jobs}
    assert "solo" not in grouped
    assert all(len(g) >= 2 for g in backend.groups)
    assert all(t.exit_code == 0 for t in got["tasks"].values())


def test_arrays_off_never_groups(tmp_path: Path) -> None:
    backend = ArrayLocal("local", max_concurrent=8, log_dir=tmp_path / "logs", cpus=8)
    backend.groups = []
    backend.arrays_enabled = lambda: False  # type: ignore[method-assign]
    config = local_config(tmp_path / "data", max_concurrent=8)
    doc = [{"id": f"a{i}", "command": "true"} for i in range(4)]

    async def main() -> RunState:
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store, min_poll_interval=0.2)
        engine.registry.add(backend)
        await engine.start()
        try:
            record = engine.submit(parse_document(doc))
            return (await engine.wait(record.id, timeout=60)).state
        finally:
            await engine.stop()
            store.close()

    assert asyncio.run(main()) == RunState.COMPLETED
    assert backend.groups == []
