"""Runs on AWS Batch through the real Engine, against a real moto server.

moto runs no container: with Docker off a job SUCCEEDS at once; in Docker mode with a
state-manager transition it walks SUBMITTED..STARTING and ends FAILED. Where a test needs a
job to look RUNNING (moto never shows it), the backend is shown that state in its
DescribeJobs answer while moto holds the job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from botocore.exceptions import EndpointConnectionError

from scripthut.backends.batch import BatchBackend
from scripthut.backends.batch_jobs import CANCEL_REASON
from scripthut.backends.registry import BackendRegistry
from scripthut.config import Config, parse_config
from scripthut.cost import Pricing, stored_run_cost
from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.aws import batch_rig as rig
from tests.aws.moto_rig import MotoServer
from tests.aws.test_batch_backend import _throttle

pytestmark = pytest.mark.aws
T = TypeVar("T")
WAIT_S = 60.0


@pytest.fixture
def queues(moto: MotoServer) -> MotoServer:
    rig.make_queues()
    return moto


def config(tmp_path: Path) -> Config:
    return parse_config(
        {
            "backends": [
                {
                    "name": "aws",
                    "type": "batch",
                    "aws": {"region": rig.REGION, "job_queue": rig.QUEUE},
                    "job_definition": rig.DEFINITION,
                }
            ],
            "pricing": {"url": "http://127.0.0.1:9/x", "partitions": {rig.QUEUE: "c5.xlarge"}},
            "settings": {"data_dir": str(tmp_path / "data"), "poll_interval": 1},
        }
    )


def engine_on(cfg: Config, store: Store, backend: BatchBackend) -> Engine:
    registry = BackendRegistry(cfg)
    registry.add(backend)
    return Engine(cfg, store, registry=registry, min_poll_interval=0.2)


def with_engine(
    cfg: Config, backend: BatchBackend, body: Callable[[Engine, Store], Awaitable[T]]
) -> T:
    """`body(engine, store)` with a started engine on the config's data dir; stopped after."""

    async def main() -> T:
        store = Store.in_data_dir(cfg.data_dir)
        engine = engine_on(cfg, store, backend)
        await engine.start()
        try:
            return await body(engine, store)
        finally:
            await engine.stop()
            store.close()

    return asyncio.run(main())


def batch_jobs(run_id: str) -> list[dict[str, Any]]:
    """Every Batch job of the run, in any state (job names start `hut_<run>_`)."""
    listed = rig.client("batch").list_jobs(
        jobQueue=rig.QUEUE, filters=[{"name": "JOB_NAME", "values": [f"hut_{run_id}_*"]}]
    )
    return list(listed["jobSummaryList"])


def assert_one_job_per_attempt(store: Store, run_id: str, tasks: int) -> None:
    attempts = store.attempts(run_id)
    assert len(attempts) == tasks, "a task was submitted more than once"
    jobs = batch_jobs(run_id)
    assert sorted(j["jobId"] for j in jobs) == sorted(str(a.job_id) for a in attempts)


def show(backend: BatchBackend, status: str) -> Callable[..., None]:
    """Make DescribeJobs answers say `status` for every job (moto never shows RUNNING)."""

    def shown(parsed: dict[str, Any], **_: Any) -> None:
        for job in parsed.get("jobs") or []:
            job["status"] = status
            job.setdefault("startedAt", int(time.time() * 1000))

    backend._batch().meta.events.register("after-call.batch.DescribeJobs", shown)
    return shown


async def until(check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.1)


DAG = [
    {"id": "prep", "command": "echo prep"},
    {"id": "sim.1", "command": "echo one", "deps": ["prep"], "cpus": 2},
    {"id": "sim.2", "command": "echo two", "deps": ["prep"]},
]


