"""Runs on EC2 through the real Engine: moto (in this process) for every AWS call, the
rig's sshd as the instance behind the port-forward stand-in, and each instance's user data
executed on the rig host with a `docker` stand-in (see tests/aws/ec2_support.py)."""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from scripthut.backends.ec2 import EC2Backend
from scripthut.backends.registry import BackendRegistry
from scripthut.config import Config, parse_config
from scripthut.cost import Pricing, stored_run_cost
from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
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
from tests.aws.test_ec2_backend import entry, make_backend, state
from tests.slurm.conftest import SlurmRig

__all__ = ["aws", "host", "moto_url", "rig", "ssm_standin"]  # fixtures used by name
T = TypeVar("T")
WAIT_S = 60.0


def config(tmp_path: Path) -> Config:
    cloud = entry().model_dump(mode="json")
    return parse_config(
        {
            "backends": [cloud],
            "pricing": {"url": "http://127.0.0.1:9/x", "prices": {"t3.micro": 3600.0}},
            "settings": {"data_dir": str(tmp_path / "data"), "poll_interval": 1},
        }
    )


def with_engine(
    cfg: Config, backend: EC2Backend, body: Callable[[Engine, Store], Awaitable[T]]
) -> T:
    async def main() -> T:
        store = Store.in_data_dir(cfg.data_dir)
        registry = BackendRegistry(cfg)
        registry.add(backend)
        engine = Engine(cfg, store, registry=registry, min_poll_interval=0.2)
        await engine.start()
        try:
            return await body(engine, store)
        finally:
            await engine.stop()
            store.close()

    return asyncio.run(main())


async def until(check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.1)


def wipe_instance_files(host: Host) -> None:
    """The rig host plays one instance after another: the previous one's files go."""
    on_rig(host.rig, f"rm -rf -- {shlex.quote(host.root)}/run {shlex.quote(host.root)}/log")


def test_a_run_launches_completes_and_a_restarted_engine_adopts_its_instance(
    aws: str, rig: SlurmRig, host: Host, ssm_standin: Tools, tmp_path: Path, monkeypatch: Any
) -> None:
    """The engine launches `first` and stops; the instance runs its user data meanwhile. A new
    engine adopts the instance by its attempt, reads its result, terminates it, then launches
    and completes `then`, costed by its own instance type."""
    set_console(monkeypatch, [rig_host_key(rig)])
    cfg = config(tmp_path)
    flow = [
        {"id": "first", "command": "echo first on $SCRIPTHUT_TASK_ID"},
        {"id": "then", "command": "echo then", "deps": ["first"]},
    ]

    async def launch(engine: Engine, store: Store) -> str:
        run = engine.submit(parse_document(flow), name="ec2")
        await until(lambda: store.task(run.id, "first").state is TaskState.RUNNING)
        return run.id

    run_id = with_engine(cfg, make_backend(rig, host, tmp_path), launch)
    store = Store.in_data_dir(cfg.data_dir)
    first_instance = str(store.task(run_id, "first").job_id)
    store.close()
    assert state(first_instance) == "running"
    host.run_user_data(user_data(first_instance))  # the task runs while no engine does

    async def finish(engine: Engine, store: Store) -> RunState:
        await until(lambda: store.task(run_id, "then").state is TaskState.RUNNING)
        then_instance = str(store.task(run_id, "then").job_id)
        await asyncio.to_thread(host.run_user_data, user_data(then_instance))
        return (await engine.wait(run_id, timeout=WAIT_S)).state

    second = make_backend(rig, host, tmp_path)
    polls = second.poll

    async def poll(jobs: Any) -> Any:
        """The host plays `then` once `first` is done: its files go before the first look."""
        if any(ref.job_id != first_instance for ref in jobs) and not wiped:
            await asyncio.to_thread(wipe_instance_files, host)
            wiped.append(True)
        return await polls(jobs)

    wiped: list[bool] = []
    second.poll = poll  # type: ignore[method-assign]
    assert with_engine(cfg, second, finish) is RunState.COMPLETED
    store = Store.in_data_dir(cfg.data_dir)
    attempts = {a.task_id: a for a in store.attempts(run_id)}
    assert len(attempts) == 2 and attempts["first"].job_id == first_instance
    assert {(a.state, a.exit_code) for a in attempts.values()} == {("completed", 0)}
    assert "first on first" in Path(attempts["first"].stdout_path).read_text()
    assert "then" in Path(attempts["then"].stdout_path).read_text()
    assert {state(str(a.job_id)) for a in attempts.values()} == {"terminated"}
    # Costed by its own instance type (t3.micro, whole) for its real running time.
    cost = stored_run_cost(store, cfg, Pricing.load(cfg), run_id)
    items = {i.task: i for i in cost.items}
    assert {(i.priced_as, i.share) for i in items.values()} == {("t3.micro", 1.0)}
    for task in store.tasks(run_id):
        assert task.started_at is not None and task.ended_at is not None
        seconds = task.ended_at - task.started_at
        assert items[task.task_id].cost == pytest.approx(seconds)  # 3600 USD an hour
    store.close()


def test_cancel_through_the_engine_terminates_the_instance(
    aws: str, rig: SlurmRig, host: Host, ssm_standin: Tools, tmp_path: Path, monkeypatch: Any
) -> None:
    set_console(monkeypatch, [rig_host_key(rig)])
    cfg = config(tmp_path)

    async def body(engine: Engine, store: Store) -> tuple[str, RunState]:
        run = engine.submit(parse_document([{"id": "long", "command": "sleep 600"}]))
        await until(lambda: store.task(run.id, "long").state is TaskState.RUNNING)
        await engine.cancel(run.id)
        return run.id, (await engine.wait(run.id, timeout=WAIT_S)).state

    run_id, final = with_engine(cfg, make_backend(rig, host, tmp_path), body)
    assert final is RunState.CANCELLED
    store = Store.in_data_dir(cfg.data_dir)
    [attempt] = store.attempts(run_id)
    assert attempt.state == "cancelled" and state(str(attempt.job_id)) == "terminated"
    store.close()
