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
import json
import logging
import os
import random
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from scripthut.backends.base import Backend, JobPaths, JobRef, JobSpec, JobStatus, SubmitOutcome
from scripthut.backends.registry import AVAILABLE_TYPES, BackendRegistry
from scripthut.config import Config
from scripthut.engine.create import new_task_records, record_run
from scripthut.engine.events import EventBus
from scripthut.engine.graph import Node, RunGraph
from scripthut.engine.jobs import BuiltJob, RunContext
from scripthut.env_rules import EnvRule
from scripthut.errors import (
    BackendUnavailable,
    InvalidInput,
    LeaseHeld,
    NotFound,
    ScriptHutError,
)
from scripthut.states import JobState, RunState, TaskState
from scripthut.store import (
    AttemptRecord,
    RunRecord,
    Store,
    StoreWorker,
    TaskRecord,
    drop_resident,
    keep_resident,
    release,
)
from scripthut.store.store import AttemptKey
from scripthut.workflow.model import TaskSpec, Workflow
from scripthut.workflow.parse import parse_document, parse_generated

log = logging.getLogger("scripthut.engine")

LEASE_TTL = 20.0
LEASE_RENEW = 5.0
COMMAND_CHECK = 0.5
EVENTS_KEPT = 200_000
GENERATED_SOURCE_LIMIT = 64 << 20
RETRY_FIRST = 2.0  # seconds before an unreachable backend is tried again; doubles up to
RETRY_MAX = 60.0
CANCEL_CHUNK = 250  # tasks cancelled (or rerun) per transaction; the loop runs between

_JOB_TO_TASK = {
    JobState.PENDING: TaskState.SUBMITTED,
    JobState.RUNNING: TaskState.RUNNING,
    JobState.COMPLETED: TaskState.COMPLETED,
    JobState.FAILED: TaskState.FAILED,
    JobState.CANCELLED: TaskState.CANCELLED,
}


@dataclass(slots=True)
class ActiveRun:
    """A run the engine drives: its record, DAG state and task specs."""

    record: RunRecord
    graph: RunGraph
    specs: dict[str, TaskSpec]
    seqs: dict[str, int]
    attempts: dict[str, int]
    context: RunContext
    next_seq: int


@dataclass(slots=True)
class Tracked:
    """A job on a backend that belongs to a task of an active run."""

    run_id: str
    task_id: str
    attempt: int
    ref: JobRef
    state: TaskState
    started_at: float | None = None
    cancel_sent: bool = False

    @property
    def key(self) -> AttemptKey:
        return self.run_id, self.task_id, self.attempt


@dataclass(slots=True)
class Intent:
    """A submission recorded but not confirmed: the job may or may not exist."""

    run_id: str
    task_id: str
    spec: JobSpec


@dataclass(slots=True)
class Zombie:
    """A job that may exist for a task already final: its run was cancelled while the
    backend could not be reached. It is looked up (if its submission was never confirmed)
    and cancelled once the backend answers; its attempt row stays open until then."""

    run_id: str
    task_id: str
    attempt: int
    job_id: str | None  # None: the submission was never confirmed

    @property
    def key(self) -> AttemptKey:
        return self.run_id, self.task_id, self.attempt


@dataclass(slots=True)
class BackendSlot:
    """Per-backend loop state."""

    backend: Backend
    runs: list[str] = field(default_factory=list)
    tracked: dict[str, Tracked] = field(default_factory=dict)
    intents: dict[str, Intent] = field(default_factory=dict)
    needs_find: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    interval: float = 1.0
    next_poll: float = 0.0
    external: list[JobStatus] | None = None
    started: bool = False
    polls: int = 0
    task: asyncio.Task[None] | None = None
    zombies: dict[str, Zombie] = field(default_factory=dict)
    down_since: float | None = None  # wall time of the first failure in a row
    down_error: str = ""
    retry_delay: float = RETRY_FIRST
    retry_at: float = 0.0  # monotonic; no traffic to the backend before this while down

    @property
    def active(self) -> int:
        return len(self.tracked) + len(self.intents)


