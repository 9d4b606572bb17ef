"""The engine against the real local backend: states, limits, cancel, rerun, generated tasks."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from scripthut.config import Config
from scripthut.engine.engine import Engine
from scripthut.errors import InvalidInput, LeaseHeld, NotFound
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.helpers import local_config


def drive(config: Config, body: Callable[[Engine], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store, min_poll_interval=0.2)
        await engine.start()
        try:
            return await body(engine)
        finally:
            await engine.stop()
            store.close()

    return asyncio.run(main())


def run_doc(config: Config, doc: Any, timeout: float = 60, **options: Any) -> tuple[str, Store]:
    async def body(engine: Engine) -> str:
        record = engine.submit(parse_document(doc), **options)
        final = await engine.wait(record.id, timeout=timeout)
        return final.id

    run_id = drive(config, body)
    return run_id, Store.in_data_dir(config.data_dir)


def states(store: Store, run_id: str) -> dict[str, str]:
    return {t.task_id: t.state.value for t in store.tasks(run_id)}


def test_diamond_runs_in_dependency_order(config: Config, tmp_path: Path) -> None:
    log = tmp_path / "order.log"
    stamp = "echo $SCRIPTHUT_TASK_ID {what} $(date +%s%N) >> " + str(log)
    step = f"{stamp.format(what='start')}; sleep 0.2; {stamp.format(what='end')}"
    doc = [
        {"id": "a", "command": step},
        {"id": "b.1", "command": step, "deps": ["a"]},
        {"id": "b.2", "command": step, "deps": ["a"]},
        {"id": "c", "command": step, "deps": ["b.*"]},
    ]
    run_id, store = run_doc(config, doc)
    assert store.get_run(run_id).state == RunState.COMPLETED
    assert set(states(store, run_id).values()) == {"completed"}
    times = {}
    for line in log.read_text().splitlines():
        task, what, ns = line.split()
        times[(task, what)] = int(ns)
    assert times[("b.1", "start")] >= times[("a", "end")]
    assert times[("b.2", "start")] >= times[("a", "end")]
    assert times[("c", "start")] >= max(times[("b.1", "end")], times[("b.2", "end")])


def test_failure_cascades_and_independent_branch_completes(config: Config) -> None:
    doc = [
        {"id": "bad", "command": "echo oops >&2; exit 7"},
        {"id": "after-bad", "command": "true", "deps": ["bad"]},
        {"id": "after-after", "command": "true", "deps": ["after-bad"]},
        {"id": "ok", "command": "true"},
    ]
    run_id, store = run_doc(config, doc)
    assert store.get_run(run_id).state == RunState.FAILED
    assert states(store, run_id) == {
        "bad": "failed",
        "after-bad": "dep_failed",
        "after-after": "dep_failed",
        "ok": "completed",
    }
    bad = store.task(run_id, "bad")
    assert bad.exit_code == 7
    assert "bad" in (store.task(run_id, "after-bad").reason or "")
    attempt = store.attempt(run_id, "bad")
    assert Path(attempt.stderr_path).read_text() == "oops\n"
    assert attempt.script.startswith("#!/bin/bash")
    assert Path(attempt.exit_path).read_text().strip() == "7"


def test_run_max_concurrent_is_respected(config: Config, tmp_path: Path) -> None:
    spans = tmp_path / "spans"
    stamp = "echo $(date +%s%N) $SCRIPTHUT_TASK_ID {what} >> " + str(spans)
    command = f"{stamp.format(what='start')}; sleep 0.3; {stamp.format(what='end')}"
    doc = [{"id": f"t{i}", "command": command} for i in range(8)]
    run_id, store = run_doc(config, doc, max_concurrent=2)
    assert set(states(store, run_id).values()) == {"completed"}
    events = sorted(
        (int(ns), what)
        for ns, _task, what in (line.split() for line in spans.read_text().splitlines())
    )
    running = peak = 0
    for _ns, what in events:
        running += 1 if what == "start" else -1
        peak = max(peak, running)
    assert peak == 2


def test_cancel_stops_running_and_pending_tasks(config: Config, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    async def body(engine: Engine) -> str:
        doc = [
            {"id": "long", "command": f"echo $$ > {pidfile}; sleep 60"},
            {"id": "later", "command": "true", "deps": ["long"]},
        ]
        record = engine.submit(parse_document(doc))
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            await asyncio.sleep(0.1)
        await engine.cancel(record.id)
        final = await engine.wait(record.id, timeout=30)
        return final.id

    run_id = drive(config, body)
    store = Store.in_data_dir(config.data_dir)
    assert store.get_run(run_id).state == RunState.CANCELLED
    assert states(store, run_id) == {"long": "cancelled", "later": "cancelled"}
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_rerun_runs_failed_tasks_again_as_new_attempts(config: Config, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    doc = [
        {"id": "flaky", "command": f"test -e {flag}"},
        {"id": "next", "command": "true", "deps": ["flaky"]},
        {"id": "fine", "command": "true"},
    ]
    run_id, store = run_doc(config, doc)
    assert states(store, run_id) == {"flaky": "failed", "next": "dep_failed", "fine": "completed"}
    flag.touch()

    async def body(engine: Engine) -> None:
        await engine.rerun(run_id)
        await engine.wait(run_id, timeout=30)

    drive(config, body)
    assert store.get_run(run_id).state == RunState.COMPLETED
    assert states(store, run_id) == {"flaky": "completed", "next": "completed", "fine": "completed"}
    assert [a.attempt for a in store.attempts(run_id, "flaky")] == [1, 2]
    assert [a.state for a in store.attempts(run_id, "flaky")] == ["failed", "completed"]
    assert [a.attempt for a in store.attempts(run_id, "fine")] == [1]


def test_generated_tasks_join_the_run(config: Config, tmp_path: Path) -> None:
    generated = {
        "tasks": [
            {"id": "gen.1", "command": f"echo one > {tmp_path}/gen.1"},
            {"id": "gen.2", "command": f"echo two > {tmp_path}/gen.2"},
            {
                "id": "gather",
                "command": f"cat {tmp_path}/gen.* > {tmp_path}/all",
                "deps": ["gen.*", "side"],
            },
        ]
    }
    (tmp_path / "source.json").write_text(json.dumps(generated))
    doc = [
        {
            "id": "plan",
            "command": "true",
            "working_dir": str(tmp_path),
            "generates_source": "source.json",
        },
        {"id": "side", "command": "true"},
    ]
    run_id, store = run_doc(config, doc)
    assert store.get_run(run_id).state == RunState.COMPLETED
    assert states(store, run_id) == {
        "plan": "completed",
        "side": "completed",
        "gen.1": "completed",
        "gen.2": "completed",
        "gather": "completed",
    }
    assert (tmp_path / "all").read_text() == "one\ntwo\n"
    assert store.task(run_id, "gen.1").generated_by == "plan"
    assert store.task_counts(run_id) == {"completed": 5}  # generated tasks are counted


def test_invalid_generated_file_fails_the_generating_task(config: Config, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(
        json.dumps([{"id": "x", "command": "true", "deps": ["nope"]}])
    )
    doc = [
        {
            "id": "plan",
            "command": "true",
            "working_dir": str(tmp_path),
            "generates_source": "bad.json",
        }
    ]
    run_id, store = run_doc(config, doc)
    plan = store.task(run_id, "plan")
    assert plan.state == TaskState.FAILED
    assert "nope" in (plan.reason or "")
    assert store.get_run(run_id).state == RunState.FAILED


def test_events_describe_every_change(config: Config) -> None:
    async def body(engine: Engine) -> list[dict[str, Any]]:
        subscription = engine.events.subscribe()
        record = engine.submit(parse_document([{"id": "a", "command": "true"}]))
        await engine.wait(record.id, timeout=30)
        await asyncio.sleep(0)
        return [e.to_json() for e in subscription.get_nowait()]

    events = drive(config, body)
    task_states = [e["state"] for e in events if e["kind"] == "task" and "state" in e]
    assert task_states == ["submitted", "running", "completed"] or task_states == [
        "submitted",
        "completed",
    ]
    run_states = [e["state"] for e in events if e["kind"] == "run"]
    assert run_states[-1] == "completed"
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)


def test_events_are_persisted_for_resuming_clients(config: Config) -> None:
    run_id, store = run_doc(config, [{"id": "a", "command": "true"}])
    kinds = [(e.kind, e.data.get("state")) for e in store.events_since(0, run_id=run_id)]
    assert ("task", "completed") in kinds
    assert kinds[-1] == ("run", "completed")


def test_one_engine_per_data_dir(config: Config) -> None:
    async def body(engine: Engine) -> None:
        other = Engine(config, Store.in_data_dir(config.data_dir))
        with pytest.raises(LeaseHeld):
            await other.start()

    drive(config, body)


def test_bad_input_creates_nothing(config: Config) -> None:
    async def body(engine: Engine) -> None:
        workflow = parse_document(
            [{"id": "a", "command": "true", "env": [{"include": ["missing"]}]}]
        )
        with pytest.raises(InvalidInput, match="missing"):
            engine.submit(workflow)
        with pytest.raises(NotFound, match="nosuch"):
            engine.submit(parse_document([{"id": "a", "command": "true"}]), backend="nosuch")

    drive(config, body)
    assert Store.in_data_dir(config.data_dir).count_runs() == 0


def test_env_and_script_are_recorded_with_provenance(config: Config) -> None:
    doc = {
        "env": [{"set": {"GREETING": "hello"}}],
        "tasks": [{"id": "a", "command": "echo $GREETING"}],
    }
    run_id, store = run_doc(config, doc)
    attempt = store.attempt(run_id, "a")
    assert Path(attempt.stdout_path).read_text() == "hello\n"
    assert "GREETING" in json.dumps(attempt.env)
    assert "workflow" in json.dumps(attempt.env)


def test_many_runs_share_the_backend_limit(data_dir: Path, tmp_path: Path) -> None:
    config = local_config(data_dir, max_concurrent=3, cpus=8)
    spans = tmp_path / "spans"
    command = f"echo $(date +%s%N) start >> {spans}; sleep 0.3; echo $(date +%s%N) end >> {spans}"

    async def body(engine: Engine) -> None:
        records = [
            engine.submit(parse_document([{"id": f"t{i}", "command": command} for i in range(4)]))
            for _ in range(3)
        ]
        for record in records:
            await engine.wait(record.id, timeout=60)

    started = time.monotonic()
    drive(config, body)
    assert time.monotonic() - started < 30
    events = sorted(
        (int(ns), what) for ns, what in (line.split() for line in spans.read_text().splitlines())
    )
    running = peak = 0
    for _ns, what in events:
        running += 1 if what == "start" else -1
        peak = max(peak, running)
    assert peak == 3


def test_requests_left_while_no_engine_ran_are_carried_out(config: Config, tmp_path: Path) -> None:
    async def start_run(engine: Engine) -> str:
        doc = [{"id": "long", "command": "sleep 60"}]
        record = engine.submit(parse_document(doc))
        for _ in range(100):
            if engine.store.task(record.id, "long").state == TaskState.RUNNING:
                break
            await asyncio.sleep(0.1)
        return record.id

    run_id = drive(config, start_run)
    store = Store.in_data_dir(config.data_dir)
    store.enqueue_command("cancel", run_id, {})

    async def resume(engine: Engine) -> None:
        await engine.wait(run_id, timeout=30)

    drive(config, resume)
    assert store.get_run(run_id).state == RunState.CANCELLED
    assert store.task(run_id, "long").state == TaskState.CANCELLED


def test_rerun_of_a_completed_run_changes_nothing(config: Config) -> None:
    run_id, store = run_doc(config, [{"id": "a", "command": "true"}])

    async def body(engine: Engine) -> None:
        record = await engine.rerun(run_id)
        assert record.state == RunState.COMPLETED
        assert run_id not in engine.runs

    drive(config, body)
    assert [a.attempt for a in store.attempts(run_id)] == [1]
