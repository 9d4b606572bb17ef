"""The in-process event feed: every committed change, fanned out to subscribers.

Publishing never blocks the engine. Each subscriber has a bounded queue; one that
falls too far behind is marked `lagged`, its queue is dropped, and it resynchronises
from the store (events are persisted with increasing ids).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from scripthut.store.records import EventRecord

DEFAULT_QUEUE_SIZE = 10_000


class Subscription:
    """One listener's queue of events, used as an async iterator."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[EventRecord | None] = asyncio.Queue(maxsize)
        self.lagged = False

    def _offer(self, event: EventRecord) -> None:
        if self.lagged:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True
            self._drain()
            self._queue.put_nowait(None)

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def get(self, timeout: float | None = None) -> EventRecord | None:
        """The next event; None when lagged (resync from the store) or on timeout."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    def get_nowait(self) -> list[EventRecord]:
        out: list[EventRecord] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                out.append(item)
        return out

    def resume(self) -> None:
        """After a resync: receive events again."""
        self.lagged = False

    def close(self) -> None:
        self._bus.unsubscribe(self)
        self._drain()
        self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[EventRecord]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item


class EventBus:
    """Fan-out of committed events to in-process subscribers."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def subscribe(self, maxsize: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        subscription = Subscription(self, maxsize)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def publish(self, events: Sequence[EventRecord]) -> None:
        for subscription in list(self._subscribers):
            for event in events:
                subscription._offer(event)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
