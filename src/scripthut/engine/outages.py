"""Outages: a backend that cannot be reached is reported once per change and retried with
backoff; a run whose backend is gone is stranded with its reason; a cancelled task whose job
sits on an unreachable backend ends at once and its job (a zombie) is cancelled later."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from scripthut.engine.core import EngineCore
from scripthut.engine.state import (
    RETRY_FIRST,
    RETRY_MAX,
    BackendSlot,
    Changes,
    Zombie,
    attempt_key,
    clock,
    is_backend_notice,
    task_key,
)
from scripthut.errors import (
    NotFound,
    ScriptHutError,
)
from scripthut.states import RunState, TaskState
from scripthut.store import (
    AttemptRecord,
    RunRecord,
)

log = logging.getLogger("scripthut.engine")


class Outages(EngineCore):
    def _down(self, slot: BackendSlot, error: str) -> None:
        """A call to the backend failed: one log line when it becomes unreachable, then
        retries with backoff; its runs say why they wait."""
        name = slot.backend.name
        if slot.down_since is None:
            slot.down_since = time.time()
            slot.retry_delay = RETRY_FIRST
            slot.down_error = error
            log.warning("backend '%s' unreachable: %s", name, error)
            notice = f"backend '{name}' unreachable since {clock(slot.down_since)}: {error}"
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
            if run is not None and is_backend_notice(run.record.message):
                self._set_message(run.record, None)

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
            self.store.update_tasks(sorted(changes.tasks, key=task_key))
            self.store.update_attempts(sorted(changes.attempts, key=attempt_key))
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

    async def _find(self, slot: BackendSlot, tags: list[str]) -> dict[str, str] | None:
        """The backend's jobs for these tags (tag -> job id); None when the look-up failed
        (then the backend is marked unreachable): nothing may be taken for absent."""
        try:
            found = await slot.backend.find(tags)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._down(slot, f"looking up submitted jobs failed: {exc}")
            return None
        if found is None:
            self._down(slot, "looking up submitted jobs failed")
            return None
        self._up(slot)
        return found

    async def _cancel_jobs(self, slot: BackendSlot, job_ids: list[str]) -> bool:
        """Ask the backend to cancel these jobs; False (backend marked unreachable) on failure."""
        try:
            await slot.backend.cancel(job_ids)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._down(slot, f"cancel failed: {exc}")
            return False
        return True

    async def _bury_zombies(self, slot: BackendSlot) -> None:
        """Find the jobs of unconfirmed submissions of cancelled tasks, cancel every one."""
        unconfirmed = [tag for tag, z in slot.zombies.items() if z.job_id is None]
        changes = Changes()
        now = time.time()
        if unconfirmed:
            found = await self._find(slot, unconfirmed)
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
        if jobs and await self._cancel_jobs(slot, [z.job_id for z in jobs.values() if z.job_id]):
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
