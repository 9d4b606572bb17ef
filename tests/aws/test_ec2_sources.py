"""A task of a run from git on EC2 (moto, the rig host as the instance, a `docker` stand-in):
the user data moto received clones the run's commit on the "instance" after the branch moved,
and runs the command in the clone; the clone step's statuses are named in the reason."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

from scripthut.backends.base import JobSpec
from scripthut.backends.ec2 import EC2Backend
from scripthut.env_rules import EnvRule
from scripthut.states import JobState
from scripthut.workflow.clone import EXIT_NO_GIT, TaskClone, clone_lines
from scripthut.workflow.env import resolve_env
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.script import render_task_script
from tests.aws.ec2_support import (
    Host,
    Tools,
    aws,
    host,
    moto_url,
    on_rig,
    rig,
    rig_host_key,
    set_console,
    ssm_standin,
    user_data,
)
from tests.aws.test_ec2_backend import RUN, drive, make_backend, ref, submit
from tests.slurm.conftest import SlurmRig

__all__ = ["aws", "host", "moto_url", "rig", "ssm_standin"]  # fixtures used by name
GIT = "GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t"


def commit(rig: SlurmRig, work: str, bare: str, data: str) -> str:
    """A commit pushed to the bare repository on the rig host, as the rig user."""
    w, b = shlex.quote(work), shlex.quote(bare)
    script = (
        f"cd {w} && printf '%s\\n' {shlex.quote(data)} > data.txt && git add -A && "
        f"{GIT} git commit -qm {shlex.quote(data)} && git push -q {b} HEAD:main && "
        "git rev-parse HEAD"
    )
    return on_rig(rig, script).strip()


def clone_job(
    backend: EC2Backend, index: int, clone: TaskClone, command: str, path: str | None = None
) -> JobSpec:
    """A job as the engine builds it for a run whose tasks clone `clone` (PATH set if given)."""
    task = TaskSpec(id=f"t{index}", command=command, name=f"t{index}", working_dir=clone.root)
    paths = backend.job_paths(RUN, task.id, 1)
    tag = f"hut.{RUN}.{index}.1"
    body = render_task_script(
        task,
        resolve_env(
            [("task", [EnvRule(set={"PATH": path})] if path else [])],
            {},
            {"SCRIPTHUT_GIT_SHA": clone.sha},
        ),
        exit_path=paths.exit_code,
        tag=tag,
        before_cd=clone_lines(clone),
    )
    spec = JobSpec(
        tag=tag,
        run_id=RUN,
        task_id=task.id,
        attempt=1,
        name=task.name,
        script="",
        paths=paths,
        working_dir=clone.root,
        time_limit_s=task.time_limit_s,
        partition=task.partition,
    )
    return replace(spec, script=backend.render_script(spec, body))


def test_an_instance_clones_the_run_commit_before_its_command(
    aws: str, rig: SlurmRig, host: Host, ssm_standin: Tools, tmp_path: Path, monkeypatch: Any
) -> None:
    set_console(monkeypatch, [rig_host_key(rig)])
    bare, work = f"{host.root}/demo.git", f"{host.root}/work"
    on_rig(rig, f"git init -q --bare -b main {bare} && git init -q -b main {work}")
    first = commit(rig, work, bare, "first")
    backend = make_backend(rig, host, tmp_path)
    clone = TaskClone(bare, "main", first, f"{host.root}/container/src")
    ok = clone_job(backend, 1, clone, 'cat data.txt; echo "sha=$SCRIPTHUT_GIT_SHA"; pwd')
    no_git = replace(clone, clone_dir=f"{host.root}/container/other")
    missing = clone_job(backend, 2, no_git, "echo never", path="/nowhere")

    async def body(backend: EC2Backend) -> dict[str, Any]:
        ids = await submit(backend, ok, missing)
        assert commit(rig, work, bare, "second") != first  # the branch moves on
        host.run_user_data(user_data(ids[0]))
        result = await backend.poll([ref(ok, ids[0])])
        host.run_user_data(user_data(ids[1]))
        result.jobs.update((await backend.poll([ref(missing, ids[1])])).jobs)
        return dict(result.jobs)

    jobs = drive(backend, body)
    done, failed = jobs.values()
    assert (done.state, done.exit_code) == (JobState.COMPLETED, 0), done.reason
    log = Path(ok.paths.stdout).read_text()
    assert f"first\nsha={first}\n{clone.root}\n" in log
    assert (failed.state, failed.exit_code) == (JobState.FAILED, EXIT_NO_GIT)
    assert failed.reason == "git is not installed in the task's image (see the log)"
    assert "git is not installed in this image" in Path(missing.paths.stdout).read_text()
