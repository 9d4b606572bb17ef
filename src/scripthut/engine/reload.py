"""A new configuration without a restart: what changed between two configs, and the steps
that apply it to a running engine (`Engine.reload` puts them in order).

Nothing already submitted is touched. A removed backend stops being polled and its runs are
stranded with the reason (its jobs keep running; when the backend is configured again they
are adopted from their attempt rows, as after a restart). A backend whose connection fields
changed gets a new Backend object; its tracked jobs move to it. Changed limits apply at
once, changed env rules to jobs not yet built (each run's RunContext is rebuilt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from scripthut.backends.registry import create_backend
from scripthut.config import BackendConfig, Config
from scripthut.engine.jobs import RunContext
from scripthut.engine.outages import Outages
from scripthut.engine.state import BackendSlot
from scripthut.errors import NotFound
from scripthut.store import drop_resident

log = logging.getLogger("scripthut.engine")

# Fields that change how a backend's jobs are shaped for new tasks only, not how it is reached.
SOFT_FIELDS = frozenset({"name", "max_concurrent", "env", "env_groups"})
LOOP_STOP_TIMEOUT = 10.0


def _connection(entry: BackendConfig) -> dict[str, Any]:
    return entry.model_dump(exclude=set(SOFT_FIELDS))


@dataclass(slots=True)
class ReloadPlan:
    """Backends by what happened to them between two configs."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reconnected: list[str] = field(default_factory=list)  # connection fields changed
    resized: dict[str, int] = field(default_factory=dict)  # name -> new max_concurrent

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "reconnected": self.reconnected,
            "resized": self.resized,
        }


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    before = {b.name: b for b in old.backends}
    after = {b.name: b for b in new.backends}
    plan = ReloadPlan()
    plan.added = [name for name in after if name not in before]
    plan.removed = [name for name in before if name not in after]
    for name in [n for n in after if n in before]:
        was, now = before[name], after[name]
        if _connection(was) != _connection(now):
            plan.reconnected.append(name)
        elif was.max_concurrent != now.max_concurrent:
            plan.resized[name] = now.max_concurrent
    return plan


class Reloading(Outages):
    async def _stop_loop(self, slot: BackendSlot) -> None:
        """Stop a backend's loop wherever it is; what it left half done is redone as after
        a crash (an unconfirmed submission is looked up by tag before anything else)."""
        task, slot.task = slot.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, LOOP_STOP_TIMEOUT)
        if slot.intents:
            slot.needs_find = True

    async def _retire_slot(self, name: str) -> None:
        """A backend no longer configured: not polled; its runs stranded, saying why."""
        slot = self.slots.pop(name, None)
        backend = self.registry.forget(name)
        if slot is not None:
            await self._stop_loop(slot)
        for run_id in [r for r, run in self.runs.items() if run.record.backend == name]:
            run = self.runs.pop(run_id)
            drop_resident(id(run))
            self._strand(run.record, NotFound(name))
        for closing in {id(b): b for b in (backend, slot.backend if slot else None) if b}.values():
            with contextlib.suppress(Exception):
                await closing.close()
        log.info("backend '%s' removed from the configuration: no longer polled", name)

    async def _reconnect(self, name: str) -> None:
        """Connection fields changed: a new Backend object takes over the slot's jobs."""
        entry = self.config.backend(name)
        new = create_backend(self.config, entry)
        old = self.registry.forget(name)
        self.registry.add(new)
        slot = self.slots.get(name)
        if slot is not None:
            await self._stop_loop(slot)
            old = old or slot.backend
            slot.backend, slot.started = new, False
            slot.down_since, slot.down_error, slot.retry_at = None, "", 0.0
            slot.next_poll = 0.0
        if old is not None and old is not new:
            with contextlib.suppress(Exception):
                await old.close()
        log.info("backend '%s' reconnects with its new settings", name)

    def _resize(self, resized: dict[str, int]) -> None:
        for name, limit in resized.items():
            with contextlib.suppress(NotFound):
                self.registry.get(name).max_concurrent = limit
            if name in self.slots:
                self.slots[name].wake.set()

    def _rebuild_contexts(self) -> None:
        """Each run's env rules and groups from the new config, for jobs not yet built."""
        for run in self.runs.values():
            config = self.config.for_folder(run.record.config_dir)
            slot = self.slots.get(run.record.backend)
            backend = slot.backend if slot is not None else run.context.backend
            run.context = RunContext.for_run(config, backend, run.record)
