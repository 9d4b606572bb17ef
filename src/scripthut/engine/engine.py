"""The engine: releases ready tasks, submits them in batches, polls each backend once per
cycle, persists every change before acting on it, and publishes events.

Each backend has its own loop (a slow cluster never delays the local machine). All
state lives in one asyncio thread, so loops share it without locks; after every
`await` a loop re-checks that what it is about to change is still current.

Crash safety: a submission is recorded as an intent (attempt row with a unique tag)
before the backend is asked; after a crash, intents are looked up on the backend by
tag (`Backend.find`) and only resubmitted when the backend says they are not there.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from scripthut.backends.base import JobStatus
from scripthut.backends.registry import AVAILABLE_TYPES
from scripthut.config import Config
from scripthut.engine.create import record_run
from scripthut.engine.jobs import RunContext
from scripthut.engine.loading import LoadedRun, load_run
from scripthut.engine.polling import Polling
from scripthut.engine.reload import Reloading, ReloadPlan, plan_reload
from scripthut.engine.state import (
    ActiveRun,
    BackendSlot,
    Changes,
    Intent,
    Tracked,
    is_backend_notice,
    ref_from,
    spec_from,
)
from scripthut.engine.submission import Submission
from scripthut.env_rules import EnvRule
from scripthut.errors import (
    BackendUnavailable,
    LeaseHeld,
    ScriptHutError,
)
from scripthut.states import RunState, TaskState
from scripthut.store import (
    RunRecord,
    TaskRecord,
    drop_resident,
    keep_resident,
)
from scripthut.workflow.model import TaskSpec, Workflow

log = logging.getLogger("scripthut.engine")

LEASE_TTL = 20.0
LEASE_RENEW = 5.0
COMMAND_CHECK = 0.5
EVENTS_KEPT = 200_000
CANCEL_CHUNK = 250  # tasks cancelled (or rerun) per transaction; the loop runs between


class Engine(Reloading, Submission, Polling):
    """Drives every unfinished run of one data directory.

    Its parts are mixins over one shared state (`EngineCore`): `Outages`, `Submission`,
    `Polling` and `Reloading`; this class holds the lifecycle, the public operations and
    the loops."""

    async def start(self) -> None:
        """Take the lease, load unfinished runs and their jobs, start the loops."""
        if not self.store.acquire_lease(self.owner, LEASE_TTL):
            holder = self.store.lease_holder() or {}
            raise LeaseHeld(
                f"another engine drives {self.store.path} "
                f"(pid {holder.get('pid')} on {holder.get('host')})"
            )
        self._last_command = -1  # requests left by processes while no engine ran are taken too
        for record in self.store.unfinished_runs():
            self._activate(record, loaded=await self._load_off_loop(record))
        self._adopt_open_attempts()
        self._watch_configured_backends()
        self._main = asyncio.create_task(self._main_loop(), name="scripthut-engine")
        self._start_notifier()
        for slot in self.slots.values():
            self._ensure_loop(slot)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the loops (jobs keep running on their backends) and release the lease."""
        self._stopping = True
        tasks = [t for t in [self._main, *(s.task for s in self.slots.values())] if t]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        await self._stop_notifier()
        try:
            await asyncio.wait_for(self.registry.close(), timeout)
        except TimeoutError:
            log.warning("backends did not close within %.0f s", timeout)
        await asyncio.to_thread(self.reader.close)
        for run in self.runs.values():
            drop_resident(id(run))
        self.store.release_lease(self.owner)

    async def reload(self, config: Config) -> ReloadPlan:
        """Use a new configuration without a restart (see engine/reload.py): new backends are
        polled, removed ones are not (their runs stranded), a backend whose connection
        changed is reached anew, limits and env rules apply to what is not yet submitted."""
        plan = plan_reload(self.config, config)
        self.config = self.registry.config = config
        self.max_poll_interval = float(max(config.settings.poll_interval, self.min_poll_interval))
        for name in plan.removed:
            await self._retire_slot(name)
        for name in plan.reconnected:
            await self._reconnect(name)
        self._resize(plan.resized)
        self._rebuild_contexts()
        self._watch_configured_backends()
        await self._revive_stranded(set(plan.added))
        for slot in self.slots.values():
            self._ensure_loop(slot)
        return plan

    async def _revive_stranded(self, revived: set[str]) -> None:
        """Stranded runs whose backend is configured again are driven; the jobs of backends
        that had no slot are adopted from their open attempts, as after a restart."""
        configured, had_slot = {b.name for b in self.config.backends}, set(self.slots)
        for run_id in list(self.stranded):
            record = self.store.get_run(run_id)
            if record.state.is_final or record.backend not in configured:
                continue
            if self._activate(record, loaded=await self._load_off_loop(record)) is not None:
                revived |= {record.backend} - had_slot
        self._adopt_open_attempts(revived)

    def submit(
        self,
        workflow: Workflow,
        *,
        backend: str | None = None,
        name: str | None = None,
        max_concurrent: int | None = None,
        source: str | None = None,
        base_dir: str | None = None,
        workflow_env: Sequence[EnvRule] = (),
        provenance: Mapping[str, Any] | None = None,
        no_cache: bool = False,
    ) -> RunRecord:
        """Record a new run and start driving it. Invalid input raises before anything is stored."""
        new = record_run(
            self.store,
            self.config,
            workflow,
            backend=backend,
            name=name,
            max_concurrent=max_concurrent,
            source=source,
            base_dir=base_dir,
            workflow_env=workflow_env,
            provenance=provenance,
            no_cache=no_cache,
        )
        self._publish_run_created(new.run)
        self._activate(new.run, new.tasks, {t.id: t for t in workflow.tasks})
        self._ensure_loop(self.slots[new.run.backend])
        return new.run

    async def load(self, run_id: str) -> RunRecord:
        """Start driving a run recorded in the store (by another process or a worker thread).

        Its tasks are read and parsed off the loop; only adopting them happens here."""
        record = self.store.get_run(run_id)
        if run_id in self.runs or record.state.is_final:
            return record
        loaded = await self._load_off_loop(record)
        if run_id in self.runs or self._stopping:
            return record
        self._publish_run_created(record)
        if self._activate(record, loaded=loaded) is not None:
            self._ensure_loop(self.slots[record.backend])
        return record

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel pending tasks now and ask backends to cancel running ones."""
        run = self.runs.get(run_id)
        if run is None:
            if run_id in self.stranded:
                return self._cancel_stranded(run_id)
            return self.store.get_run(run_id)
        run.record.cancel_requested = True
        self.store.update_run(run_id, cancel_requested=True)
        task_ids = list(run.graph.nodes)  # cancel_pending keeps the pending, not in flight
        self._in_steps.add(run_id)  # its running jobs are cancelled once nothing is pending
        try:
            for first in range(0, len(task_ids), CANCEL_CHUNK):
                if first:
                    await asyncio.sleep(0)  # a large run is cancelled in steps, the loop free
                    if self.runs.get(run_id) is not run or not run.record.cancel_requested:
                        break
                changes = Changes()
                now = time.time()
                for task_id in run.graph.cancel_pending(task_ids[first : first + CANCEL_CHUNK]):
                    changes.task(
                        run_id,
                        task_id,
                        state=TaskState.CANCELLED,
                        reason="run cancelled",
                        ended_at=now,
                    )
                self._commit(changes)
        finally:
            self._in_steps.discard(run_id)
        slot = self.slots[run.record.backend]
        if slot.down_since is not None:
            self._abandon_cancelled(slot)
        else:
            slot.wake.set()  # the backend's loop sends the cancels
        self._finish_runs([run_id])
        return run.record

    async def rerun(self, run_id: str) -> RunRecord:
        """Failed, cancelled and dep_failed tasks run again as new attempts."""
        run = self.runs.get(run_id)
        again: list[str] | None = None
        if run is None:
            record = self.store.get_run(run_id)
            loaded = await self.reader.call(
                lambda store: load_run(store, run_id, rerun=True), heavy=True
            )
            run = self.runs.get(run_id)
            if run is None:  # the DAG was reset for the rerun in the reader thread too
                activated = self._activate(record, loaded=loaded)
                if activated is None:
                    raise BackendUnavailable(self.stranded[run_id])
                run, again = activated, loaded.again
        if again is None:
            again = run.graph.rerun()
        if not again:
            if run.record.state.is_final:
                del self.runs[run_id]
                drop_resident(id(run))
            return run.record
        run.record.cancel_requested = False
        run.record.state = RunState.RUNNING if run.record.started_at else RunState.PENDING
        run.record.ended_at = None
        self.store.update_run(
            run_id, cancel_requested=False, state=run.record.state, ended_at=None, message=None
        )
        self._in_steps.add(run_id)  # none of its tasks is picked before all are committed
        try:
            for first in range(0, len(again), CANCEL_CHUNK):
                if first:
                    await asyncio.sleep(0)  # a large rerun is committed in steps, the loop free
                    if self.runs.get(run_id) is not run:
                        break
                self._commit_rerun(run, again[first : first + CANCEL_CHUNK])
        finally:
            self._in_steps.discard(run_id)
        self._publish_run(run)
        slot = self.slots[run.record.backend]
        self._ensure_loop(slot)
        slot.wake.set()
        return run.record

    def _commit_rerun(self, run: ActiveRun, task_ids: list[str]) -> None:
        changes = Changes()
        for task_id in task_ids:
            if run.graph.nodes[task_id].state != TaskState.PENDING:
                continue  # changed since (cancelled again while the rerun was committed)
            changes.task(
                run.record.id,
                task_id,
                state=TaskState.PENDING,
                reason=None,
                exit_code=None,
                job_id=None,
                submitted_at=None,
                started_at=None,
                ended_at=None,
            )
        self._commit(changes)

    async def cancel_job(self, backend: str, job_id: str) -> None:
        """Cancel one job by backend id (a ScriptHut job or one of the user's own)."""
        for slot in self.slots.values():
            for tracked in slot.tracked.values():
                if slot.backend.name == backend and tracked.ref.job_id == job_id:
                    tracked.cancel_sent = True
        await self.registry.get(backend).cancel([job_id])

    async def wait(self, run_id: str, timeout: float | None = None) -> RunRecord:
        """Until the run is final (completed, failed or cancelled)."""
        subscription = self.events.subscribe()
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                record = (
                    self.runs[run_id].record if run_id in self.runs else self.store.get_run(run_id)
                )
                if record.state.is_final:
                    return record
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"run {run_id} still {record.state.value}")
                await subscription.get(timeout=min(left, 1.0) if left is not None else 1.0)
                subscription.get_nowait()
                subscription.resume()
        finally:
            subscription.close()

    def external_jobs(self) -> dict[str, list[JobStatus] | None]:
        return {name: slot.external for name, slot in self.slots.items()}

    def _activate(
        self,
        record: RunRecord,
        tasks: list[TaskRecord] | None = None,
        specs: dict[str, TaskSpec] | None = None,
        loaded: LoadedRun | None = None,
    ) -> ActiveRun | None:
        """Drive a run; None (the run stranded, with its reason) when its backend is gone."""
        try:
            backend = self.registry.get(record.backend)
        except ScriptHutError as exc:
            self._strand(record, exc)
            return None
        self.stranded.pop(record.id, None)
        if loaded is None:
            loaded = load_run(self.store, record.id, tasks, specs)
        context = RunContext.for_run(self.config.for_folder(record.config_dir), backend, record)
        run = ActiveRun(
            record=record,
            graph=loaded.graph,
            specs=loaded.specs,
            seqs=loaded.seqs,
            attempts=loaded.attempts,
            context=context,
            next_seq=loaded.next_seq,
        )
        self.runs[record.id] = run
        keep_resident(id(run), len(run.graph.nodes))  # a large DAG stays out of full collections
        slot = self._slot(backend)
        if record.id not in slot.runs:
            slot.runs.append(record.id)
        self._cascade_on_load(run, loaded.doomed)
        if is_backend_notice(record.message):
            self._set_message(record, None)
        return run

    async def _load_off_loop(self, record: RunRecord) -> LoadedRun:
        """Read a run's tasks, parse their specs and build its DAG in the reader thread."""
        return await self.reader.call(lambda store: load_run(store, record.id), heavy=True)

    def _watch_configured_backends(self) -> None:
        """Every configured scheduler is polled from the start, so the user's own jobs on it
        are listed (and can be cancelled) before any run of ScriptHut uses it."""
        for entry in self.config.backends:
            if entry.type == "local" or entry.type not in AVAILABLE_TYPES:
                continue
            try:
                slot = self._slot(self.registry.get(entry.name))
            except ScriptHutError as exc:
                log.warning("backend '%s' is not watched: %s", entry.name, exc)
                continue
            if slot.external is None:
                slot.external = []

    def _cascade_on_load(self, run: ActiveRun, doomed: list[tuple[str, str]]) -> None:
        """A pending task whose dependency failed while no engine ran becomes dep_failed
        (found by `load_run`; committed here, as the run is adopted)."""
        changes = Changes()
        for task_id, root in doomed:
            changes.task(
                run.record.id,
                task_id,
                state=TaskState.DEP_FAILED,
                reason=f"dependency '{root}' did not complete",
            )
        self._commit(changes)

    def _adopt_open_attempts(self, backends: set[str] | None = None) -> None:
        """Jobs of open attempts (all, or those of `backends`) are tracked again."""
        for attempt in self.store.open_attempts():
            if backends is not None and attempt.backend not in backends:
                continue
            run = self.runs.get(attempt.run_id)
            if run is None:
                self._adopt_zombie(attempt)
                continue
            node = run.graph.nodes.get(attempt.task_id)
            if node is None or attempt.attempt < run.attempts.get(attempt.task_id, 0):
                continue
            run.attempts[attempt.task_id] = attempt.attempt
            slot = self.slots[attempt.backend]
            if attempt.state == "intent":
                run.graph._set_in_flight(node, True)
                slot.intents[attempt.tag] = Intent(
                    attempt.run_id, attempt.task_id, spec_from(attempt, run)
                )
                slot.needs_find = True
            else:
                slot.tracked[attempt.tag] = Tracked(
                    attempt.run_id,
                    attempt.task_id,
                    attempt.attempt,
                    ref_from(attempt),
                    TaskState(attempt.state),
                    started_at=attempt.started_at,
                )

    def _ensure_loop(self, slot: BackendSlot) -> None:
        if self._stopping or self._main is None:
            return
        if slot.task is None or slot.task.done():
            slot.task = asyncio.create_task(
                self._backend_loop(slot), name=f"scripthut-{slot.backend.name}"
            )
        slot.wake.set()

    async def _main_loop(self) -> None:
        next_lease = time.monotonic() + LEASE_RENEW
        next_prune = time.monotonic() + 600
        while True:
            try:
                now = time.monotonic()
                if now >= next_lease:
                    if not self.store.renew_lease(self.owner, LEASE_TTL):
                        self._lease_lost()
                        return
                    next_lease = now + LEASE_RENEW
                if now >= next_prune:
                    self.store.prune_events(EVENTS_KEPT)
                    next_prune = now + 600
                await self._take_commands()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log_error("main", "engine main loop step failed")
            await asyncio.sleep(COMMAND_CHECK)

    async def _take_commands(self) -> None:
        last = self.store.last_command_id()
        if last == self._last_command:
            return
        self._last_command = last
        for _id, kind, run_id, data in self.store.take_commands():
            try:
                await self._command(kind, run_id, data)
            except ScriptHutError as exc:
                log.warning("command %s for %s failed: %s", kind, run_id, exc)

    async def _command(self, kind: str, run_id: str | None, data: dict[str, Any]) -> None:
        if self._stopping:  # handed over: the next engine carries it out
            self.store.enqueue_command(kind, run_id, data)
        elif kind == "handover":
            self._handover(data)
        elif kind == "load" and run_id:
            await self.load(run_id)
        elif kind == "cancel" and run_id:
            await self.cancel(run_id)
        elif kind == "rerun" and run_id:
            await self.rerun(run_id)
        elif kind == "cancel_job":
            await self.cancel_job(str(data["backend"]), str(data["job_id"]))
        else:
            log.warning("unknown command %r", kind)

    async def _backend_loop(self, slot: BackendSlot) -> None:
        backoff = 1.0
        while not self._stopping:
            slot.wake.clear()
            try:
                if not slot.started:
                    await slot.backend.start()
                    slot.started = True
                await self._step(slot)
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except ScriptHutError as exc:
                self._down(slot, str(exc))
            except Exception:
                self._log_error(slot.backend.name, f"backend '{slot.backend.name}' step failed")
                await asyncio.sleep(backoff * (1 + random.random()))
                backoff = min(backoff * 2, 30.0)
                continue
            if not slot.active and not self._has_ready(slot):
                slot.runs = [r for r in slot.runs if r in self.runs]
            await self._wait(slot)

    async def _step(self, slot: BackendSlot) -> None:
        if slot.down_since is not None and time.monotonic() < slot.retry_at:
            return  # no traffic to an unreachable backend before its retry time
        if slot.needs_find and slot.intents:
            await self._reconcile(slot)
        if slot.zombies:
            await self._bury_zombies(slot)
        await self._send_cancels(slot)
        await self._submit_ready(slot)
        backend = slot.backend
        due = backend.changed.is_set() or time.monotonic() >= slot.next_poll
        if due and (slot.tracked or slot.external is not None):
            backend.changed.clear()
            changed = await self._poll(slot)
            slot.interval = (
                self.min_poll_interval
                if changed
                else min(slot.interval * 1.5, self.max_poll_interval)
            )
            slot.next_poll = time.monotonic() + slot.interval
            await self._submit_ready(slot)

    async def _wait(self, slot: BackendSlot) -> None:
        polling = slot.tracked or slot.external is not None
        timeout = max(0.0, slot.next_poll - time.monotonic()) if polling else None
        if slot.down_since is not None:
            timeout = max(0.0, slot.retry_at - time.monotonic())
        elif (slot.intents and slot.needs_find) or slot.zombies:
            timeout = min(timeout or 2.0, 2.0)
        waiters = [
            asyncio.create_task(slot.wake.wait()),
            asyncio.create_task(slot.backend.changed.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
