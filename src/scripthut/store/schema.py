"""Schema of the store, as an ordered list of migrations.

Migration N brings a database from user_version N-1 to N. Never edit a released
migration: append a new one.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: runs, tasks, attempts, events, commands, lease
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        backend TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        max_concurrent INTEGER,
        source TEXT,
        base_dir TEXT,
        document TEXT NOT NULL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        message TEXT
    );
    CREATE INDEX runs_by_state ON runs(state);
    CREATE TABLE tasks (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        spec TEXT NOT NULL,
        deps TEXT NOT NULL,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        job_id TEXT,
        exit_code INTEGER,
        reason TEXT,
        submitted_at REAL,
        started_at REAL,
        ended_at REAL,
        generated_by TEXT,
        PRIMARY KEY (run_id, task_id)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        tag TEXT NOT NULL UNIQUE,
        backend TEXT NOT NULL,
        state TEXT NOT NULL,
        job_id TEXT,
        stdout_path TEXT NOT NULL,
        stderr_path TEXT NOT NULL,
        exit_path TEXT NOT NULL,
        script_path TEXT NOT NULL,
        time_limit_s INTEGER NOT NULL,
        created_at REAL NOT NULL,
        submitted_at REAL,
        started_at REAL,
        ended_at REAL,
        exit_code INTEGER,
        reason TEXT,
        raw_state TEXT,
        efficiency TEXT,
        PRIMARY KEY (run_id, task_id, attempt)
    ) WITHOUT ROWID;
    CREATE INDEX attempts_open ON attempts(state) WHERE state IN ('intent', 'submitted', 'running');
    CREATE TABLE attempt_scripts (
        tag TEXT PRIMARY KEY,
        script TEXT NOT NULL,
        env TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        run_id TEXT,
        task_id TEXT,
        data TEXT NOT NULL
    );
    CREATE TABLE commands (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        run_id TEXT,
        data TEXT NOT NULL,
        done INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        owner TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
    # 2: per-run task counts, kept by triggers in the same transaction as every task write,
    # so listing runs never scans tasks; backfilled from the tasks already stored
    """
    CREATE TABLE run_counts (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        state TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (run_id, state)
    ) WITHOUT ROWID;
    INSERT INTO run_counts (run_id, state, n)
        SELECT run_id, state, COUNT(*) FROM tasks GROUP BY run_id, state;
    CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
        INSERT INTO run_counts (run_id, state, n) VALUES (new.run_id, new.state, 1)
            ON CONFLICT (run_id, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER tasks_count_update AFTER UPDATE OF state ON tasks
        WHEN old.state IS NOT new.state BEGIN
        UPDATE run_counts SET n = n - 1 WHERE run_id = old.run_id AND state = old.state;
        INSERT INTO run_counts (run_id, state, n) VALUES (new.run_id, new.state, 1)
            ON CONFLICT (run_id, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
        UPDATE run_counts SET n = n - 1 WHERE run_id = old.run_id AND state = old.state;
    END;
    """,
    # 3: what finished attempts wrote (their output folder's listing and summary text), and
    # the manifests of tasks that declare inputs or outputs (attempt 0: a result-cache hit)
    """
    CREATE TABLE outputs (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        listing TEXT NOT NULL,
        PRIMARY KEY (run_id, task_id, attempt)
    ) WITHOUT ROWID;
    CREATE TABLE manifests (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        manifest TEXT NOT NULL,
        PRIMARY KEY (run_id, task_id, attempt)
    ) WITHOUT ROWID;
    """,
    # 4: an attempt's result-cache facts (key, scope, input hashes; `hit` for an attempt the
    # cache completed), so an engine restarted before completion still stores its outputs
    """
    ALTER TABLE attempts ADD COLUMN cache TEXT;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer ScriptHut."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version it had."""
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the store has schema version {found}, newer than this ScriptHut ({SCHEMA_VERSION})"
        )
    for version in range(found, SCHEMA_VERSION):
        conn.executescript(
            "BEGIN;" + MIGRATIONS[version] + f"PRAGMA user_version = {version + 1};COMMIT;"
        )
    return int(found)
