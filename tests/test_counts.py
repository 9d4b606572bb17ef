"""Per-run task counts kept by the store (no scan of the tasks), on a real SQLite file.

Every check compares `Store.task_counts` with a recount of the task rows.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from scripthut.config import Config
from scripthut.engine.engine import CANCEL_CHUNK, Engine
from scripthut.states import RunState, TaskState
from scripthut.store import RunRecord, Store, TaskRecord
from scripthut.store.schema import MIGRATIONS, SCHEMA_VERSION
from scripthut.workflow.parse import parse_document


def recount(store: Store | sqlite3.Connection, run_id: str) -> dict[str, int]:
    conn = store._conn if isinstance(store, Store) else store
    rows = conn.execute(
        "SELECT state, COUNT(*) FROM tasks WHERE run_id = ? GROUP BY state ORDER BY state",
        (run_id,),
    )
    return {str(state): int(n) for state, n in rows}


def tasks(run_id: str, n: int, first: int = 0, **fields: Any) -> list[TaskRecord]:
    return [
        TaskRecord(run_id, f"t{i}", i, {"id": f"t{i}", "command": "true"}, [], **fields)
        for i in range(first, first + n)
    ]


def new_run(store: Store, run_id: str, n: int) -> None:
    run = RunRecord(run_id, "wf", "local", RunState.PENDING, time.time())
    store.insert_run(run, tasks(run_id, n))


def test_counts_follow_inserts_updates_and_deletes(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    new_run(store, "r1", 5)
    new_run(store, "r2", 3)
    assert store.task_counts("r1") == {"pending": 5} == recount(store, "r1")
    store.update_tasks(
        [
            ("r1", "t0", {"state": TaskState.RUNNING}),
            ("r1", "t1", {"state": TaskState.FAILED, "reason": "exit 1"}),
            ("r1", "t2", {"reason": "no state change"}),
            ("r1", "t3", {"state": TaskState.PENDING}),  # same state: nothing moves
        ]
    )
    assert store.task_counts("r1") == {"failed": 1, "pending": 3, "running": 1}
    assert store.task_counts("r1") == recount(store, "r1")
    store.update_tasks([("r1", "t0", {"state": TaskState.COMPLETED})])
    store.update_tasks([("r1", "t1", {"state": TaskState.PENDING})])  # a rerun
    assert store.task_counts("r1") == {"completed": 1, "pending": 4} == recount(store, "r1")
    store.add_tasks(tasks("r1", 2, first=5, generated_by="t0"))  # generated tasks
    assert store.task_counts("r1") == {"completed": 1, "pending": 6} == recount(store, "r1")
    assert store.task_counts("r2") == {"pending": 3}
    store.delete_run("r1")
    assert store.task_counts("r1") == {}
    (left,) = store._conn.execute("SELECT COUNT(*) FROM run_counts WHERE run_id = 'r1'").fetchone()
    assert left == 0
    assert store.task_counts("r2") == {"pending": 3}


def test_a_rolled_back_change_leaves_the_counts_as_they_were(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    new_run(store, "r1", 3)
    try:
        with store.transaction():
            store.update_tasks([("r1", "t0", {"state": TaskState.CANCELLED})])
            store.add_tasks(tasks("r1", 1))  # duplicate task id: the whole change fails
    except sqlite3.IntegrityError:
        pass
    assert store.task_counts("r1") == {"pending": 3} == recount(store, "r1")


def test_an_old_database_is_migrated_and_its_counts_backfilled(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("BEGIN;" + MIGRATIONS[0] + "PRAGMA user_version = 1;COMMIT;")
    conn.execute(
        "INSERT INTO runs (id, name, backend, state, created_at, document) "
        "VALUES ('old', 'wf', 'local', 'running', 0, '{}'), "
        "('empty', 'wf', 'local', 'completed', 0, '{}')"
    )
    states = ["completed"] * 4 + ["failed", "dep_failed", "pending"]
    conn.executemany(
        "INSERT INTO tasks (run_id, task_id, seq, spec, deps, state) VALUES (?, ?, ?, ?, ?, ?)",
        [("old", f"t{i}", i, "{}", "[]", s) for i, s in enumerate(states)],
    )
    conn.close()

    store = Store(path)
    assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.task_counts("old") == {
        "completed": 4,
        "dep_failed": 1,
        "failed": 1,
        "pending": 1,
    }
    assert store.task_counts("empty") == {}
    store.update_tasks([("old", "t6", {"state": TaskState.RUNNING})])  # kept from now on
    assert store.task_counts("old") == recount(store, "old")


def test_the_engine_keeps_counts_right_through_cancel_in_steps_and_rerun(config: Config) -> None:
    """More tasks than one cancel step, waiting on a gate: every one cancelled once, counts
    right after the cancel and after the rerun."""
    total = CANCEL_CHUNK * 2 + 7

    async def main() -> tuple[str, list[str]]:
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store, min_poll_interval=0.2)
        await engine.start()
        try:
            doc = [{"id": "gate", "command": "sleep 60"}]
            doc += [{"id": f"t{i}", "command": "true", "deps": ["gate"]} for i in range(total)]
            record = engine.submit(parse_document(doc))
            for _ in range(100):
                if store.task(record.id, "gate").state == TaskState.RUNNING:
                    break
                await asyncio.sleep(0.1)
            after = store.last_event_id()
            await engine.cancel(record.id)
            final = await engine.wait(record.id, timeout=30)
            assert final.state == RunState.CANCELLED
            cancelled = [
                e.task_id or ""
                for e in store.events_since(after, limit=1 << 20, run_id=record.id)
                if e.kind == "task" and e.data.get("state") == "cancelled"
            ]
            assert store.task_counts(record.id) == {"cancelled": total + 1}
            assert store.task_counts(record.id) == recount(store, record.id)
            return record.id, cancelled
        finally:
            await engine.stop()
            store.close()

    run_id, cancelled = asyncio.run(main())
    assert sorted(cancelled) == sorted(["gate", *(f"t{i}" for i in range(total))])

    async def again() -> None:
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store, min_poll_interval=0.2)
        await engine.start()
        try:
            await engine.rerun(run_id)
            assert store.task_counts(run_id) == recount(store, run_id)
            assert sum(store.task_counts(run_id).values()) == total + 1
            await engine.cancel(run_id)
            await engine.wait(run_id, timeout=30)
            assert store.task_counts(run_id) == {"cancelled": total + 1} == recount(store, run_id)
        finally:
            await engine.stop()
            store.close()

    asyncio.run(again())
