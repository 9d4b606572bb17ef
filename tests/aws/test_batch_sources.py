"""A run from a git source on AWS Batch (moto): the commit is resolved on this machine, the
SubmitJob request carries the clone step, and its command, run by real bash with the
request's environment, checks out that exact commit after the branch has moved on."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scripthut.backends import batch
from scripthut.backends import batch_arrays as ba
from scripthut.backends.batch_setup import batch_backend
from scripthut.config import BatchBackendConfig, Config
from scripthut.engine.create import record_run
from scripthut.engine.jobs import RunContext
from scripthut.sources import Sources
from scripthut.store import Store
from scripthut.transport import LocalTransport
from tests.aws import batch_rig as rig
from tests.aws.moto_rig import MotoServer
from tests.test_task_clone import Repo, git
from tests.test_task_clone import repo as repo  # the bare repository fixture

pytestmark = pytest.mark.aws
FLOW = f"""{{"title": "from git", "tasks": [
  {{"id": "show", "command": "cat data.txt; git rev-parse HEAD; echo sha=$SCRIPTHUT_GIT_SHA",
   "partition": "{rig.QUEUE}"}},
  {{"id": "sub", "command": "pwd", "working_dir": "sub", "partition": "{rig.QUEUE}"}}]}}"""


def config(tmp_path: Path, repo: Repo) -> Config:
    return Config.model_validate(
        {
            "backends": [
                {
                    "name": "aws",
                    "type": "batch",
                    "aws": {"region": rig.REGION, "job_queue": rig.QUEUE},
                    "job_definition": rig.DEFINITION,
                    "clone_dir": str(tmp_path / "container" / "src"),
                }
            ],
            "sources": [{"name": "demo", "type": "git", "url": str(repo.bare), "backend": "aws"}],
            "settings": {"data_dir": str(tmp_path / "data")},
        }
    )


def submitted(backend: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    backend._batch().meta.events.register(
        "provide-client-params.batch.SubmitJob", lambda params, **_: seen.append(dict(params))
    )
    return seen


def test_a_batch_job_clones_the_run_commit_at_start(
    moto: MotoServer, tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.make_queues()
    monkeypatch.setattr(batch, "CONTAINER_DIR", str(tmp_path / "container" / "tmp"))
    (repo.work / ".hut" / "workflows" / "flow.json").write_text(FLOW)
    first = repo.commit("first")
    conf = config(tmp_path, repo)
    shell = LocalTransport()
    workflow, provenance, _ = asyncio.run(
        Sources(conf, lambda _name: shell).workflow("demo", ".hut/workflows/flow.json")
    )
    root = str(tmp_path / "container" / "src" / first)
    assert provenance.root == root

    store = Store(tmp_path / "hut.db")
    new = record_run(
        store,
        conf,
        workflow,
        backend="aws",
        source="demo:.hut/workflows/flow.json",
        base_dir=provenance.root,
        provenance=provenance.document(),
    )
    entry = conf.backend("aws")
    assert isinstance(entry, BatchBackendConfig)
    backend = batch_backend(entry)
    sent = submitted(backend)
    context = RunContext.for_run(conf, backend, store.get_run(new.run.id))
    jobs = [context.build(task, seq, 1) for seq, task in enumerate(workflow.tasks)]
    outcomes = asyncio.run(backend.submit([job.spec for job in jobs]))
    assert all(outcome.job_id for outcome in outcomes), outcomes

    moved = repo.commit("second")  # the branch moves on before the jobs start
    assert moved != first
    by_task = {request["tags"]["scripthut:task"]: request for request in sent}
    scripts = {job.spec.task_id: job.spec.script for job in jobs}
    outputs = {}
    for task, request in by_task.items():
        assert f"__hut_git_sha='{first}'" in scripts[task]
        assert "__hut_git_clone\n" in scripts[task]
        # The clone step makes the script longer than ECS's overrides allow as `bash -c`:
        # it travels compressed, run by the bootstrap (test_batch_sizes.py).
        overrides = request["containerOverrides"]
        assert ba.overrides_length(overrides) <= ba.OVERRIDES_BUDGET
        command = overrides["command"]
        environment = {item["name"]: item["value"] for item in overrides["environment"]}
        container_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **environment}
        done = subprocess.run(command, env=container_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs[task] = done.stdout
    assert outputs["show"] == f"first\n{first}\nsha={first}\n"
    assert outputs["sub"] == f"{root}/sub\n"
    assert git("rev-parse", "HEAD", cwd=Path(root)) == first
    store.close()
