"""What a task of a run shows: its detail, script, env, logs, outputs, manifest, and the
run's summary; the part of `ScriptHutService` behind `runs/{id}/tasks/...`. Each reads the
store (and, for logs and output files, the task's backend) and returns JSON-able data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scripthut.server import reads, results
from scripthut.server.logs import DEFAULT_LIMIT, read_log

if TYPE_CHECKING:
    from scripthut.backends.registry import BackendRegistry
    from scripthut.config import Config
    from scripthut.store import Store


class TaskReads:
    """A run's tasks as the API shows them."""

    if TYPE_CHECKING:

        def _ready(self) -> tuple[Config, Store]: ...

        def _registry(self) -> BackendRegistry: ...

    # -- tasks ----------------------------------------------------------------------------

    def task(self, run_id: str, task_id: str) -> dict[str, Any]:
        _, store = self._ready()
        return reads.task_detail(store, store.resolve_run_id(run_id), task_id)

    def script(self, run_id: str, task_id: str, attempt: int | None = None) -> str:
        _, store = self._ready()
        return reads.task_script(store, store.resolve_run_id(run_id), task_id, attempt)

    def env(self, run_id: str, task_id: str, attempt: int | None = None) -> dict[str, Any]:
        config, store = self._ready()
        run_id = store.resolve_run_id(run_id)
        return reads.task_env(store, config, self._registry(), run_id, task_id, attempt)

    async def logs(
        self,
        run_id: str,
        task_id: str,
        *,
        error: bool = False,
        tail: int | None = None,
        offset: int = 0,
        limit: int = DEFAULT_LIMIT,
        attempt: int | None = None,
    ) -> dict[str, Any]:
        """Part of the output (or error) log the store recorded for this task's attempt."""
        _, store = self._ready()
        run_id = store.resolve_run_id(run_id)
        store.task(run_id, task_id)
        record = store.attempt(run_id, task_id, attempt)
        head = {
            "run": run_id,
            "task": task_id,
            "attempt": record.attempt,
            "stream": "error" if error else "output",
            "final": record.state not in reads.OPEN_ATTEMPT_STATES,
        }
        if record.cached:
            return {**head, **reads.cached_log(record, offset)}
        path = record.stderr_path if error else record.stdout_path
        backend = self._registry().get(record.backend)
        read = await read_log(backend, path, offset=offset, tail=tail, limit=limit)
        return {**head, **read.to_json()}

    # -- what tasks wrote --------------------------------------------------------------------

    def outputs(self, run_id: str, task_id: str, attempt: int | None = None) -> dict[str, Any]:
        _, store = self._ready()
        return results.outputs_json(store, store.resolve_run_id(run_id), task_id, attempt)

    async def output(
        self, run_id: str, task_id: str, path: str, attempt: int | None = None
    ) -> results.OutputContent:
        _, store = self._ready()
        run_id = store.resolve_run_id(run_id)
        return await results.read_output(store, self._registry(), run_id, task_id, path, attempt)

    def manifest(self, run_id: str, task_id: str) -> dict[str, Any]:
        _, store = self._ready()
        run_id = store.resolve_run_id(run_id)
        store.task(run_id, task_id)
        return store.manifest(run_id, task_id)

    def summary(self, run_id: str) -> dict[str, Any]:
        _, store = self._ready()
        return results.summary_json(store, store.resolve_run_id(run_id))
