"""The state every part of the engine shares, and how a step's changes are committed and
published: persisted first (task rows, attempt rows, one event per change and one run
summary per touched run), then published on the EventBus."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any

from scripthut.backends.base import Backend
from scripthut.backends.registry import BackendRegistry
from scripthut.config import Config
from scripthut.engine.events import EventBus
from scripthut.engine.state import (
    ActiveRun,
    BackendSlot,
    Changes,
    attempt_key,
    task_key,
)
from scripthut.notify.notifier import Notifier
from scripthut.states import RunState, TaskState
from scripthut.store import (
    RunRecord,
    Store,
    StoreWorker,
    drop_resident,
)

log = logging.getLogger("scripthut.engine")


class EngineCore:
    """Shared state of one engine; every method runs on the event loop's thread."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        registry: BackendRegistry | None = None,
        min_poll_interval: float = 1.0,
    ) -> None:
        self.config = config
        self.store = store
        self.registry = registry or BackendRegistry(config)
        self.events = EventBus()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.min_poll_interval = min_poll_interval
        self.max_poll_interval = float(max(config.settings.poll_interval, min_poll_interval))
        self.runs: dict[str, ActiveRun] = {}
        self.slots: dict[str, BackendSlot] = {}
        self.stranded: dict[str, str] = {}  # run id -> why no backend can drive it
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_command = 0
        self._errors_logged: dict[str, float] = {}
        self.reader = StoreWorker(store.path, "scripthut-engine-store")  # reads off the loop
        self._in_steps: set[str] = set()  # runs changed in steps: no job picked or cancelled
        # Set when this engine stops driving without being asked by its host (lease lost, or
        # handed over to a standalone engine, named by `handover_to`); the host then stops it.
        self.released = asyncio.Event()
        self.handover_to: dict[str, Any] | None = None
        self.yields_to_daemon = False  # a server-hosted engine in `auto` mode hands over
        self._notifier: Notifier | None = None
        self._notify_task: asyncio.Task[None] | None = None

    def _slot(self, backend: Backend) -> BackendSlot:
        slot = self.slots.get(backend.name)
        if slot is None:
            slot = self.slots[backend.name] = BackendSlot(backend, interval=self.min_poll_interval)
        return slot

    def _cancel_requested(self, run_id: str) -> bool:
        run = self.runs.get(run_id)
        return run is not None and run.record.cancel_requested

    def _fail_task(self, run: ActiveRun, task_id: str, reason: str, changes: Changes) -> None:
        now = time.time()
        changes.task(run.record.id, task_id, state=TaskState.FAILED, reason=reason, ended_at=now)
        for dep in run.graph.set_state(task_id, TaskState.FAILED):
            changes.task(
                run.record.id,
                dep,
                state=TaskState.DEP_FAILED,
                reason=f"dependency '{task_id}' did not complete",
                ended_at=now,
            )

    def _commit(self, changes: Changes) -> None:
        """Persist a step's changes (with one summary event per touched run), then publish."""
        if not changes:
            return
        finished = self._settle_runs(changes.runs_touched)
        summaries = [
            ("run", run_id, None, self._run_summary(self.runs[run_id]))
            for run_id in sorted(changes.runs_touched)
            if run_id in self.runs
        ]
        with self.store.transaction():
            self.store.update_tasks(sorted(changes.tasks, key=task_key))
            self.store.update_attempts(sorted(changes.attempts, key=attempt_key))
            for run in finished:
                self.store.update_run(
                    run.record.id, state=run.record.state, ended_at=run.record.ended_at
                )
            records = self.store.append_events([*changes.events, *summaries])
        for run in finished:
            del self.runs[run.record.id]
            drop_resident(id(run))
        self.events.publish(records)

    def _settle_runs(self, run_ids: Iterable[str]) -> list[ActiveRun]:
        """Runs whose every task is final get their final state (persisted by the caller)."""
        finished = []
        for run_id in run_ids:
            run = self.runs.get(run_id)
            if run is None or not run.graph.finished:
                continue
            if run.record.cancel_requested:
                run.record.state = RunState.CANCELLED
            elif run.graph.counts[TaskState.COMPLETED] == len(run.graph.nodes):
                run.record.state = RunState.COMPLETED
            else:
                run.record.state = RunState.FAILED
            run.record.ended_at = time.time()
            finished.append(run)
        return finished

    def _finish_runs(self, run_ids: Iterable[str]) -> None:
        """Settle and persist runs that became final outside a step (all tasks cancelled)."""
        for run in self._settle_runs(list(run_ids)):
            self.store.update_run(
                run.record.id, state=run.record.state, ended_at=run.record.ended_at
            )
            self._publish_run(run)
            del self.runs[run.record.id]
            drop_resident(id(run))

    def _publish_run(self, run: ActiveRun) -> None:
        summary = ("run", run.record.id, None, self._run_summary(run))
        self.events.publish(self.store.append_events([summary]))

    @staticmethod
    def _run_summary(run: ActiveRun) -> dict[str, Any]:
        return {
            "state": run.record.state.value,
            "counts": {s.value: n for s, n in run.graph.counts.items() if n},
            "total": len(run.graph.nodes),
            "started_at": run.record.started_at,
            "ended_at": run.record.ended_at,
            "message": run.record.message,
        }

    def _publish_run_created(self, record: RunRecord) -> None:
        data = {"state": record.state.value, "name": record.name, "backend": record.backend}
        self.events.publish(self.store.append_events([("run_created", record.id, None, data)]))

    def _set_message(self, record: RunRecord, message: str | None) -> None:
        if record.message == message:
            return
        record.message = message
        self.store.update_run(record.id, message=message)
        data = {"state": record.state.value, "message": message}
        self.events.publish(self.store.append_events([("run", record.id, None, data)]))

    def _start_notifier(self) -> None:
        """Send `notifications:` of scripthut.yaml from committed events (lease holder only)."""
        settings = self.config.notifications
        if settings is None or not (settings.email or settings.webhooks):
            return
        self._notifier = Notifier(settings, self.store)
        self._notify_task = asyncio.create_task(self._notifier.run(), name="scripthut-notify")

    async def _stop_notifier(self) -> None:
        task, self._notify_task = self._notify_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=5)
        if self._notifier is not None:
            self._notifier.close()
            self._notifier = None

    def _lease_lost(self) -> None:
        log.error("lost the engine lease on %s: this engine stops driving it", self.store.path)
        self._stop_driving()

    def _handover(self, data: dict[str, Any]) -> None:
        """A standalone engine asks for the lease: stop driving, and let the host grant it."""
        if not self.yields_to_daemon or data.get("owner") in (None, self.owner):
            log.info("a standalone engine asked for the lease; this engine keeps it")
            return
        log.info("handing the engine lease over to %s", data.get("owner"))
        self.handover_to = {k: data.get(k) for k in ("owner", "pid", "host")}
        self._stop_driving()

    def _stop_driving(self) -> None:
        self._stopping = True
        for slot in self.slots.values():
            if slot.task is not None:
                slot.task.cancel()
        self.released.set()

    def _log_error(self, key: str, message: str) -> None:
        """Log with traceback at most once a minute per key (a dead cluster is not a log flood)."""
        now = time.monotonic()
        if now - self._errors_logged.get(key, -1e9) >= 60:
            self._errors_logged[key] = now
            log.error(message, exc_info=sys.exc_info()[0] is not None)
        else:
            log.debug(message)