class Changes:
    """State changes gathered during one step, committed in one transaction."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, str, dict[str, Any]]] = []
        self.attempts: list[tuple[AttemptKey, dict[str, Any]]] = []
        self.events: list[tuple[str, str | None, str | None, dict[str, Any]]] = []
        self.runs_touched: set[str] = set()

    def task(self, run_id: str, task_id: str, **fields: Any) -> None:
        self.tasks.append((run_id, task_id, fields))
        data = {k: (v.value if isinstance(v, TaskState) else v) for k, v in fields.items()}
        self.events.append(("task", run_id, task_id, data))
        self.runs_touched.add(run_id)

    def attempt(self, key: AttemptKey, **fields: Any) -> None:
        self.attempts.append((key, fields))

    def __bool__(self) -> bool:
        return bool(self.tasks or self.attempts or self.events)


class Engine:
    """Drives every unfinished run of one data directory."""

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

    # -- lifecycle ------------------------------------------------------------------------

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
        try:
            await asyncio.wait_for(self.registry.close(), timeout)
        except TimeoutError:
            log.warning("backends did not close within %.0f s", timeout)
        await asyncio.to_thread(self.reader.close)
        for run in self.runs.values():
            drop_resident(id(run))
        self.store.release_lease(self.owner)

    # -- public operations ----------------------------------------------------------------

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

    # -- activation -----------------------------------------------------------------------

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
        context = RunContext.for_run(self.config, backend, record)
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
        if _is_backend_notice(record.message):
            self._set_message(record, None)
        return run

    async def _load_off_loop(self, record: RunRecord) -> LoadedRun:
        """Read a run's tasks, parse their specs and build its DAG in the reader thread."""
        return await self.reader.call(lambda store: load_run(store, record.id), heavy=True)

    def _slot(self, backend: Backend) -> BackendSlot:
        slot = self.slots.get(backend.name)
        if slot is None:
            slot = self.slots[backend.name] = BackendSlot(backend, interval=self.min_poll_interval)
        return slot

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

    def _adopt_open_attempts(self) -> None:
        for attempt in self.store.open_attempts():
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
                    attempt.run_id, attempt.task_id, _spec_from(attempt, run)
                )
                slot.needs_find = True
            else:
                slot.tracked[attempt.tag] = Tracked(
                    attempt.run_id,
                    attempt.task_id,
                    attempt.attempt,
                    _ref_from(attempt),
                    TaskState(attempt.state),
                    started_at=attempt.started_at,
                )

    def _adopt_zombie(self, attempt: AttemptRecord) -> None:
        """An open attempt of a run that is final (or stranded): its job, if any, is to go."""
        if attempt.run_id in self.stranded:
            return
        try:
            slot = self._slot(self.registry.get(attempt.backend))
        except ScriptHutError:
            return
        job_id = attempt.job_id if attempt.state != "intent" else None
        slot.zombies[attempt.tag] = Zombie(attempt.run_id, attempt.task_id, attempt.attempt, job_id)

    def _ensure_loop(self, slot: BackendSlot) -> None:
        if self._stopping or self._main is None:
            return
        if slot.task is None or slot.task.done():
            slot.task = asyncio.create_task(
                self._backend_loop(slot), name=f"scripthut-{slot.backend.name}"
            )
        slot.wake.set()

    # -- loops ----------------------------------------------------------------------------

    async def _main_loop(self) -> None:
        next_lease = time.monotonic() + LEASE_RENEW
        next_prune = time.monotonic() + 600
        while True:
            try:
                now = time.monotonic()
                if now >= next_lease:
                    if not self.store.renew_lease(self.owner, LEASE_TTL):
                        log.error("lost the engine lease on %s", self.store.path)
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
        if kind == "load" and run_id:
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

    # -- submission -----------------------------------------------------------------------

    def _has_ready(self, slot: BackendSlot) -> bool:
        return any(self.runs[r].graph.ready for r in slot.runs if r in self.runs)

    def _pick(self, slot: BackendSlot) -> list[tuple[ActiveRun, str]]:
        capacity = slot.backend.max_concurrent - slot.active
        picks: list[tuple[ActiveRun, str]] = []
        runs = [self.runs[r] for r in slot.runs if r in self.runs]
        runs = [r for r in runs if r.graph.ready and not r.record.cancel_requested]
        runs = [r for r in runs if r.record.id not in self._in_steps]
        while capacity > len(picks) and runs:
            share = max(1, (capacity - len(picks)) // len(runs))
            for run in list(runs):
                room = (run.record.max_concurrent or 1 << 30) - run.graph.active
                taken = run.graph.take_ready(min(share, room, capacity - len(picks)))
                picks.extend((run, task_id) for task_id in taken)
                if not taken or not run.graph.ready:
                    runs.remove(run)
        return picks

    async def _submit_ready(self, slot: BackendSlot) -> None:
        picks = self._pick(slot)
        if picks:
            await self._launch(slot, picks)

    async def _launch(self, slot: BackendSlot, picks: list[tuple[ActiveRun, str]]) -> None:
        """Build the jobs, record them as intents, submit them in one batch."""
        changes = Changes()
        intents: list[AttemptRecord] = []
        built: list[tuple[ActiveRun, str, BuiltJob]] = []
        now = time.time()
        for run, task_id in picks:
            attempt = run.attempts.get(task_id, 0) + 1
            try:
                job = run.context.build(run.specs[task_id], run.seqs[task_id], attempt)
            except ScriptHutError as exc:
                self._fail_task(run, task_id, f"could not prepare the job: {exc}", changes)
                continue
            run.attempts[task_id] = attempt
            built.append((run, task_id, job))
            intents.append(_attempt_record(job, slot.backend.name, now))
        with self.store.transaction():
            self.store.insert_attempts(intents)
            self._commit(changes)
        for run, task_id, job in built:
            slot.intents[job.spec.tag] = Intent(run.record.id, task_id, job.spec)
        await self._submit(slot, [job.spec for _, _, job in built])

    async def _submit(self, slot: BackendSlot, specs: list[JobSpec]) -> None:
        if not specs:
            return
        try:
            outcomes = await slot.backend.submit(specs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            slot.needs_find = True
            self._down(slot, f"submission failed: {exc}")
            return
        self._up(slot)
        if len(outcomes) != len(specs):
            slot.needs_find = True
            log.error(
                "backend %s returned %d outcomes for %d jobs",
                slot.backend.name,
                len(outcomes),
                len(specs),
            )
            return
        self._record_submissions(slot, list(zip(specs, outcomes, strict=True)))

    def _record_submissions(
        self, slot: BackendSlot, results: Iterable[tuple[JobSpec, SubmitOutcome]]
    ) -> None:
        changes = Changes()
        now = time.time()
        for spec, outcome in results:
            intent = slot.intents.pop(spec.tag, None)
            run = self.runs.get(spec.run_id)
            if intent is None or run is None:
                continue
            if outcome.job_id is None:
                changes.attempt(
                    _key(spec), state=TaskState.FAILED.value, reason=outcome.error, ended_at=now
                )
                self._fail_task(run, spec.task_id, f"submission rejected: {outcome.error}", changes)
                continue
            changes.attempt(
                _key(spec), state=TaskState.SUBMITTED.value, job_id=outcome.job_id, submitted_at=now
            )
            changes.task(
                spec.run_id,
                spec.task_id,
                state=TaskState.SUBMITTED,
                job_id=outcome.job_id,
                attempt=spec.attempt,
                submitted_at=now,
                started_at=None,
                ended_at=None,
                exit_code=None,
                reason=None,
            )
            run.graph.set_state(spec.task_id, TaskState.SUBMITTED)
            ref = JobRef(outcome.job_id, spec.tag, spec.paths, spec.time_limit_s, now)
            slot.tracked[spec.tag] = Tracked(
                spec.run_id, spec.task_id, spec.attempt, ref, TaskState.SUBMITTED
            )
            if run.record.state == RunState.PENDING:
                run.record.state = RunState.RUNNING
                run.record.started_at = now
                self.store.update_run(run.record.id, state=RunState.RUNNING, started_at=now)
        self._commit(changes)
        slot.next_poll = min(slot.next_poll, time.monotonic() + self.min_poll_interval)
        slot.interval = self.min_poll_interval

    async def _reconcile(self, slot: BackendSlot) -> None:
        """Intents whose submission is unknown: adopt what the backend has, resubmit the rest."""
        tags = list(slot.intents)
        try:
            found = await slot.backend.find(tags)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._down(slot, f"looking up submitted jobs failed: {exc}")
            return
        if found is None:
            self._down(slot, "looking up submitted jobs failed")
            return
        self._up(slot)
        slot.needs_find = False
        present = [
            (slot.intents[t].spec, SubmitOutcome(job_id=found[t])) for t in tags if t in found
        ]
        self._record_submissions(slot, present)
        missing = [slot.intents[t].spec for t in tags if t not in found and t in slot.intents]
        if missing:
            log.info("resubmitting %d job(s) not found on '%s'", len(missing), slot.backend.name)
            await self._submit(slot, missing)

    async def _send_cancels(self, slot: BackendSlot) -> None:
        pending = [
            t
            for t in slot.tracked.values()
            if not t.cancel_sent
            and self._cancel_requested(t.run_id)
            and t.run_id not in self._in_steps
        ]
        if not pending:
            return
        try:
            await slot.backend.cancel([t.ref.job_id for t in pending])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._down(slot, f"cancel failed: {exc}")
            return
        for tracked in pending:
            tracked.cancel_sent = True
        slot.backend.changed.set()

    def _cancel_requested(self, run_id: str) -> bool:
        run = self.runs.get(run_id)
        return run is not None and run.record.cancel_requested

    # -- polling --------------------------------------------------------------------------

    async def _poll(self, slot: BackendSlot) -> bool:
        refs = [t.ref for t in slot.tracked.values()]
        slot.polls += 1
        try:
            result = await slot.backend.poll(refs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._down(slot, f"poll failed: {exc}")
            return False
        if not result.ok:
            self._down(slot, f"poll failed: {result.error}")
            return False
        self._up(slot)
        if result.external is not None:
            slot.external = result.external
        updates: list[tuple[Tracked, JobStatus, TaskState]] = []
        for tracked in slot.tracked.values():
            status = result.jobs.get(tracked.ref.job_id)
            if status is None or status.state == JobState.UNKNOWN:
                continue
            state = _JOB_TO_TASK[status.state]
            if (
                state.is_final
                and state != TaskState.COMPLETED
                and self._cancel_requested(tracked.run_id)
            ):
                state = TaskState.CANCELLED
            if state != tracked.state:
                updates.append((tracked, status, state))
        if updates:
            await self._apply(slot, updates)
        return bool(updates)

    async def _apply(
        self, slot: BackendSlot, updates: list[tuple[Tracked, JobStatus, TaskState]]
    ) -> None:
        changes = Changes()
        added: list[tuple[ActiveRun, Workflow, str]] = []
        now = time.time()
        for tracked, status, state in updates:
            run = self.runs.get(tracked.run_id)
            if run is None or slot.tracked.get(tracked.ref.tag) is not tracked:
                continue
            if state == TaskState.COMPLETED and run.specs[tracked.task_id].generates_source:
                outcome = await self._read_generated(run, tracked)
                if outcome is None:
                    continue  # unreadable for now: try again next poll
                if isinstance(outcome, str):
                    state = TaskState.FAILED
                    status = replace(status, state=JobState.FAILED, reason=outcome)
                else:
                    added.append((run, outcome, tracked.task_id))
            self._apply_one(run, slot, tracked, status, state, now, changes)
        with self.store.transaction():
            for run, workflow, parent in added:
                self._add_generated(run, workflow, parent, changes)
            self._commit(changes)

    def _apply_one(
        self,
        run: ActiveRun,
        slot: BackendSlot,
        tracked: Tracked,
        status: JobStatus,
        state: TaskState,
        now: float,
        changes: Changes,
    ) -> None:
        fields: dict[str, Any] = {"state": state}
        if state == TaskState.RUNNING or (state.is_final and tracked.started_at is None):
            tracked.started_at = status.started_at or now
            fields["started_at"] = tracked.started_at
        if state.is_final:
            fields["ended_at"] = status.ended_at or now
            fields["exit_code"] = status.exit_code
            fields["reason"] = status.reason if state != TaskState.COMPLETED else None
            del slot.tracked[tracked.ref.tag]
        tracked.state = state
        attempt_fields = {k: v for k, v in fields.items() if k != "state"}
        if state.is_final and status.efficiency:
            attempt_fields["efficiency"] = status.efficiency
        changes.attempt(
            tracked.key, state=state.value, raw_state=status.raw_state, **attempt_fields
        )
        changes.task(run.record.id, tracked.task_id, **fields)
        for task_id in run.graph.set_state(tracked.task_id, state):
            changes.task(
                run.record.id,
                task_id,
                state=TaskState.DEP_FAILED,
                reason=f"dependency '{tracked.task_id}' did not complete",
                ended_at=now,
            )

    async def _read_generated(self, run: ActiveRun, tracked: Tracked) -> Workflow | str | None:
        """The tasks a generates_source file adds; an error text; None when unreadable for now."""
        spec = run.specs[tracked.task_id]
        assert spec.generates_source is not None
        path = run.context.task_path(spec, spec.generates_source)
        try:
            text = await run.context.backend.read_text(path, limit=GENERATED_SOURCE_LIMIT)
        except (FileNotFoundError, NotFound):
            return f"generates_source file '{path}' was not written"
        except ScriptHutError as exc:
            self._log_error(run.context.backend.name, f"reading {path} failed: {exc}")
            return None
        except OSError as exc:
            return f"generates_source file '{path}' could not be read: {exc}"
        try:
            data = json.loads(text)
        except ValueError as exc:
            return f"generates_source file '{path}' is not valid JSON: {exc}"
        try:
            return parse_generated(data, existing_ids=run.graph.nodes.keys(), source=path)
        except InvalidInput as exc:
            return f"generates_source file '{path}' is invalid: {exc.render()}"

    def _add_generated(
        self, run: ActiveRun, workflow: Workflow, parent: str, changes: Changes
    ) -> None:
        records = new_task_records(run.record.id, workflow, run.next_seq, parent)
        self.store.add_tasks(records)
        run.next_seq += len(records)
        for record in records:
            run.seqs[record.task_id] = record.seq
            run.attempts[record.task_id] = 0
        run.specs.update({t.id: t for t in workflow.tasks})
        doomed = run.graph.add(Node(r.task_id, list(r.deps)) for r in records)
        changes.events.append(
            ("tasks_added", run.record.id, parent, {"tasks": [r.to_json() for r in records]})
        )
        changes.runs_touched.add(run.record.id)
        for task_id in doomed:
            changes.task(
                run.record.id,
                task_id,
                state=TaskState.DEP_FAILED,
                reason="a dependency did not complete",
            )
        self.slots[run.record.backend].wake.set()

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

    # -- commit and publish ---------------------------------------------------------------

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
            self.store.update_tasks(sorted(changes.tasks, key=_task_key))
            self.store.update_attempts(sorted(changes.attempts, key=_attempt_key))
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

    # -- outages: unreachable backends, stranded runs, jobs left to cancel -----------------

    def _down(self, slot: BackendSlot, error: str) -> None:
        """A call to the backend failed: one log line when it becomes unreachable, then
        retries with backoff; its runs say why they wait."""
        name = slot.backend.name
        if slot.down_since is None:
            slot.down_since = time.time()
            slot.retry_delay = RETRY_FIRST
            slot.down_error = error
            log.warning("backend '%s' unreachable: %s", name, error)
            notice = f"backend '{name}' unreachable since {_clock(slot.down_since)}: {error}"
            for run_id in slot.runs:
                if run_id in self.runs:
                    self._set_message(self.runs[run_id].record, notice)
        else:
            slot.retry_delay = min(slot.retry_delay * 2, RETRY_MAX)
            log.debug("backend '%s' still unreachable: %s", name, error)
        slot.retry_at = time.monotonic() + slot.retry_delay * random.uniform(0.8, 1.0)
        self._abandon_cancelled(slot)

    def _up(self, slot: BackendSlot) -> None:
        if slot.down_since is None:
            return
        log.info(
            "backend '%s' reachable again after %.0f s",
            slot.backend.name,
            time.time() - slot.down_since,
        )
        slot.down_since = None
        slot.down_error = ""
        for run_id in slot.runs:
            run = self.runs.get(run_id)
            if run is not None and _is_backend_notice(run.record.message):
                self._set_message(run.record, None)

    def _set_message(self, record: RunRecord, message: str | None) -> None:
        if record.message == message:
            return
        record.message = message
        self.store.update_run(record.id, message=message)
        data = {"state": record.state.value, "message": message}
        self.events.publish(self.store.append_events([("run", record.id, None, data)]))

    def _strand(self, record: RunRecord, exc: ScriptHutError) -> None:
        """A run whose backend is not configured (or has no driver) waits, saying why."""
        if isinstance(exc, NotFound):
            reason = f"backend '{record.backend}' is not configured"
        else:
            reason = str(exc)
        if self.stranded.get(record.id) != reason:
            log.warning("run %s is not driven: %s", record.id, reason)
        self.stranded[record.id] = reason
        self._set_message(record, reason)

    def _cancel_stranded(self, run_id: str) -> RunRecord:
        """Cancel a run no backend can drive: in the store alone, saying so."""
        reason = self.stranded.pop(run_id)
        now = time.time()
        changes = Changes()
        for task in self.store.tasks(run_id):
            if not task.state.is_final:
                changes.task(
                    run_id,
                    task.task_id,
                    state=TaskState.CANCELLED,
                    reason=f"run cancelled; {reason}",
                    ended_at=now,
                )
        for attempt in self.store.open_attempts():
            if attempt.run_id == run_id:
                changes.attempt(
                    (run_id, attempt.task_id, attempt.attempt),
                    state=TaskState.CANCELLED.value,
                    reason=f"{reason}: its job, if any, was not cancelled",
                    ended_at=now,
                )
        record = self.store.get_run(run_id)
        record.state, record.ended_at, record.cancel_requested = RunState.CANCELLED, now, True
        summary = {"state": record.state.value, "ended_at": now, "message": record.message}
        with self.store.transaction():
            self.store.update_tasks(sorted(changes.tasks, key=_task_key))
            self.store.update_attempts(sorted(changes.attempts, key=_attempt_key))
            self.store.update_run(run_id, state=record.state, ended_at=now, cancel_requested=True)
            events = self.store.append_events([*changes.events, ("run", run_id, None, summary)])
        self.events.publish(events)
        return record

    def _abandon_cancelled(self, slot: BackendSlot) -> None:
        """Tasks of cancelled runs whose jobs sit on an unreachable backend are cancelled now;
        their jobs (found first if never confirmed) are cancelled once it answers."""
        name = slot.backend.name
        changes = Changes()
        now = time.time()
        doomed: list[tuple[str, str, str, int, str | None]] = [
            (tag, i.run_id, i.task_id, i.spec.attempt, None)
            for tag, i in slot.intents.items()
            if self._cancel_requested(i.run_id)
        ] + [
            (tag, t.run_id, t.task_id, t.attempt, t.ref.job_id)
            for tag, t in slot.tracked.items()
            if self._cancel_requested(t.run_id)
        ]
        for tag, run_id, task_id, attempt, job_id in doomed:
            slot.intents.pop(tag, None)
            slot.tracked.pop(tag, None)
            slot.zombies[tag] = Zombie(run_id, task_id, attempt, job_id)
            what = "its job" if job_id else "a job found for its unconfirmed submission"
            reason = (
                f"run cancelled while backend '{name}' was unreachable; "
                f"{what} is cancelled when the backend answers"
            )
            changes.task(run_id, task_id, state=TaskState.CANCELLED, reason=reason, ended_at=now)
            self.runs[run_id].graph.set_state(task_id, TaskState.CANCELLED)
        self._commit(changes)
        self._finish_runs({run_id for _, run_id, _, _, _ in doomed})

    async def _bury_zombies(self, slot: BackendSlot) -> None:
        """Find the jobs of unconfirmed submissions of cancelled tasks, cancel every one."""
        unconfirmed = [tag for tag, z in slot.zombies.items() if z.job_id is None]
        changes = Changes()
        now = time.time()
        if unconfirmed:
            try:
                found = await slot.backend.find(unconfirmed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(slot, f"looking up submitted jobs failed: {exc}")
                return
            if found is None:
                return
            for tag in unconfirmed:
                if tag in found:
                    slot.zombies[tag].job_id = found[tag]
                    continue
                zombie = slot.zombies.pop(tag)
                changes.attempt(
                    zombie.key,
                    state=TaskState.CANCELLED.value,
                    reason="cancelled before its submission was confirmed; no job was found",
                    ended_at=now,
                )
        jobs = {tag: z for tag, z in slot.zombies.items() if z.job_id}
        if jobs:
            try:
                await slot.backend.cancel([z.job_id for z in jobs.values() if z.job_id])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._commit(changes)
                self._down(slot, f"cancel failed: {exc}")
                return
            for tag, zombie in jobs.items():
                del slot.zombies[tag]
                log.info(
                    "cancelled job %s of a cancelled run on '%s'", zombie.job_id, slot.backend.name
                )
                changes.attempt(
                    zombie.key,
                    state=TaskState.CANCELLED.value,
                    job_id=zombie.job_id,
                    reason="cancelled when the backend answered again",
                    ended_at=now,
                )
        self._commit(changes)

    def _log_error(self, key: str, message: str) -> None:
        """Log with traceback at most once a minute per key (a dead cluster is not a log flood)."""
        now = time.monotonic()
        if now - self._errors_logged.get(key, -1e9) >= 60:
            self._errors_logged[key] = now
            log.error(message, exc_info=sys.exc_info()[0] is not None)
        else:
            log.debug(message)


def _clock(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def _is_backend_notice(message: str | None) -> bool:
    """A run message the engine set about its backend (cleared when the backend is back)."""
    return (
        bool(message)
        and str(message).startswith("backend '")
        and (" unreachable since " in str(message) or str(message).endswith(" is not configured"))
    )


def _task_key(change: tuple[str, str, Mapping[str, Any]]) -> tuple[str, str]:
    return change[0], change[1]


def _attempt_key(change: tuple[AttemptKey, Mapping[str, Any]]) -> AttemptKey:
    return change[0]


def _key(spec: JobSpec) -> AttemptKey:
    return spec.run_id, spec.task_id, spec.attempt


def _parse_specs(run_id: str, specs: list[dict[str, Any]]) -> dict[str, TaskSpec]:
    """Task specs stored with a run, parsed again (their deps are stored expanded)."""
    workflow = parse_document(
        [{k: v for k, v in s.items() if k != "deps"} for s in specs], source=f"run {run_id}"
    )
    return {task.id: task for task in workflow.tasks}


@dataclass(slots=True)
class LoadedRun:
    """A run's tasks read, specs parsed and DAG built: nothing the engine shares yet, so it
    can be prepared in a worker thread and adopted on the loop."""

    graph: RunGraph
    specs: dict[str, TaskSpec]
    seqs: dict[str, int]
    attempts: dict[str, int]
    next_seq: int
    doomed: list[tuple[str, str]]  # (task, failed dependency): to commit as dep_failed
    again: list[str]  # with rerun=True: the tasks made pending again


def load_run(
    store: Store,
    run_id: str,
    tasks: list[TaskRecord] | None = None,
    specs: dict[str, TaskSpec] | None = None,
    *,
    rerun: bool = False,
) -> LoadedRun:
    read = tasks is None
    if tasks is None:
        tasks = store.tasks(run_id)
    if specs is None:
        specs = _parse_specs(run_id, [t.spec for t in tasks])
    nodes = [Node(t.task_id, list(t.deps), t.state, in_flight=t.state.is_active) for t in tasks]
    graph = RunGraph(nodes)
    failed = (TaskState.FAILED, TaskState.CANCELLED, TaskState.DEP_FAILED)
    doomed = [
        (task_id, node.task_id)
        for node in nodes
        if node.state in failed
        for task_id in graph._cascade_from(node.task_id, include_root=False)
    ]
    again = graph.rerun() if rerun else []
    loaded = LoadedRun(
        graph=graph,
        specs=specs,
        seqs={t.task_id: t.seq for t in tasks},
        attempts={t.task_id: t.attempt for t in tasks},
        next_seq=max((t.seq for t in tasks), default=-1) + 1,
        doomed=[] if rerun else doomed,  # a rerun makes them pending again anyway
        again=again,
    )
    if read:
        release(tasks)  # in pieces: this runs in the reader thread, beside the loop
    return loaded


def _attempt_record(job: BuiltJob, backend: str, now: float) -> AttemptRecord:
    spec = job.spec
    return AttemptRecord(
        run_id=spec.run_id,
        task_id=spec.task_id,
        attempt=spec.attempt,
        tag=spec.tag,
        backend=backend,
        state="intent",
        script=spec.script,
        env=job.env,
        stdout_path=spec.paths.stdout,
        stderr_path=spec.paths.stderr,
        exit_path=spec.paths.exit_code,
        script_path=spec.paths.script,
        time_limit_s=spec.time_limit_s,
        created_at=now,
    )


def _ref_from(attempt: AttemptRecord) -> JobRef:
    paths = JobPaths(
        attempt.stdout_path, attempt.stderr_path, attempt.exit_path, attempt.script_path
    )
    return JobRef(
        attempt.job_id or attempt.tag,
        attempt.tag,
        paths,
        attempt.time_limit_s,
        attempt.submitted_at or attempt.created_at,
    )


def _spec_from(attempt: AttemptRecord, run: ActiveRun) -> JobSpec:
    """The spec of a recorded intent, rebuilt exactly from what the store holds."""
    task = run.specs[attempt.task_id]
    return JobSpec(
        tag=attempt.tag,
        run_id=attempt.run_id,
        task_id=attempt.task_id,
        attempt=attempt.attempt,
        name=task.name,
        script=attempt.script,
        paths=_ref_from(attempt).paths,
        working_dir=run.context.working_dir(task),
        cpus=task.cpus,
        memory_mb=task.memory_mb,
        time_limit_s=task.time_limit_s,
        partition=task.partition,
        gres=task.gres,
        image=task.image,
        env={k: v["value"] for k, v in attempt.env.get("values", {}).items()}
        if isinstance(attempt.env.get("values"), dict)
        else {},
    )
