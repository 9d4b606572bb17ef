"""The live event stream: one source, many listeners, each with a bounded buffer.

A `Broadcaster` reads events from ONE place however many clients listen: the engine's
`EventBus` through a single subscription when this process hosts the engine, or the
store's events table (polled) when another process holds the lease. Each event is
encoded once, as a Server-Sent Events frame, and handed to every listener.

A `Listener` first replays what the store holds after the client's last event id, then
switches to live events without a gap or a duplicate (events are deduplicated by id).
A listener whose buffer overflows is dropped; its client reconnects with the last id it
saw and replays the rest from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from scripthut.engine.events import EventBus
from scripthut.store import EventRecord, Store

log = logging.getLogger("scripthut.server")

DEFAULT_BUFFER = 5_000
STORE_POLL = 0.5
REPLAY_PAGE = 1_000
HEARTBEAT = b": keepalive\n\n"
MAX_WRITE_DELAY = 0.5


@dataclass(frozen=True, slots=True)
class Packet:
    """An event and its Server-Sent Events frame."""

    event: EventRecord
    sse: bytes


def encode(event: EventRecord) -> bytes:
    """`id: <event id>` and one `data:` line of JSON (JSON escapes every newline)."""
    data = json.dumps(event.to_json(), separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.id}\ndata: {data}\n\n".encode()


def packets(events: Sequence[EventRecord]) -> list[Packet]:
    return [Packet(event, encode(event)) for event in events]


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive packets and their frames joined once, shared by every listener."""

    packets: tuple[Packet, ...]
    sse: bytes

    @property
    def first_id(self) -> int:
        return self.packets[0].event.id

    @property
    def last_id(self) -> int:
        return self.packets[-1].event.id


def chunk(items: Sequence[Packet]) -> Chunk:
    return Chunk(tuple(items), b"".join(p.sse for p in items))


class Listener:
    """One client's view of the stream: replay from the store, then live events."""

    def __init__(
        self, broadcaster: Broadcaster, after: int, run: str | None, *, live: bool
    ) -> None:
        self._broadcaster = broadcaster
        self.last_id = after
        self.run = run
        self._buffer: deque[Chunk] = deque()
        self._buffered = 0  # events in the buffer
        self._wake = asyncio.Event()
        self._replaying = not live
        self.dropped = False
        self.closed = False

    def offer(self, delivered: Chunk) -> None:
        """Called by the broadcaster; never blocks. Overflow drops this listener."""
        if self.closed:
            return
        if self.run is not None:
            mine = [p for p in delivered.packets if p.event.run_id in (self.run, None)]
            if not mine:
                return
            delivered = chunk(mine) if len(mine) < len(delivered.packets) else delivered
        self._buffered += len(delivered.packets)
        if self._buffered > self._broadcaster.buffer_size:
            self.dropped = True
            self._buffer.clear()
            self._broadcaster.discard(self, dropped=True)
        else:
            self._buffer.append(delivered)
        self._wake.set()

    async def next_batch(self, timeout: float, delay: float = 0.0) -> list[Chunk] | None:
        """The next chunks; [] when `timeout` passes first; None when the stream ends.

        After a wake-up it waits `delay` seconds, stretched when many clients listen (see
        `Broadcaster.write_delay`), so a burst of events goes out in one write.
        """
        if self._replaying:
            return self._replay_page()
        if self.closed or self.dropped:
            return None
        if not self._buffer:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            if self.closed or self.dropped:
                return None
            if self._buffer and delay > 0:
                await asyncio.sleep(self._broadcaster.write_delay(delay))
        return self._take()

    def close(self) -> None:
        self.closed = True
        self._broadcaster.discard(self)
        self._wake.set()

    def _take(self) -> list[Chunk]:
        """Buffered chunks after `last_id` (a chunk that overlaps it is trimmed)."""
        out = []
        for delivered in self._buffer:
            if delivered.last_id <= self.last_id:
                continue
            if delivered.first_id <= self.last_id:
                delivered = chunk([p for p in delivered.packets if p.event.id > self.last_id])
            out.append(delivered)
            self.last_id = delivered.last_id
        self._buffer.clear()
        self._buffered = 0
        return out

    def _replay_page(self) -> list[Chunk]:
        store = self._broadcaster.store
        assert store is not None
        page = store.events_since(self.last_id, limit=REPLAY_PAGE, run_id=self.run)
        if len(page) < REPLAY_PAGE:
            # Caught up: join the live feed and read once more, with no await between,
            # so nothing committed in the meantime is missed (later duplicates are skipped).
            self._replaying = False
            self._broadcaster.add(self)
            page += store.events_since(
                page[-1].id if page else self.last_id, limit=1 << 30, run_id=self.run
            )
        if not page:
            return []
        self.last_id = page[-1].id
        return [chunk(packets(page))]


