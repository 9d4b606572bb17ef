"""Submission: pick ready tasks fairly within the limits, record them as intents, submit
them in one batch, and reconcile intents whose fate is unknown after a crash."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from scripthut.backends.arrays import group_jobs
from scripthut.backends.base import ArrayGroup, JobRef, JobSpec, SubmitOutcome
from scripthut.engine.caching import Caching
from scripthut.engine.jobs import BuiltJob
from scripthut.engine.state import (
    ActiveRun,
    BackendSlot,
    Changes,
    Intent,
    Tracked,
    attempt_record,
    spec_key,
)
from scripthut.errors import (
    ScriptHutError,
)
from scripthut.states import RunState, TaskState
from scripthut.store import (
    AttemptRecord,
)

log = logging.getLogger("scripthut.engine")
ARRAY_MINIMUM = 2  # fewer ready tasks of one run and resources go as plain jobs


class Submission(Caching):
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
            picks = await self._cache_hits(slot, picks)
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
            intents.append(self._with_cache(attempt_record(job, slot.backend.name, now)))
        with self.store.transaction():
            self.store.insert_attempts(intents)
            self._commit(changes)
        for run, task_id, job in built:
            slot.intents[job.spec.tag] = Intent(run.record.id, task_id, job.spec)
        await self._submit(slot, [job.spec for _, _, job in built])

    async def _submit(self, slot: BackendSlot, specs: list[JobSpec]) -> None:
        """Submit `specs` (intents already committed): as arrays where the backend has them,
        the rest as plain jobs. What was accepted is recorded even if a later part fails."""
        if not specs:
            return
        plain, arrays = self._as_arrays(slot, specs)
        parts: list[tuple[list[JobSpec], list[SubmitOutcome]]] = []
        try:
            if arrays:
                results = await slot.backend.submit_arrays(arrays)
                for group, outcomes in zip(arrays, results, strict=False):
                    parts.append((list(group.jobs), outcomes))
            if plain:
                parts.append((plain, await slot.backend.submit(plain)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._record_parts(slot, parts)
            slot.needs_find = True
            self._down(slot, f"submission failed: {exc}")
            return
        self._up(slot)
        self._record_parts(slot, parts)

    def _as_arrays(
        self, slot: BackendSlot, specs: list[JobSpec]
    ) -> tuple[list[JobSpec], list[ArrayGroup]]:
        """Plain jobs and array groups (per run and resources; throttled to the run's and
        the backend's max_concurrent)."""
        if not slot.backend.arrays_enabled():
            return specs, []
        plain, groups = group_jobs(specs, minimum=ARRAY_MINIMUM)
        arrays: list[ArrayGroup] = []
        for group in groups:
            run = self.runs.get(group[0].run_id)
            limit = run.record.max_concurrent if run is not None else None
            throttle = min(slot.backend.max_concurrent, limit or slot.backend.max_concurrent)
            arrays.append(ArrayGroup(tuple(group), throttle))
        return plain, arrays

    def _record_parts(
        self, slot: BackendSlot, parts: list[tuple[list[JobSpec], list[SubmitOutcome]]]
    ) -> None:
        results: list[tuple[JobSpec, SubmitOutcome]] = []
        for specs, outcomes in parts:
            if len(outcomes) != len(specs):
                slot.needs_find = True
                log.error(
                    "backend %s returned %d outcomes for %d jobs",
                    slot.backend.name,
                    len(outcomes),
                    len(specs),
                )
                continue
            results.extend(zip(specs, outcomes, strict=True))
        if results:
            self._record_submissions(slot, results)

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
                    spec_key(spec), state=TaskState.FAILED.value, reason=outcome.error, ended_at=now
                )
                self._fail_task(run, spec.task_id, f"submission rejected: {outcome.error}", changes)
                continue
            changes.attempt(
                spec_key(spec),
                state=TaskState.SUBMITTED.value,
                job_id=outcome.job_id,
                submitted_at=now,
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
        found = await self._find(slot, tags)
        if found is None:
            return
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
        if not pending or not await self._cancel_jobs(slot, [t.ref.job_id for t in pending]):
            return
        for tracked in pending:
            tracked.cancel_sent = True
        slot.backend.changed.set()
