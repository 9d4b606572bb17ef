"""The result cache across an engine restart and in the attempt history: the key found before
submission is kept with the attempt, so an engine stopped between submission and completion
still stores the outputs after its restart; a hit is an attempt of its own (completed, cached,
no job) whose script and log views say where the result came from."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from scripthut.config import Config
from scripthut.engine.engine import Engine
from scripthut.server import reads
from scripthut.states import TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.results.test_cache_local import cached_config, go, runs_of, task, work
from tests.test_engine import drive

__all__ = ["cached_config", "work"]  # fixtures


def gated(work: Path) -> dict[str, Any]:
    """The task, held until the test creates `gate` (so the engine can stop mid-task)."""
    wait = "while [ ! -e gate ]; do sleep 0.05; done; "
    return task(work, command=wait + task(work)["command"])


async def until_submitted(engine: Engine, store: Store, run_id: str) -> None:
    while store.task(run_id, "fit").state not in (TaskState.SUBMITTED, TaskState.RUNNING):
        await asyncio.sleep(0.05)


def test_an_engine_restarted_before_completion_still_stores(
    cached_config: Config, work: Path
) -> None:
    async def submit_and_stop(engine: Engine) -> str:
        record = engine.submit(parse_document([gated(work)]))
        await asyncio.wait_for(until_submitted(engine, engine.store, record.id), 60)
        return record.id

    run1 = drive(cached_config, submit_and_stop)  # the engine stops with the task waiting
    store = Store.in_data_dir(cached_config.data_dir)
    open_attempt = store.attempt(run1, "fit")
    assert open_attempt.cache is not None and len(open_attempt.cache["key"]) == 64
    assert open_attempt.cache["scope"] == "commit" and not open_attempt.cached
    (work / "gate").touch()

    async def finish(engine: Engine) -> None:
        await engine.wait(run1, timeout=60)

    drive(cached_config, finish)  # a new engine adopts the job and sees it complete
    first = store.manifest(run1, "fit")
    assert store.task(run1, "fit").state == TaskState.COMPLETED
    assert first["cache"]["stored"] is True and first["cache"]["key"] == open_attempt.cache["key"]

    run2, store = go(cached_config, [gated(work)])
    assert store.manifest(run2, "fit")["cache"]["hit"] is True
    assert runs_of(work) == 1


def test_a_hit_is_a_completed_cached_attempt_without_a_job(
    cached_config: Config, work: Path
) -> None:
    run1, _ = go(cached_config, [task(work)])
    run2, store = go(cached_config, [task(work)])
    key = store.manifest(run2, "fit")["cache"]["key"]
    record = store.task(run2, "fit")
    assert record.attempt == 1 and record.job_id is None
    attempt = store.attempt(run2, "fit")
    assert attempt.cached and attempt.state == "completed" and attempt.job_id is None
    assert attempt.exit_code == 0 and attempt.reason == f"restored from cache {key}"
    shown = reads.task_detail(store, run2, "fit")["attempts"]
    assert [(a["cached"], a["cache_key"], a["job_id"]) for a in shown] == [(True, key, None)]
    assert f"restored from cache {key}" in reads.task_script(store, run2, "fit", None)
    assert store.manifest(run2, "fit")["cache"]["hit"] is True
    first = store.attempt(run1, "fit")
    assert not first.cached and first.job_id is not None
