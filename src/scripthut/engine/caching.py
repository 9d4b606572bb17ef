"""The result cache in the engine: before a batch is submitted, the cacheable tasks' inputs
are hashed and their keys looked up (hits restored) in one script per backend; a hit
completes its task without the scheduler. After tasks complete, their outputs are stored in
one script per backend, and every finished task that declares inputs or outputs gets a
manifest. Any failure of the cache only means the task runs (or is not stored)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from scripthut.backends.base import JobStatus
from scripthut.backends.cache_store import (
    LOOKUP_SCRIPT,
    SAVE_SCRIPT,
    CacheReply,
    LookupRequest,
    SaveRequest,
    lookup_args,
    parse_reply,
    save_args,
    script_bytes,
)
from scripthut.config import Config
from scripthut.engine.ids import attempt_tag
from scripthut.engine.outages import Outages
from scripthut.engine.state import ActiveRun, BackendSlot, Changes, Tracked
from scripthut.states import RunState, TaskState
from scripthut.store import AttemptRecord
from scripthut.workflow.caching import key_prefix
from scripthut.workflow.model import TaskSpec

Pick = tuple[ActiveRun, str]
REMOTE_CACHE_DIR = "~/.cache/scripthut/results"


def cache_root(config: Config, backend: str) -> str:
    """The store of a backend: the configured directory (or bucket), else `<data_dir>/cache`
    where the backend shares this file system, else `~/.cache/scripthut/results` there."""
    if config.cache.directory:
        return config.cache.directory
    if config.shares_filesystem(backend):
        return str(config.data_dir / "cache")
    return REMOTE_CACHE_DIR


def sums_map(lines: str) -> dict[str, str]:
    """`sha256sum` lines as path -> hash."""
    out: dict[str, str] = {}
    for line in lines.splitlines():
        digest, _, path = line.partition("  ")
        if digest and path:
            out[path] = digest
    return out


def cached_attempt(
    run: ActiveRun, task_id: str, attempt: int, key: str, inputs: str, now: float
) -> AttemptRecord:
    """The attempt of a task the result cache completed: no job, script or log files."""
    return AttemptRecord(
        run_id=run.record.id,
        task_id=task_id,
        attempt=attempt,
        tag=attempt_tag(run.record.id, run.seqs[task_id], attempt),
        backend=run.record.backend,
        state=TaskState.COMPLETED.value,
        script="",
        env={},
        stdout_path="",
        stderr_path="",
        exit_path="",
        script_path="",
        time_limit_s=0,
        created_at=now,
        started_at=now,
        ended_at=now,
        exit_code=0,
        reason=f"restored from cache {key}",
        cache={"key": key, "scope": run.specs[task_id].cache_scope, "inputs": inputs, "hit": True},
    )


class Caching(Outages):
    _cache_keys: dict[tuple[str, str], tuple[str, str]]

    def _cacheable(self, run: ActiveRun, spec: TaskSpec) -> bool:
        return bool(
            spec.outputs
            and spec.cache
            and self.config.cache.enabled
            and not run.record.document.get("no_cache")
        )

    def _prefix(self, run: ActiveRun, spec: TaskSpec) -> str:
        env, _ = run.context.resolved(spec)
        return key_prefix(
            command=spec.command,
            notebook=spec.notebook,
            parameters=spec.parameters,
            env=env.as_dict(),
            commit=run.record.document.get("git", {}).get("sha"),
            scope=spec.cache_scope,
        )

    async def _cache_hits(self, slot: BackendSlot, picks: list[Pick]) -> list[Pick]:
        """The picks left to submit; hits are restored and completed here. The keys of the
        others wait in memory only until `_launch` records their attempts (`_with_cache`)."""
        if not hasattr(self, "_cache_keys"):
            self._cache_keys = {}
        asked = [(run, t) for run, t in picks if self._cacheable(run, run.specs[t])]
        if not asked:
            return picks
        requests = [
            LookupRequest(
                str(i),
                run.context.working_dir(run.specs[t]),
                self._prefix(run, run.specs[t]),
                run.specs[t].inputs,
            )
            for i, (run, t) in enumerate(asked)
        ]
        script = script_bytes(
            LOOKUP_SCRIPT, lookup_args(cache_root(self.config, slot.backend.name), requests, True)
        )
        reply = await self._run_store(slot, script)
        if reply is None:
            return picks
        hits: set[tuple[str, str]] = set()
        changes = Changes()
        with self.store.transaction():
            for i, (run, task_id) in enumerate(asked):
                key = reply.keys.get(str(i))
                if key is None:
                    continue
                inputs = reply.inputs.get(str(i), "")
                if str(i) not in reply.hits:
                    self._cache_keys[(run.record.id, task_id)] = (key, inputs)
                    continue
                hits.add((run.record.id, task_id))
                made = reply.saved.get(str(i), "")
                self._complete_cached(run, task_id, key, inputs, made, changes)
            self._commit(changes)
        if hits:
            slot.wake.set()  # their dependents may be ready now
        return [(run, t) for run, t in picks if (run.record.id, t) not in hits]

    def _with_cache(self, record: AttemptRecord) -> AttemptRecord:
        """An attempt about to be recorded, with the key its lookup found: kept in the store
        (not in memory) so an engine restarted before the task completes still stores it."""
        known = getattr(self, "_cache_keys", {}).pop((record.run_id, record.task_id), None)
        run = self.runs.get(record.run_id)
        if known is not None and run is not None:
            scope = run.specs[record.task_id].cache_scope
            record.cache = {"key": known[0], "scope": scope, "inputs": known[1]}
        return record

    async def _run_store(self, slot: BackendSlot, script: bytes) -> CacheReply | None:
        try:
            data = await slot.backend.run_store_script(script)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log_error(slot.backend.name, f"result cache unavailable: {exc}")
            return None
        return None if data is None else parse_reply(data)

    def _complete_cached(
        self, run: ActiveRun, task_id: str, key: str, inputs: str, made: str, changes: Changes
    ) -> None:
        now = time.time()
        spec = run.specs[task_id]
        attempt = run.attempts.get(task_id, 0) + 1
        run.attempts[task_id] = attempt
        self.store.insert_attempts([cached_attempt(run, task_id, attempt, key, inputs, now)])
        reason = f"cached: outputs restored from the result cache (key {key[:12]})"
        changes.task(
            run.record.id,
            task_id,
            state=TaskState.COMPLETED,
            attempt=attempt,
            job_id=None,
            exit_code=0,
            reason=reason,
            submitted_at=None,
            started_at=now,
            ended_at=now,
        )
        run.graph.set_state(task_id, TaskState.COMPLETED)
        if run.record.state == RunState.PENDING:
            run.record.state = RunState.RUNNING
            run.record.started_at = now
            self.store.update_run(run.record.id, state=RunState.RUNNING, started_at=now)
        manifest = self._manifest(run, spec, key, inputs, made, hit=True, stored=True)
        manifest["exit_code"] = 0
        manifest["timing"] = {"submitted_at": None, "started_at": now, "ended_at": now}
        self.store.save_manifests([(run.record.id, task_id, attempt, manifest)])

    async def _store_outputs(
        self, slot: BackendSlot, done: list[tuple[Tracked, TaskState, JobStatus]]
    ) -> list[tuple[Tracked, dict[str, Any]]]:
        """Store the outputs of completed cacheable tasks (one script); manifests for every
        finished task that declares inputs or outputs. Returns manifests by attempt tag."""
        saves: list[SaveRequest] = []
        known_keys = self.store.attempt_caches([t.key for t, _, _ in done if self._declares(t)])
        wanted: list[tuple[Tracked, ActiveRun, TaskSpec, JobStatus]] = []
        for tracked, state, status in done:
            run = self.runs.get(tracked.run_id)
            if run is None:
                continue
            spec = run.specs[tracked.task_id]
            if not (spec.inputs or spec.outputs):
                continue
            wanted.append((tracked, run, spec, status))
            known = known_keys.get(tracked.key)
            store = known and state == TaskState.COMPLETED and self._cacheable(run, spec)
            if spec.outputs:
                key, inputs = known if store and known else ("-", "")
                wd = run.context.working_dir(spec)
                saves.append(SaveRequest(tracked.ref.tag, wd, key, inputs, spec.outputs))
        reply = CacheReply()
        if saves:
            got = await self._run_store(
                slot,
                script_bytes(
                    SAVE_SCRIPT, save_args(cache_root(self.config, slot.backend.name), saves)
                ),
            )
            reply = got or reply
        out: list[tuple[Tracked, dict[str, Any]]] = []
        for tracked, run, spec, status in wanted:
            key, inputs = known_keys.get(tracked.key, ("", ""))
            stored = tracked.ref.tag in reply.saved
            made = reply.saved.get(tracked.ref.tag) or reply.hashed.get(tracked.ref.tag, "")
            manifest = self._manifest(run, spec, key, inputs, made, hit=False, stored=stored)
            manifest["executor"]["job_id"] = tracked.ref.job_id
            manifest["exit_code"] = status.exit_code
            manifest["timing"] = {
                "submitted_at": tracked.ref.submitted_at or None,
                "started_at": status.started_at or tracked.started_at,
                "ended_at": status.ended_at or time.time(),
            }
            out.append((tracked, manifest))
        return out

    def _declares(self, tracked: Tracked) -> bool:
        """The task declares outputs (only those can have a cache key)."""
        run = self.runs.get(tracked.run_id)
        return run is not None and bool(run.specs[tracked.task_id].outputs)

    def _manifest(
        self,
        run: ActiveRun,
        spec: TaskSpec,
        key: str,
        inputs: str,
        outputs: str,
        *,
        hit: bool,
        stored: bool,
    ) -> dict[str, Any]:
        git = run.record.document.get("git", {})
        return {
            "manifest_version": 1,
            "task": {
                "id": spec.id,
                "name": spec.name,
                "command": spec.command,
                "notebook": spec.notebook,
            },
            "inputs": sums_map(inputs),
            "outputs": sums_map(outputs),
            "cache": {"key": key or None, "scope": spec.cache_scope, "hit": hit, "stored": stored},
            "executor": {
                "backend": run.record.backend,
                "kind": run.context.backend.kind,
                "job_id": None,
            },
            "run": {"id": run.record.id, "name": run.record.name, "commit": git.get("sha")},
        }
