"""Sweeps on AWS Batch as array jobs, through the real Engine, against a real moto server.

moto runs no container (with Docker off every child SUCCEEDS at once); where a test needs
a child to fail or to look RUNNING, the backend is shown that state in its DescribeJobs
answer while moto holds the job, as in test_batch_engine.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from scripthut.backends import batch_arrays as ba
from scripthut.backends.batch_jobs import CANCEL_REASON
from scripthut.backends.batch_setup import batch_backend
from scripthut.config import parse_config
from scripthut.cost import Pricing, stored_run_cost
from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.aws import batch_rig as rig
from tests.aws.moto_rig import MotoServer
from tests.aws.test_batch_backend import _requests, _throttle
from tests.aws.test_batch_engine import WAIT_S, config, until, with_engine

pytestmark = pytest.mark.aws


@pytest.fixture
def queues(moto: MotoServer) -> MotoServer:
    rig.make_queues()
    return moto


def sweep(count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"p.{i}", "command": 'echo "$SEED"', "env": [{"set": {"SEED": f"seed-{i}"}}]}
        for i in range(count)
    ]


def parents(run_id: str) -> list[dict[str, Any]]:
    """The run's array jobs on the queue (moto also lists their children: left out)."""
    listed = rig.client("batch").list_jobs(
        jobQueue=rig.QUEUE, filters=[{"name": "JOB_NAME", "values": [f"hut_{run_id}_*"]}]
    )["jobSummaryList"]
    return [j for j in listed if ":" not in j["jobId"]]


def elements_by_task(store: Store, run_id: str, parent: str) -> dict[str, str]:
    attempts = store.attempts(run_id)
    assert len(attempts) == len({a.task_id for a in attempts}), "a task had two attempts"
    assert {str(a.job_id).split(":")[0] for a in attempts} == {parent}
    return {a.task_id: str(a.job_id) for a in attempts}


def test_a_sweep_is_one_array_whose_elements_end_their_tasks(
    queues: MotoServer, tmp_path: Path
) -> None:
    """Four tasks, one SubmitJob; element 2 FAILED (exit 3), the others SUCCEEDED: each task
    ends by its own element, the run fails, and every element is costed."""
    cfg = config(tmp_path)
    backend = rig.backend()
    sent = _requests(backend, "SubmitJob")

    def shown(parsed: dict[str, Any], **_: Any) -> None:
        for job in parsed.get("jobs") or []:
            if str(job["jobId"]).endswith(":2"):
                job["status"] = "FAILED"
                job["statusReason"] = "Essential container in task exited"
                job["container"] = {**job.get("container", {}), "exitCode": 3}

    backend._batch().meta.events.register("after-call.batch.DescribeJobs", shown)

    async def body(engine: Engine, store: Store) -> str:
        run = engine.submit(parse_document(sweep(4)), name="sweep")
        assert (await engine.wait(run.id, timeout=WAIT_S)).state is RunState.FAILED
        return run.id

    run_id = with_engine(cfg, backend, body)
    [args] = sent
    assert args["arrayProperties"] == {"size": 4}
    assert "seed-" not in str(args)  # values travel compressed in the bundle, never in code
    store = Store.in_data_dir(cfg.data_dir)
    [parent] = parents(run_id)
    assert args["jobName"] == parent["jobName"]
    ids = elements_by_task(store, run_id, parent["jobId"])
    assert ids == {f"p.{i}": f"{parent['jobId']}:{i}" for i in range(4)}
    tasks = {t.task_id: t for t in store.tasks(run_id)}
    assert {t: tasks[t].state for t in tasks} == {
        "p.0": TaskState.COMPLETED,
        "p.1": TaskState.COMPLETED,
        "p.2": TaskState.FAILED,
        "p.3": TaskState.COMPLETED,
    }
    assert tasks["p.2"].exit_code == 3
    assert "Essential container in task exited" in (tasks["p.2"].reason or "")
    cost = stored_run_cost(store, cfg, Pricing.load(cfg), run_id)
    assert (cost.costed, cost.tasks) == (4, 4)
    store.close()


def test_one_element_is_cancelled_the_others_run_on(queues: MotoServer, tmp_path: Path) -> None:
    """Every element RUNNING; one is cancelled: TerminateJob on that child only."""
    cfg = config(tmp_path)
    backend = rig.backend()
    terminated = _requests(backend, "TerminateJob")
    held: set[str] = {"all"}
    stopped: set[str] = set()

    def shown(parsed: dict[str, Any], **_: Any) -> None:
        for job in parsed.get("jobs") or []:
            if job["jobId"] in stopped:
                job["status"], job["statusReason"] = "FAILED", CANCEL_REASON
            elif held:
                job["status"] = "RUNNING"
                job.setdefault("startedAt", int(time.time() * 1000))

    backend._batch().meta.events.register("after-call.batch.DescribeJobs", shown)

    async def body(engine: Engine, store: Store) -> str:
        run = engine.submit(parse_document(sweep(3)), name="cancel-one")
        await until(lambda: {t.state for t in store.tasks(run.id)} == {TaskState.RUNNING})
        victim = str(store.task(run.id, "p.1").job_id)
        await engine.cancel_job("aws", victim)
        stopped.add(victim)  # as Batch ends a terminated child
        held.clear()  # the others go on to SUCCEEDED
        assert (await engine.wait(run.id, timeout=WAIT_S)).state.is_final
        return run.id

    run_id = with_engine(cfg, backend, body)
    store = Store.in_data_dir(cfg.data_dir)
    [parent] = parents(run_id)
    ids = elements_by_task(store, run_id, parent["jobId"])
    assert terminated == [{"jobId": ids["p.1"], "reason": CANCEL_REASON}]
    assert backend.calls.get("CancelJob", 0) == 0
    states = {t.task_id: t.state for t in store.tasks(run_id)}
    assert states == {
        "p.0": TaskState.COMPLETED,
        "p.1": TaskState.CANCELLED,
        "p.2": TaskState.COMPLETED,
    }
    store.close()


