"""Polling: one query per backend per cycle for every tracked job, and applying what
changed (state, times, exit code, efficiency, tasks a finished task generated)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from typing import Any

from scripthut.backends.base import JobStatus
from scripthut.engine.caching import Caching
from scripthut.engine.create import new_task_records
from scripthut.engine.graph import Node
from scripthut.engine.state import (
    GENERATED_SOURCE_LIMIT,
    JOB_TO_TASK,
    ActiveRun,
    BackendSlot,
    Changes,
    Tracked,
)
from scripthut.errors import (
    InvalidInput,
    NotFound,
    ScriptHutError,
)
from scripthut.outputs import OutputListing, output_paths
from scripthut.states import JobState, TaskState
from scripthut.workflow.model import Workflow
from scripthut.workflow.parse import parse_generated

log = logging.getLogger("scripthut.engine")


class Polling(Caching):
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
            state = JOB_TO_TASK[status.state]
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
        listings = await self._list_outputs(slot, [u[0] for u in updates if u[2].is_final])
        manifests = await self._store_outputs(
            slot, [(t, s, st) for t, st, s in updates if s.is_final]
        )
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
            self._save_outputs(listings, changes)
            self.store.save_manifests([(*t.key, m) for t, m in manifests])
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

    async def _list_outputs(
        self, slot: BackendSlot, ended: list[Tracked]
    ) -> list[tuple[Tracked, OutputListing]]:
        """What the ended attempts wrote, in one call to their backend; none if it fails (the
        task's state does not wait for its outputs)."""
        if not ended:
            return []
        pairs = {t.ref.tag: output_paths(t.ref.paths.exit_code) for t in ended}
        try:
            found = await slot.backend.list_outputs(list(pairs.values()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log_error(slot.backend.name, f"listing task outputs failed: {exc}")
            return []
        if found is None:
            return []
        return [(t, found[pairs[t.ref.tag][0]]) for t in ended if pairs[t.ref.tag][0] in found]

    def _save_outputs(
        self, listings: list[tuple[Tracked, OutputListing]], changes: Changes
    ) -> None:
        self.store.save_outputs([(*t.key, listing) for t, listing in listings])
        for tracked, listing in listings:
            data = {"attempt": tracked.attempt, "files": len(listing.files)}
            changes.events.append(("outputs", tracked.run_id, tracked.task_id, data))

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
