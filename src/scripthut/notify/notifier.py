"""The engine's notifier: turns committed events into queued messages, then sends them.

It reads the store's events after its persisted cursor (so an engine restart neither repeats
nor skips one), queues one message per event and channel in the outbox (unique: at most
once), and sends what is due, retrying a failed send with exponential backoff and jitter
(5 s doubling to 10 min) until it succeeds or `give_up_after_hours` passes. Only the engine
that holds the lease runs it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from scripthut.config.notifications import NotificationsConfig
from scripthut.notify import messages
from scripthut.notify.outbox import Outbox, Pending
from scripthut.notify.send import SendError, send_email, send_webhook
from scripthut.states import TaskState
from scripthut.store import EventRecord, Store

log = logging.getLogger("scripthut.notify")

POLL = 1.0
FIRST_RETRY = 5.0
MAX_RETRY = 600.0
EVENTS_PER_STEP = 500

Sender = Callable[[dict[str, Any]], None]


def channels(config: NotificationsConfig) -> dict[str, Sender]:
    out: dict[str, Sender] = {}
    if config.email is not None:
        out["email"] = partial(send_email, config.email)
    for hook in config.webhooks:
        out[f"webhook:{hook.url_env}"] = partial(send_webhook, hook)
    return out


def retry_delay(attempts: int) -> float:
    delay: float = min(FIRST_RETRY * 2 ** max(attempts - 1, 0), MAX_RETRY)
    return delay * (1 + random.random() / 4)


class Notifier:
    def __init__(self, config: NotificationsConfig, store: Store, poll: float = POLL) -> None:
        self.config = config
        self.store = store
        self.poll = poll
        self.channels = channels(config)
        self.outbox = Outbox(store.path)
        self._failing: set[str] = set()  # channels whose last send failed (logged once)

    def close(self) -> None:
        self.outbox.close()

    async def run(self) -> None:
        while True:
            try:
                self.collect()
                await self.deliver()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notification step failed")
            await asyncio.sleep(self.poll)

    # -- events -> outbox -----------------------------------------------------------------

    def collect(self) -> None:
        cursor = self.outbox.cursor()
        if cursor is None:  # first start: what happened before notifications were set up is old
            self.outbox.advance(self.store.last_event_id(), [])
            return
        events = self.store.events_since(cursor, limit=EVENTS_PER_STEP)
        if not events:
            return
        wanted = [(e, name) for e in events if (name := self._wanted(e)) is not None]
        runs = sorted({e.run_id for e, _ in wanted if e.run_id})
        opted = set(runs) if self.config.runs == "all" else self.outbox.opted_in(runs)
        rows = []
        for event, name in wanted:
            if event.run_id in opted:
                message = self._message(event, name)
                rows += [(event.id, c, name, event.run_id, message) for c in self.channels]
        self.outbox.advance(events[-1].id, rows)

    def _wanted(self, event: EventRecord) -> str | None:
        name = messages.event_name(event.kind, event.data)
        return name if name in self.config.events and event.run_id else None

    def _message(self, event: EventRecord, name: str) -> dict[str, Any]:
        assert event.run_id is not None
        run = self.store.get_run(event.run_id)
        counts = self.store.task_counts(event.run_id)
        doc = {"id": run.id, "name": run.name, "backend": run.backend, "state": run.state.value}
        if name == "task_failed" and event.task_id is not None:
            task = self.store.task(event.run_id, event.task_id)
            doc["state"] = run.state.value
            return messages.build(
                name, doc, counts, [], {"id": task.task_id, "reason": task.reason}
            )
        doc["state"] = str(event.data.get("state"))
        failed = [
            {"id": t.task_id, "reason": t.reason}
            for t in self.store.iter_tasks(event.run_id)
            if t.state == TaskState.FAILED
        ][: self.config.failed_tasks_listed]
        return messages.build(name, doc, counts, failed)

    # -- outbox -> channels ---------------------------------------------------------------

    async def deliver(self) -> None:
        now = time.time()
        for item in self.outbox.due(now):
            sender = self.channels.get(item.channel)
            if sender is None:
                continue  # the channel left the config: kept until it comes back
            try:
                await asyncio.to_thread(sender, item.message)
            except SendError as exc:
                self._failed(item, str(exc))
            else:
                self.outbox.sent(item.id)
                if item.channel in self._failing:
                    self._failing.discard(item.channel)
                    log.info("notifications to %s are delivered again", item.channel)

    def _failed(self, item: Pending, error: str) -> None:
        now = time.time()
        give_up = now - item.created_at > self.config.give_up_after_hours * 3600
        self.outbox.failed(item.id, error, now + retry_delay(item.attempts + 1), give_up)
        if give_up:
            log.error("gave up notifying %s of event %d: %s", item.channel, item.event_id, error)
        elif item.channel not in self._failing:
            self._failing.add(item.channel)
            log.warning("notification to %s failed (retried with backoff): %s", item.channel, error)