def test_a_run_of_succeeded_jobs_ends_completed(queues: MotoServer, tmp_path: Path) -> None:
    cfg = config(tmp_path)

    async def body(engine: Engine, store: Store) -> str:
        run = engine.submit(parse_document(DAG), name="dag")
        assert (await engine.wait(run.id, timeout=WAIT_S)).state is RunState.COMPLETED
        return run.id

    run_id = with_engine(cfg, rig.backend(), body)
    store = Store.in_data_dir(cfg.data_dir)
    tasks = store.tasks(run_id)
    assert {t.task_id: t.state for t in tasks} == dict.fromkeys(
        ("prep", "sim.1", "sim.2"), TaskState.COMPLETED
    )
    attempts = store.attempts(run_id)
    assert {(a.raw_state, a.exit_code) for a in attempts} == {("SUCCEEDED", 0)}
    by_task = {a.task_id: a for a in attempts}
    assert by_task["prep"].ended_at is not None
    assert by_task["sim.1"].submitted_at >= by_task["prep"].ended_at - 1  # after its dependency
    described = rig.client("batch").describe_jobs(jobs=[str(a.job_id) for a in attempts])
    assert {j["status"] for j in described["jobs"]} == {"SUCCEEDED"}
    assert_one_job_per_attempt(store, run_id, 3)
    # The run's cost: every task priced by its queue's instance (c5.xlarge, 4 vCPUs).
    cost = stored_run_cost(store, cfg, Pricing.load(cfg), run_id)
    assert (cost.costed, cost.tasks) == (3, 3)
    assert {i.task: i.share for i in cost.items} == {"prep": 0.25, "sim.1": 0.5, "sim.2": 0.25}
    store.close()


def test_a_failed_job_fails_its_task_and_the_run(queues: MotoServer, tmp_path: Path) -> None:
    queues.batch_progression(0.3)  # every job walks the waiting states and ends FAILED
    cfg = config(tmp_path)

    async def body(engine: Engine, store: Store) -> str:
        run = engine.submit(parse_document(DAG), name="fails")
        assert (await engine.wait(run.id, timeout=WAIT_S)).state is RunState.FAILED
        return run.id

    run_id = with_engine(cfg, rig.backend(), body)
    store = Store.in_data_dir(cfg.data_dir)
    states = {t.task_id: t for t in store.tasks(run_id)}
    assert states["prep"].state is TaskState.FAILED and states["prep"].reason
    assert {states[t].state for t in ("sim.1", "sim.2")} == {TaskState.DEP_FAILED}
    [attempt] = store.attempts(run_id)
    assert attempt.raw_state == "FAILED"
    assert_one_job_per_attempt(store, run_id, 1)
    store.close()


def test_cancel_mid_run_cancels_waiting_and_running_jobs(
    queues: MotoServer, tmp_path: Path
) -> None:
    """One job is RUNNING (TerminateJob), one still waiting (CancelJob), one task pending."""
    queues.batch_progression(3)  # jobs wait in moto (SUBMITTED, PENDING...) until cancelled
    cfg = config(tmp_path)
    backend = rig.backend()
    flow = [
        {"id": "runs", "command": "sleep 600"},
        {"id": "waits", "command": "sleep 600", "partition": rig.OTHER_QUEUE},
        {"id": "later", "command": "true", "deps": ["runs"]},
    ]
    running_ids: set[str] = set()

    def shown(parsed: dict[str, Any], **_: Any) -> None:
        for job in parsed.get("jobs") or []:
            if job["jobId"] in running_ids and job["status"] not in ("SUCCEEDED", "FAILED"):
                job["status"] = "RUNNING"
                job.setdefault("startedAt", int(time.time() * 1000))

    backend._batch().meta.events.register("after-call.batch.DescribeJobs", shown)

    async def body(engine: Engine, store: Store) -> str:
        run = engine.submit(parse_document(flow), name="cancel")
        await until(lambda: all(t.job_id for t in store.tasks(run.id) if t.task_id != "later"))
        running_ids.add(str(store.task(run.id, "runs").job_id))
        await until(lambda: store.task(run.id, "runs").state is TaskState.RUNNING)
        await engine.cancel(run.id)
        queues.batch_progression(0.1)  # moto ends the stopped jobs at its next step
        assert (await engine.wait(run.id, timeout=WAIT_S)).state is RunState.CANCELLED
        return run.id

    run_id = with_engine(cfg, backend, body)
    store = Store.in_data_dir(cfg.data_dir)
    states = {t.task_id: t.state for t in store.tasks(run_id)}
    assert states == {
        "runs": TaskState.CANCELLED,
        "waits": TaskState.CANCELLED,
        "later": TaskState.CANCELLED,
    }
    assert backend.calls.get("TerminateJob") == 1 and backend.calls.get("CancelJob") == 1
    jobs = rig.client("batch").describe_jobs(jobs=[str(a.job_id) for a in store.attempts(run_id)])
    # How Batch ends a cancelled job, with the reason ScriptHut gave in both calls.
    assert {(j["status"], j["statusReason"]) for j in jobs["jobs"]} == {("FAILED", CANCEL_REASON)}
    store.close()


