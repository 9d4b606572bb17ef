"""What is to be sent, kept in the store's database so nothing is sent twice or lost.

Three tables beside the store's own, created here (`IF NOT EXISTS`) rather than by a store
migration: they belong to this feature alone. `notify_runs`: runs that opted in.
`notify_cursor`: the last event turned into messages. `notify_outbox`: one row per event and
channel (unique), marked when sent; a failed send is retried at `next_at`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripthut.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_runs (run_id TEXT PRIMARY KEY, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS notify_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1), last_event INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS notify_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    run_id TEXT,
    message TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    sent_at REAL,
    gave_up INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    UNIQUE (event_id, channel)
);
"""


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    event_id: int
    channel: str
    kind: str
    message: dict[str, Any]
    created_at: float
    attempts: int


class Outbox:
    """Its own connection to the store's database (WAL: it never blocks the engine long)."""

    def __init__(self, db_path: str | Path) -> None:
        self._conn = sqlite3.connect(str(db_path), timeout=30, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def opt_in(self, run_id: str) -> None:
        with self._transaction():
            self._conn.execute(
                "INSERT OR IGNORE INTO notify_runs (run_id, ts) VALUES (?, ?)",
                (run_id, time.time()),
            )

    def opted_in(self, run_ids: Sequence[str]) -> set[str]:
        if not run_ids:
            return set()
        marks = ",".join("?" * len(run_ids))
        rows = self._conn.execute(
            f"SELECT run_id FROM notify_runs WHERE run_id IN ({marks})",  # noqa: S608 - only ?s
            list(run_ids),
        )
        return {r[0] for r in rows}

    def cursor(self) -> int | None:
        row = self._conn.execute("SELECT last_event FROM notify_cursor").fetchone()
        return None if row is None else int(row[0])

    def advance(
        self, last_event: int, messages: Sequence[tuple[int, str, str, str | None, Any]]
    ) -> None:
        """Queue (event id, channel, kind, run id, message) rows and move the cursor, at once."""
        now = time.time()
        with self._transaction():
            self._conn.executemany(
                "INSERT OR IGNORE INTO notify_outbox "
                "(event_id, channel, kind, run_id, message, created_at, next_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(e, c, k, r, json.dumps(m), now, now) for e, c, k, r, m in messages],
            )
            self._conn.execute(
                "INSERT OR REPLACE INTO notify_cursor (id, last_event) VALUES (1, ?)",
                (last_event,),
            )

    def due(self, now: float, limit: int = 50) -> list[Pending]:
        rows = self._conn.execute(
            "SELECT id, event_id, channel, kind, message, created_at, attempts FROM notify_outbox "
            "WHERE sent_at IS NULL AND gave_up = 0 AND next_at <= ? ORDER BY id LIMIT ?",
            (now, limit),
        )
        return [Pending(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def next_due(self) -> float | None:
        row = self._conn.execute(
            "SELECT MIN(next_at) FROM notify_outbox WHERE sent_at IS NULL AND gave_up = 0"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def sent(self, row_id: int) -> None:
        with self._transaction():
            self._conn.execute(
                "UPDATE notify_outbox SET sent_at = ?, attempts = attempts + 1, error = NULL "
                "WHERE id = ?",
                (time.time(), row_id),
            )

    def failed(self, row_id: int, error: str, next_at: float, give_up: bool) -> None:
        with self._transaction():
            self._conn.execute(
                "UPDATE notify_outbox SET attempts = attempts + 1, error = ?, next_at = ?, "
                "gave_up = ? WHERE id = ?",
                (error[:500], next_at, int(give_up), row_id),
            )

    def rows(self) -> list[dict[str, Any]]:
        """Every queued message with its delivery state (for views and tests)."""
        cursor = self._conn.execute(
            "SELECT id, event_id, channel, kind, run_id, attempts, sent_at, gave_up, error "
            "FROM notify_outbox ORDER BY id"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]


def opt_in(store: Store, run_id: str) -> None:
    """Ask for a run's notifications (`runs: opted_in`, the default)."""
    outbox = Outbox(store.path)
    try:
        outbox.opt_in(run_id)
    finally:
        outbox.close()
