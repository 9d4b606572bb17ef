"""SQLite store. Every state change is committed before the engine acts on it.

One file, `<data_dir>/scripthut.db`, in WAL mode so views and CLIs read while the
engine writes; it and its folder are private to the user (see `store/privacy.py`).
Writers use short `BEGIN IMMEDIATE` transactions. Exactly one engine drives a data
directory at a time: it holds the lease row and renews it.
"""

from __future__ import annotations

import json
import operator
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scripthut.errors import NotFound
from scripthut.processes import pid_alive
from scripthut.secrets import (
    SecretMasker,
    document_pairs,
    env_pairs,
    mask_document,
    mask_env,
    mask_urls,
)
from scripthut.states import RunState, TaskState
from scripthut.store.privacy import open_private, secure_data_dir
from scripthut.store.records import AttemptRecord, EventRecord, RunRecord, TaskRecord
from scripthut.store.results import ResultsStore
from scripthut.store.schema import migrate

DB_NAME = "scripthut.db"

_RUN_COLUMNS = (
    "id",
    "name",
    "backend",
    "state",
    "created_at",
    "started_at",
    "ended_at",
    "max_concurrent",
    "source",
    "base_dir",
    "document",
    "cancel_requested",
    "message",
)
_TASK_COLUMNS = (
    "run_id",
    "task_id",
    "seq",
    "spec",
    "deps",
    "state",
    "attempt",
    "job_id",
    "exit_code",
    "reason",
    "submitted_at",
    "started_at",
    "ended_at",
    "generated_by",
)
_ATTEMPT_COLUMNS = (
    "run_id",
    "task_id",
    "attempt",
    "tag",
    "backend",
    "state",
    "job_id",
    "stdout_path",
    "stderr_path",
    "exit_path",
    "script_path",
    "time_limit_s",
    "created_at",
    "submitted_at",
    "started_at",
    "ended_at",
    "exit_code",
    "reason",
    "raw_state",
    "efficiency",
    "cache",
)
_ATTEMPT_SELECT = (
    "SELECT "
    + ", ".join(f"a.{c}" for c in _ATTEMPT_COLUMNS)
    + ", s.script, s.env FROM attempts a LEFT JOIN attempt_scripts s ON s.tag = a.tag"
)
_JSON_COLUMNS = frozenset({"document", "spec", "deps", "efficiency", "cache"})
AttemptKey = tuple[str, str, int]
_RUN_UPDATABLE = frozenset(_RUN_COLUMNS) - {"id", "created_at"}
_TASK_UPDATABLE = frozenset(_TASK_COLUMNS) - {"run_id", "task_id", "seq"}
_ATTEMPT_UPDATABLE = frozenset(_ATTEMPT_COLUMNS) - {"run_id", "task_id", "attempt", "tag"}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _encode(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS:
        return value if isinstance(value, str) else _dumps(value)
    if isinstance(value, bool):
        return int(value)
    return value


_ATTEMPT_VALUES = operator.attrgetter(*_ATTEMPT_COLUMNS)
_ATTEMPT_JSON = tuple(
    (i, column) for i, column in enumerate(_ATTEMPT_COLUMNS) if column in _JSON_COLUMNS
)


def _attempt_row(attempt: AttemptRecord) -> list[Any]:
    """An attempt's column values, its JSON columns encoded (none of them is a bool)."""
    row = list(_ATTEMPT_VALUES(attempt))
    for i, column in _ATTEMPT_JSON:
        row[i] = _encode(column, row[i])
    return row


def _set_clause(fields: Iterable[str], allowed: frozenset[str]) -> str:
    names = list(fields)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise ValueError(f"not updatable: {', '.join(unknown)}")
    return ", ".join(f"{name} = ?" for name in names)


class Store(ResultsStore):
    """Typed access to the ScriptHut database."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        open_private(self.path)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute("PRAGMA busy_timeout = 10000")
        self._depth = 0
        migrate(self._conn)

    @classmethod
    def in_data_dir(cls, data_dir: str | Path) -> Store:
        """The store of a data directory, made private first (see `secure_data_dir`)."""
        secure_data_dir(data_dir)
        return cls(Path(data_dir) / DB_NAME)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction; nested uses join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")
        finally:
            self._depth = 0

    def defer_checkpoints(self) -> None:
        """Commits on this connection no longer copy the WAL back into the database file
        (which can take tens of milliseconds); the owner calls `checkpoint` elsewhere."""
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, waiting for no reader or writer."""
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    # -- runs ---------------------------------------------------------------------------

    def insert_run(self, run: RunRecord, tasks: Sequence[TaskRecord]) -> None:
        """The run and all its tasks, in one transaction."""
        with self.transaction():
            values = [_encode(c, getattr(run, c)) for c in _RUN_COLUMNS]
            placeholders = ", ".join("?" * len(_RUN_COLUMNS))
            self._conn.execute(
                f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({placeholders})",
                [v.value if isinstance(v, RunState) else v for v in values],
            )
            self.add_tasks(tasks)

    def get_run(self, run_id: str) -> RunRecord:
        row = self._conn.execute(
            f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no run '{run_id}'")
        return self._run(row)

    def resolve_run_id(self, prefix: str) -> str:
        """The run whose id is `prefix` or starts with it (unique), for typed ids."""
        exact = self._conn.execute("SELECT id FROM runs WHERE id = ?", (prefix,)).fetchone()
        if exact:
            return str(exact[0])
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._conn.execute(
            "SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 5",
            (escaped + "%",),
        ).fetchall()
        if not rows:
            raise NotFound(f"no run '{prefix}'")
        if len(rows) > 1:
            raise NotFound(
                f"'{prefix}' matches several runs: {', '.join(r[0] for r in rows)}; type more of it"
            )
        return str(rows[0][0])

    def list_runs(
        self, *, limit: int = 50, offset: int = 0, states: Sequence[RunState] | None = None
    ) -> list[RunRecord]:
        query = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"
        params: list[Any] = []
        if states:
            query += f" WHERE state IN ({', '.join('?' * len(states))})"
            params.extend(s.value for s in states)
        query += " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        params += [limit, offset]
        return [self._run(row) for row in self._conn.execute(query, params)]

    def count_runs(self) -> int:
        (count,) = self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()
        return int(count)

    def unfinished_runs(self) -> list[RunRecord]:
        return self.list_runs(limit=1_000_000, states=[RunState.PENDING, RunState.RUNNING])

    def update_run(self, run_id: str, **fields: Any) -> None:
        if not fields:
            return
        clause = _set_clause(fields, _RUN_UPDATABLE)
        values = [_encode(k, v.value if isinstance(v, RunState) else v) for k, v in fields.items()]
        with self.transaction():
            self._conn.execute(f"UPDATE runs SET {clause} WHERE id = ?", [*values, run_id])

    def delete_run(self, run_id: str) -> None:
        with self.transaction():
            self._conn.execute(
                "DELETE FROM attempt_scripts "
                "WHERE tag IN (SELECT tag FROM attempts WHERE run_id = ?)",
                (run_id,),
            )
            self._conn.execute("DELETE FROM attempts WHERE run_id = ?", (run_id,))
            self._conn.execute("DELETE FROM tasks WHERE run_id = ?", (run_id,))
            self._conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    # -- tasks --------------------------------------------------------------------------

    def add_tasks(self, tasks: Sequence[TaskRecord]) -> None:
        placeholders = ", ".join("?" * len(_TASK_COLUMNS))
        rows = [self._task_values(task) for task in tasks]  # encoded before the write lock
        with self.transaction():
            self._conn.executemany(
                f"INSERT INTO tasks ({', '.join(_TASK_COLUMNS)}) VALUES ({placeholders})", rows
            )

    def tasks(self, run_id: str) -> list[TaskRecord]:
        return list(self.iter_tasks(run_id))

    def iter_tasks(self, run_id: str) -> Iterator[TaskRecord]:
        """The run's tasks in order, one at a time (a large run is never all in memory)."""
        rows = self._conn.execute(
            f"SELECT {', '.join(_TASK_COLUMNS)} FROM tasks WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        return (self._task(row) for row in rows)

    def task(self, run_id: str, task_id: str) -> TaskRecord:
        row = self._conn.execute(
            f"SELECT {', '.join(_TASK_COLUMNS)} FROM tasks WHERE run_id = ? AND task_id = ?",
            (run_id, task_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"run '{run_id}' has no task '{task_id}'")
        return self._task(row)

    def task_counts(self, run_id: str) -> dict[str, int]:
        """Tasks per state, kept by triggers on every task write (no scan of the tasks)."""
        rows = self._conn.execute(
            "SELECT state, n FROM run_counts WHERE run_id = ? AND n > 0 ORDER BY state", (run_id,)
        )
        return {str(state): int(n) for state, n in rows}

    def update_tasks(self, changes: Sequence[tuple[str, str, Mapping[str, Any]]]) -> None:
        """Many `(run_id, task_id, fields)` updates, grouped into executemany calls."""
        groups: dict[tuple[str, ...], list[list[Any]]] = {}
        for run_id, task_id, fields in changes:
            key = tuple(fields)
            values = [
                _encode(k, v.value if isinstance(v, TaskState) else v) for k, v in fields.items()
            ]
            groups.setdefault(key, []).append([*values, run_id, task_id])
        with self.transaction():
            for names, rows in groups.items():
                clause = _set_clause(names, _TASK_UPDATABLE)
                if _JSON_COLUMNS.intersection(names):
                    rows = [
                        [_encode(n, v) for n, v in zip(names, r, strict=False)] + r[-2:]
                        for r in rows
                    ]
                self._conn.executemany(
                    f"UPDATE tasks SET {clause} WHERE run_id = ? AND task_id = ?",
                    rows,
                )

    # -- attempts -----------------------------------------------------------------------

    def insert_attempts(self, attempts: Sequence[AttemptRecord]) -> None:
        placeholders = ", ".join("?" * len(_ATTEMPT_COLUMNS))
        # Tasks of a run that share their env rules share one env object: encoded once.
        envs: dict[int, str] = {}

        def env_text(env: Any) -> str:
            if isinstance(env, str):
                return env
            text = envs.get(id(env))
            if text is None:
                text = envs[id(env)] = _dumps(env)
            return text

        with self.transaction():
            self._conn.executemany(
                f"INSERT INTO attempts ({', '.join(_ATTEMPT_COLUMNS)}) VALUES ({placeholders})",
                map(_attempt_row, attempts),
            )
            self._conn.executemany(
                "INSERT INTO attempt_scripts (tag, script, env) VALUES (?, ?, ?)",
                ((a.tag, a.script, env_text(a.env)) for a in attempts),
            )

    def update_attempts(self, changes: Sequence[tuple[AttemptKey, Mapping[str, Any]]]) -> None:
        """Many `((run_id, task_id, attempt), fields)` updates."""
        groups: dict[tuple[str, ...], list[list[Any]]] = {}
        for key, fields in changes:
            values = [_encode(k, v) if k in _JSON_COLUMNS else v for k, v in fields.items()]
            groups.setdefault(tuple(fields), []).append([*values, *key])
        with self.transaction():
            for names, rows in groups.items():
                clause = _set_clause(names, _ATTEMPT_UPDATABLE)
                self._conn.executemany(
                    f"UPDATE attempts SET {clause} "
                    "WHERE run_id = ? AND task_id = ? AND attempt = ?",
                    rows,
                )

    def attempts(self, run_id: str, task_id: str | None = None) -> list[AttemptRecord]:
        query = f"{_ATTEMPT_SELECT} WHERE a.run_id = ?"
        params: list[Any] = [run_id]
        if task_id is not None:
            query += " AND a.task_id = ?"
            params.append(task_id)
        query += " ORDER BY a.task_id, a.attempt"
        return [self._attempt(row) for row in self._conn.execute(query, params)]

    def attempt(self, run_id: str, task_id: str, attempt: int | None = None) -> AttemptRecord:
        """One attempt of a task; the latest when `attempt` is None."""
        query = f"{_ATTEMPT_SELECT} WHERE a.run_id = ? AND a.task_id = ?"
        params: list[Any] = [run_id, task_id]
        if attempt is not None:
            query += " AND a.attempt = ?"
            params.append(attempt)
        row = self._conn.execute(query + " ORDER BY a.attempt DESC LIMIT 1", params).fetchone()
        if row is None:
            which = f"attempt {attempt}" if attempt is not None else "no attempt yet"
            raise NotFound(f"task '{task_id}' of run '{run_id}': {which}")
        return self._attempt(row)

    def open_attempts(self) -> list[AttemptRecord]:
        rows = self._conn.execute(
            f"{_ATTEMPT_SELECT} WHERE a.state IN ('intent', 'submitted', 'running')"
        )
        return [self._attempt(row) for row in rows]

    # -- events -------------------------------------------------------------------------

    def append_events(
        self, events: Sequence[tuple[str, str | None, str | None, dict[str, Any]]]
    ) -> list[EventRecord]:
        """Insert events; ids are contiguous because the write lock is held throughout."""
        if not events:
            return []
        events = [(kind, run_id, task, _masked_texts(data)) for kind, run_id, task, data in events]
        now = time.time()
        with self.transaction():
            self._conn.executemany(
                "INSERT INTO events (ts, kind, run_id, task_id, data) VALUES (?, ?, ?, ?, ?)",
                [
                    (now, kind, run_id, task_id, _dumps(data))
                    for kind, run_id, task_id, data in events
                ],
            )
            (last,) = self._conn.execute("SELECT last_insert_rowid()").fetchone()
        first = int(last) - len(events) + 1
        return [
            EventRecord(first + i, now, kind, run_id, task_id, data)
            for i, (kind, run_id, task_id, data) in enumerate(events)
        ]

    def events_since(
        self, after_id: int, *, limit: int = 1000, run_id: str | None = None
    ) -> list[EventRecord]:
        query = "SELECT id, ts, kind, run_id, task_id, data FROM events WHERE id > ?"
        params: list[Any] = [after_id]
        if run_id is not None:
            query += " AND run_id = ?"
            params.append(run_id)
        rows = self._conn.execute(query + " ORDER BY id LIMIT ?", [*params, limit])
        return [EventRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def last_event_id(self) -> int:
        (last,) = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        return int(last)

    def prune_events(self, keep: int) -> int:
        with self.transaction():
            cursor = self._conn.execute(
                "DELETE FROM events WHERE id <= (SELECT COALESCE(MAX(id), 0) FROM events) - ?",
                (keep,),
            )
        return cursor.rowcount

    # -- commands (from processes that do not hold the lease) --------------------------

    def enqueue_command(self, kind: str, run_id: str | None, data: Mapping[str, Any]) -> int:
        with self.transaction():
            cursor = self._conn.execute(
                "INSERT INTO commands (ts, kind, run_id, data) VALUES (?, ?, ?, ?)",
                (time.time(), kind, run_id, json.dumps(dict(data))),
            )
        return int(cursor.lastrowid or 0)

    def last_command_id(self) -> int:
        (last,) = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM commands").fetchone()
        return int(last)

    def command_done(self, command_id: int) -> bool:
        row = self._conn.execute("SELECT done FROM commands WHERE id = ?", (command_id,)).fetchone()
        return row is None or bool(row[0])

    def take_commands(self) -> list[tuple[int, str, str | None, dict[str, Any]]]:
        with self.transaction():
            rows = self._conn.execute(
                "SELECT id, kind, run_id, data FROM commands WHERE done = 0 ORDER BY id"
            ).fetchall()
            self._conn.execute("UPDATE commands SET done = 1 WHERE done = 0")
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    # -- lease --------------------------------------------------------------------------

    def acquire_lease(self, owner: str, ttl: float) -> bool:
        """Take the engine lease if it is free, expired, or held by a dead local process."""
        now = time.time()
        host = socket.gethostname()
        with self.transaction():
            row = self._conn.execute("SELECT owner, pid, host, expires_at FROM lease").fetchone()
            if row is not None and row[0] != owner and not _lease_is_stale(row, now, host):
                return False
            self._conn.execute(
                "INSERT OR REPLACE INTO lease (id, owner, pid, host, expires_at) "
                "VALUES (1, ?, ?, ?, ?)",
                (owner, os.getpid(), host, now + ttl),
            )
        return True

    def grant_lease(self, owner: str, pid: int, host: str, ttl: float = 20.0) -> bool:
        """Give the free lease to another process (a hand-over); False if someone holds it."""
        now = time.time()
        with self.transaction():
            row = self._conn.execute("SELECT owner, pid, host, expires_at FROM lease").fetchone()
            if row is not None and not _lease_is_stale(row, now, socket.gethostname()):
                return False
            self._conn.execute(
                "INSERT OR REPLACE INTO lease (id, owner, pid, host, expires_at) "
                "VALUES (1, ?, ?, ?, ?)",
                (owner, pid, host, now + ttl),
            )
        return True

    def renew_lease(self, owner: str, ttl: float) -> bool:
        with self.transaction():
            cursor = self._conn.execute(
                "UPDATE lease SET expires_at = ? WHERE owner = ?", (time.time() + ttl, owner)
            )
        return cursor.rowcount == 1

    def release_lease(self, owner: str) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM lease WHERE owner = ?", (owner,))

    def lease_holder(self) -> dict[str, Any] | None:
        """The live lease holder, or None when no engine drives this store."""
        row = self._conn.execute("SELECT owner, pid, host, expires_at FROM lease").fetchone()
        if row is None or _lease_is_stale(row, time.time(), socket.gethostname()):
            return None
        return {"owner": row[0], "pid": row[1], "host": row[2], "expires_at": row[3]}

    # -- export -------------------------------------------------------------------------

    def export_run(self, run_id: str) -> dict[str, Any]:
        """A run with its workflow, tasks and attempts, as one JSON-able document.

        Secret values (scripthut.secrets) are masked: an export is for sharing and
        archiving, while the store keeps the clear values the jobs need.
        """
        run = self.get_run(run_id)
        tasks = self.tasks(run_id)
        attempts = self.attempts(run_id)
        workflow = {**run.document, "tasks": [t.spec for t in tasks]}
        masker = SecretMasker(
            [*document_pairs(workflow), *(p for a in attempts for p in env_pairs(a.env))]
        )
        return {
            "format": "scripthut-run/1",
            "secrets": "masked",
            "run": run.to_json(),
            "workflow": mask_document(workflow, masker),
            "tasks": [_masked_task(t.to_json(), masker) for t in tasks],
            "attempts": [
                {**a.to_json(), "script": masker.script(a.script), "env": mask_env(a.env, masker)}
                for a in attempts
            ],
        }

    # -- row mapping --------------------------------------------------------------------

    @staticmethod
    def _run(row: Sequence[Any]) -> RunRecord:
        data = dict(zip(_RUN_COLUMNS, row, strict=True))
        data["state"] = RunState(data["state"])
        data["document"] = json.loads(data["document"])
        data["cancel_requested"] = bool(data["cancel_requested"])
        return RunRecord(**data)

    @staticmethod
    def _task(row: Sequence[Any]) -> TaskRecord:
        data = dict(zip(_TASK_COLUMNS, row, strict=True))
        data["state"] = TaskState(data["state"])
        data["spec"] = json.loads(data["spec"])
        data["deps"] = json.loads(data["deps"])
        return TaskRecord(**data)

    @staticmethod
    def _task_values(t: TaskRecord) -> tuple[Any, ...]:
        return (
            t.run_id,
            t.task_id,
            t.seq,
            _dumps(t.spec),
            _dumps(t.deps),
            t.state.value,
            t.attempt,
            t.job_id,
            t.exit_code,
            t.reason,
            t.submitted_at,
            t.started_at,
            t.ended_at,
            t.generated_by,
        )

    @staticmethod
    def _attempt(row: Sequence[Any]) -> AttemptRecord:
        data = dict(zip(_ATTEMPT_COLUMNS, row[: len(_ATTEMPT_COLUMNS)], strict=True))
        script, env = row[len(_ATTEMPT_COLUMNS) :]
        data["efficiency"] = json.loads(data["efficiency"]) if data["efficiency"] else None
        data["cache"] = json.loads(data["cache"]) if data["cache"] else None
        return AttemptRecord(**data, script=script or "", env=json.loads(env) if env else {})


def _lease_is_stale(row: Sequence[Any], now: float, host: str) -> bool:
    _owner, pid, lease_host, expires_at = row
    if expires_at < now:
        return True
    return bool(lease_host == host and not pid_alive(int(pid)))


def _masked_task(task: dict[str, Any], masker: SecretMasker) -> dict[str, Any]:
    reason = task.get("reason")
    return {
        **task,
        "name": masker.text(str(task["name"])),
        "reason": reason if reason is None else masker.text(str(reason)),
    }


_EVENT_TEXTS = ("reason", "name", "message")


def _masked_texts(data: dict[str, Any]) -> dict[str, Any]:
    """Event data as every reader may see it: credentials in URLs of its texts masked (a
    reason or a name can quote a URL; env values never reach events)."""
    texts = [key for key in _EVENT_TEXTS if isinstance(data.get(key), str) and "://" in data[key]]
    if not texts:
        return data
    return data | {key: mask_urls(data[key]) for key in texts}