def test_a_restarted_engine_finds_its_jobs_by_tag_and_submits_none_twice(
    queues: MotoServer, tmp_path: Path
) -> None:
    """The first engine stops with task a's job RUNNING, b completed, and c's submission
    answered by a lost connection (an intent the engine cannot tell was submitted). The next
    engine, on the same data dir, adopts a's job, finds c's by its tag and submits nothing."""
    cfg = config(tmp_path)
    first = rig.backend(arrays=False)  # plain jobs (arrays: test_batch_array_engine.py)
    running: set[str] = set()
    lost: list[str] = []

    def submitted(parsed: dict[str, Any], **_: Any) -> None:
        name = str(parsed.get("jobName"))
        if name.endswith("_0_1"):  # task a (seq 0), attempt 1: held RUNNING
            running.add(str(parsed["jobId"]))
        if name.endswith("_2_1"):  # task c: the job exists, its answer is lost
            lost.append(str(parsed["jobId"]))
            raise EndpointConnectionError(endpoint_url=queues.url)

    def shown(parsed: dict[str, Any], **_: Any) -> None:
        for job in parsed.get("jobs") or []:
            if job["jobId"] in running:
                job["status"] = "RUNNING"

    first._batch().meta.events.register("after-call.batch.SubmitJob", submitted)
    first._batch().meta.events.register("after-call.batch.DescribeJobs", shown)
    flow = [{"id": t, "command": "true"} for t in ("a", "b", "c")]

    async def before(engine: Engine, store: Store) -> str:
        run = engine.submit(parse_document(flow), name="restart", max_concurrent=2)
        await until(lambda: bool(lost))
        return run.id

    run_id = with_engine(cfg, first, before)
    store = Store.in_data_dir(cfg.data_dir)
    left = {a.task_id: a.state for a in store.attempts(run_id)}
    assert left == {"a": "running", "b": "completed", "c": "intent"}
    assert len(batch_jobs(run_id)) == 3  # c's job exists, though the engine never heard of it
    store.close()

    async def after(engine: Engine, store: Store) -> RunState:
        return (await engine.wait(run_id, timeout=WAIT_S)).state

    second = rig.backend(arrays=False)
    assert with_engine(cfg, second, after) is RunState.COMPLETED
    assert second.calls.get("SubmitJob", 0) == 0 and second.calls.get("ListJobs", 0) >= 1
    store = Store.in_data_dir(cfg.data_dir)
    assert {t.state for t in store.tasks(run_id)} == {TaskState.COMPLETED}
    assert store.task(run_id, "c").job_id == lost[0]
    assert_one_job_per_attempt(store, run_id, 3)
    store.close()


def test_throttling_during_a_run_fails_no_task(queues: MotoServer, tmp_path: Path) -> None:
    """Submissions and polls throttled past botocore's retries: the engine takes them as
    unknown, backs off and asks again; every task completes, each with one job."""
    cfg = config(tmp_path)
    backend = rig.backend()
    # botocore's retries (max_attempts=3) make 4 attempts per call: 4 throttled answers make
    # one whole SubmitJob fail (its outcome unknown), and one whole DescribeJobs.
    submits = _throttle(backend._batch(), "SubmitJob", times=4)
    polls = _throttle(backend._batch(), "DescribeJobs", times=4)
    seen_down: list[str] = []

    async def body(engine: Engine, store: Store) -> str:
        run = engine.submit(parse_document(DAG), name="throttled")

        async def watch() -> None:
            while True:
                slot = engine.slots.get("aws")
                if slot is not None and slot.down_since is not None:
                    seen_down.append(slot.down_error)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            assert (await engine.wait(run.id, timeout=WAIT_S)).state is RunState.COMPLETED
        finally:
            watcher.cancel()
        return run.id

    run_id = with_engine(cfg, backend, body)
    assert (submits[0], polls[0]) == (4, 4)
    assert any("ThrottlingException" in e for e in seen_down)
    store = Store.in_data_dir(cfg.data_dir)
    assert {t.state for t in store.tasks(run_id)} == {TaskState.COMPLETED}
    assert_one_job_per_attempt(store, run_id, 3)
    store.close()