def test_a_restart_mid_submission_finds_the_array_and_submits_nothing_again(
    queues: MotoServer, tmp_path: Path
) -> None:
    """The array is accepted but its answer is lost; the engine stops with three intents.
    The next engine finds the array by its name, maps each intent to its element from the
    array's bundle and submits nothing: exactly one Batch job per attempt."""
    cfg = config(tmp_path)
    first = rig.backend()
    lost: list[str] = []

    def submitted(parsed: dict[str, Any], **_: Any) -> None:
        lost.append(str(parsed["jobId"]))
        raise EndpointConnectionError(endpoint_url=queues.url)

    first._batch().meta.events.register("after-call.batch.SubmitJob", submitted)

    async def before(engine: Engine, store: Store) -> str:
        run = engine.submit(parse_document(sweep(3)), name="restart")
        await until(lambda: bool(lost))
        return run.id

    run_id = with_engine(cfg, first, before)
    store = Store.in_data_dir(cfg.data_dir)
    assert {a.state for a in store.attempts(run_id)} == {"intent"}
    [parent] = parents(run_id)
    assert parent["jobId"] == lost[0]
    store.close()

    async def after(engine: Engine, store: Store) -> RunState:
        return (await engine.wait(run_id, timeout=WAIT_S)).state

    second = rig.backend()
    assert with_engine(cfg, second, after) is RunState.COMPLETED
    assert second.calls.get("SubmitJob", 0) == 0 and second.calls.get("ListJobs", 0) >= 1
    store = Store.in_data_dir(cfg.data_dir)
    ids = elements_by_task(store, run_id, lost[0])
    assert ids == {f"p.{i}": f"{lost[0]}:{i}" for i in range(3)}
    assert {t.state for t in store.tasks(run_id)} == {TaskState.COMPLETED}
    assert len(parents(run_id)) == 1
    store.close()


def test_arrays_false_submits_one_plain_job_per_task(queues: MotoServer, tmp_path: Path) -> None:
    entry = {
        "name": "aws",
        "type": "batch",
        "aws": {"region": rig.REGION, "job_queue": rig.QUEUE},
        "job_definition": rig.DEFINITION,
        "arrays": False,
    }
    cfg = parse_config(
        {"backends": [entry], "settings": {"data_dir": str(tmp_path / "data"), "poll_interval": 1}}
    )
    backend = batch_backend(cfg.backend("aws"))  # type: ignore[arg-type]
    assert not backend.arrays_enabled()
    sent = _requests(backend, "SubmitJob")

    async def body(engine: Engine, store: Store) -> str:
        run = engine.submit(parse_document(sweep(3)), name="plain")
        assert (await engine.wait(run.id, timeout=WAIT_S)).state is RunState.COMPLETED
        return run.id

    run_id = with_engine(cfg, backend, body)
    assert len(sent) == 3 and not any("arrayProperties" in a for a in sent)
    assert not any(ba.is_array_name(a["jobName"]) for a in sent)
    store = Store.in_data_dir(cfg.data_dir)
    assert not any(":" in str(a.job_id) for a in store.attempts(run_id))
    store.close()


def test_a_throttled_array_submission_fails_no_task(queues: MotoServer, tmp_path: Path) -> None:
    """The array's SubmitJob is throttled past botocore's retries: unknown, not failed; the
    engine looks for it, finds none, submits it again: one array, every task completed."""
    cfg = config(tmp_path)
    backend = rig.backend()
    submits = _throttle(backend._batch(), "SubmitJob", times=4)  # botocore's 1 + 3 retries

    async def body(engine: Engine, store: Store) -> str:
        run = engine.submit(parse_document(sweep(3)), name="throttled")
        assert (await engine.wait(run.id, timeout=WAIT_S)).state is RunState.COMPLETED
        return run.id

    run_id = with_engine(cfg, backend, body)
    assert submits[0] == 4 and backend.calls["SubmitJob"] == 2
    store = Store.in_data_dir(cfg.data_dir)
    [parent] = parents(run_id)
    assert elements_by_task(store, run_id, parent["jobId"]) == {
        f"p.{i}": f"{parent['jobId']}:{i}" for i in range(3)
    }
    store.close()
