"""The SQLite store on a real file: schema, lease, ids, events, attempts, export."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripthut.errors import NotFound
from scripthut.states import RunState, TaskState
from scripthut.store import AttemptRecord, RunRecord, Store, TaskRecord
from scripthut.store.schema import SCHEMA_VERSION, SchemaTooNew


def make_run(store: Store, run_id: str, tasks: int = 2) -> None:
    run = RunRecord(run_id, "wf", "local", RunState.PENDING, time.time(), document={"env": []})
    records = [
        TaskRecord(run_id, f"t{i}", i, {"id": f"t{i}", "command": "true"}, []) for i in range(tasks)
    ]
    store.insert_run(run, records)


def attempt(run_id: str, task_id: str, number: int) -> AttemptRecord:
    tag = f"hut.{run_id}.{task_id}.{number}"
    return AttemptRecord(
        run_id, task_id, number, tag, "local", "intent", "#!/bin/bash\ntrue\n",
        {"values": {"A": {"value": "1"}}}, "o", "e", "x", "s", 60, time.time(),
    )  # fmt: skip


def test_schema_version_is_recorded_and_a_newer_one_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew):
        Store(tmp_path / "s.db")


def test_run_ids_resolve_from_unique_prefixes(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    make_run(store, "20261124-100000-aaaa")
    make_run(store, "20261124-100000-aabb")
    make_run(store, "20261125-090000-cccc")
    assert store.resolve_run_id("20261125") == "20261125-090000-cccc"
    assert store.resolve_run_id("20261124-100000-aaaa") == "20261124-100000-aaaa"
    with pytest.raises(NotFound, match="several runs"):
        store.resolve_run_id("20261124-100000-aa")
    with pytest.raises(NotFound, match="no run"):
        store.resolve_run_id("1999")
    with pytest.raises(NotFound):
        store.resolve_run_id("2026112_")  # LIKE wildcards are literal


def test_lease_is_exclusive_until_released_or_its_process_is_gone(tmp_path: Path) -> None:
    a, b = Store(tmp_path / "s.db"), Store(tmp_path / "s.db")
    assert a.acquire_lease("one", ttl=30)
    assert not b.acquire_lease("two", ttl=30)
    assert b.lease_holder() is not None
    a.release_lease("one")
    assert b.acquire_lease("two", ttl=30)
    b.release_lease("two")
    # a holder whose process died on this host is stale at once
    code = (
        "import sys; from scripthut.store import Store; "
        "s = Store(sys.argv[1]); assert s.acquire_lease('dead', ttl=300)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.db")], check=True)
    assert a.lease_holder() is None
    assert a.acquire_lease("one", ttl=30)


def test_event_ids_increase_and_resume(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    first = store.append_events([("task", "r", "a", {"state": "running"}), ("run", "r", None, {})])
    second = store.append_events([("task", "r", "a", {"state": "completed"})])
    ids = [e.id for e in [*first, *second]]
    assert ids == list(range(ids[0], ids[0] + 3))
    assert [e.data for e in store.events_since(first[-1].id)] == [{"state": "completed"}]
    assert store.prune_events(keep=1) == 2
    assert [e.id for e in store.events_since(0)] == [second[0].id]


def test_attempts_keep_script_env_and_efficiency(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    make_run(store, "r1")
    store.insert_attempts([attempt("r1", "t0", 1), attempt("r1", "t0", 2)])
    assert [a.state for a in store.open_attempts()] == ["intent", "intent"]
    store.update_attempts([
        (("r1", "t0", 1), {"state": "failed", "exit_code": 3}),
        (("r1", "t0", 2), {"state": "completed", "efficiency": {"cpu_efficiency": 0.5}}),
    ])  # fmt: skip
    latest = store.attempt("r1", "t0")
    assert (latest.attempt, latest.state, latest.efficiency) == (
        2,
        "completed",
        {"cpu_efficiency": 0.5},
    )
    assert latest.script == "#!/bin/bash\ntrue\n"
    assert latest.env == {"values": {"A": {"value": "1"}}}
    assert store.attempt("r1", "t0", 1).exit_code == 3
    assert store.open_attempts() == []


def test_task_updates_export_and_delete(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    make_run(store, "r1", tasks=3)
    store.update_tasks([("r1", "t1", {"state": TaskState.FAILED, "reason": "exit code 1"})])
    assert store.task_counts("r1") == {"pending": 2, "failed": 1}
    store.insert_attempts([attempt("r1", "t1", 1)])
    exported = store.export_run("r1")
    assert exported["run"]["id"] == "r1"
    assert [t["state"] for t in exported["tasks"]] == ["pending", "failed", "pending"]
    assert exported["attempts"][0]["script"].startswith("#!/bin/bash")
    store.delete_run("r1")
    with pytest.raises(NotFound):
        store.get_run("r1")
    assert store.attempts("r1") == []


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    make_run(store, "r1")

    def change_then_fail() -> None:
        with store.transaction():
            store.update_tasks([("r1", "t0", {"state": TaskState.RUNNING})])
            make_run(store, "r1")  # duplicate id

    with pytest.raises(sqlite3.IntegrityError):
        change_then_fail()
    assert store.task("r1", "t0").state == TaskState.PENDING