class Broadcaster:
    """Fans the event source out to listeners; one engine subscription in all."""

    def __init__(
        self, *, buffer_size: int = DEFAULT_BUFFER, store_poll: float = STORE_POLL
    ) -> None:
        self.buffer_size = buffer_size
        self.store_poll = store_poll
        self.store: Store | None = None
        self.cursor = 0
        self.dropped = 0
        self._listeners: set[Listener] = set()
        self._pump: asyncio.Task[None] | None = None
        self._last_error = -1e9

    @property
    def clients(self) -> int:
        return len(self._listeners)

    def write_delay(self, base: float) -> float:
        """`base` for up to 10 clients, then growing with their number (at most 0.5 s), so
        the writes of all clients together stay at about 10/`base` a second: the cost of
        the stream does not grow with the number of views open."""
        return min(MAX_WRITE_DELAY, base * max(1.0, self.clients / 10))

    def attach(self, store: Store, bus: EventBus | None) -> None:
        """(Re)start reading: from `bus` when this process hosts the engine, else the store."""
        self.detach()
        if self.store is not store:
            self.store = store
            self.cursor = store.last_event_id()
        source = self._from_bus(bus) if bus is not None else self._from_store()
        self._pump = asyncio.create_task(source, name="scripthut-events")

    def detach(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None

    async def close(self) -> None:
        """Stop reading and end every listener's stream."""
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        for listener in list(self._listeners):
            listener.close()

    def listen(self, after: int | None, run: str | None = None) -> Listener:
        """A listener from event `after` (replayed from the store), or from now when None."""
        assert self.store is not None
        if after is None:
            listener = Listener(self, self.store.last_event_id(), run, live=True)
            self.add(listener)
            return listener
        return Listener(self, after, run, live=False)

    def add(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def discard(self, listener: Listener, *, dropped: bool = False) -> None:
        if listener in self._listeners:
            self._listeners.discard(listener)
            if dropped:
                self.dropped += 1
                log.info("event stream client too slow: dropped (it may resume)")

    # -- sources ----------------------------------------------------------------------

    def _deliver(self, events: Sequence[EventRecord]) -> None:
        fresh = [e for e in events if e.id > self.cursor]
        if not fresh:
            return
        self.cursor = fresh[-1].id
        if self._listeners:
            delivered = chunk(packets(fresh))
            for listener in list(self._listeners):
                listener.offer(delivered)

    def _catch_up(self) -> None:
        assert self.store is not None
        while True:
            page = self.store.events_since(self.cursor, limit=REPLAY_PAGE)
            self._deliver(page)
            if len(page) < REPLAY_PAGE:
                return

    async def _from_bus(self, bus: EventBus) -> None:
        subscription = bus.subscribe()
        try:
            self._guarded(self._catch_up)
            while True:
                first = await subscription.get()
                batch = [first] if first is not None else []
                batch += subscription.get_nowait()
                if subscription.lagged:
                    subscription.resume()
                    self._guarded(self._catch_up)
                else:
                    self._guarded(self._deliver, batch)
        finally:
            subscription.close()

    async def _from_store(self) -> None:
        assert self.store is not None
        while True:
            if self._listeners:
                self._guarded(self._catch_up)
            else:
                self._guarded(self._skip_to_end)  # listeners replay from the store themselves
            await asyncio.sleep(self.store_poll)

    def _skip_to_end(self) -> None:
        assert self.store is not None
        self.cursor = self.store.last_event_id()

    def _guarded(self, step: Callable[..., object], *args: Any) -> None:
        """One step of a source loop; an error is logged (at most once a minute), never fatal."""
        try:
            step(*args)
        except Exception:
            now = time.monotonic()
            if now - self._last_error >= 60:
                self._last_error = now
                log.exception("the event stream could not read or deliver events")
