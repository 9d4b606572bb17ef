"""What finished attempts left behind: their output listings and summary texts."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from scripthut.errors import NotFound
from scripthut.outputs import OutputListing


class ResultsStore:
    """Output listings, one row per attempt (mixed into `Store`, which owns the connection)."""

    _conn: sqlite3.Connection

    def save_outputs(self, rows: Sequence[tuple[str, str, int, OutputListing]]) -> None:
        """Record listings of (run, task, attempt); a listing made again replaces the last."""
        self._conn.executemany(
            "INSERT OR REPLACE INTO outputs (run_id, task_id, attempt, listing)"
            " VALUES (?, ?, ?, ?)",
            [(r, t, a, json.dumps(listing.to_json())) for r, t, a, listing in rows],
        )

    def outputs(self, run_id: str, task_id: str, attempt: int) -> OutputListing:
        row = self._conn.execute(
            "SELECT listing FROM outputs WHERE run_id = ? AND task_id = ? AND attempt = ?",
            (run_id, task_id, attempt),
        ).fetchone()
        if row is None:
            raise NotFound(
                f"task '{task_id}' of run '{run_id}': attempt {attempt} lists no outputs"
            )
        return OutputListing.from_json(json.loads(row[0]))

    def attempt_caches(
        self, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], tuple[str, str]]:
        """The result-cache key and input hashes recorded with each of these attempts."""
        out: dict[tuple[str, str, int], tuple[str, str]] = {}
        for key in keys:
            row = self._conn.execute(
                "SELECT cache FROM attempts WHERE run_id = ? AND task_id = ? AND attempt = ?",
                key,
            ).fetchone()
            cache = json.loads(row[0]) if row and row[0] else None
            if isinstance(cache, dict) and cache.get("key"):
                out[key] = (str(cache["key"]), str(cache.get("inputs") or ""))
        return out

    def save_manifests(self, rows: Sequence[tuple[str, str, int, dict[str, Any]]]) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO manifests (run_id, task_id, attempt, manifest)"
            " VALUES (?, ?, ?, ?)",
            [(r, t, a, json.dumps(m)) for r, t, a, m in rows],
        )

    def manifest(self, run_id: str, task_id: str) -> dict[str, Any]:
        """The latest manifest of a task (its last attempt, or the cache hit)."""
        row = self._conn.execute(
            "SELECT manifest FROM manifests WHERE run_id = ? AND task_id = ? "
            "ORDER BY attempt DESC LIMIT 1",
            (run_id, task_id),
        ).fetchone()
        if row is None:
            raise NotFound(
                f"task '{task_id}' of run '{run_id}' has no manifest (it declares no inputs or "
                "outputs, or has not finished)"
            )
        manifest: dict[str, Any] = json.loads(row[0])
        return manifest

    def run_outputs(self, run_id: str) -> list[tuple[str, int, OutputListing]]:
        """The latest listed attempt of every task of the run, by task id."""
        rows = self._conn.execute(
            "SELECT task_id, MAX(attempt), listing FROM outputs WHERE run_id = ? "
            "GROUP BY task_id ORDER BY task_id",
            (run_id,),
        )
        return [(t, a, OutputListing.from_json(json.loads(text))) for t, a, text in rows]
