"""The live event stream: one source, many listeners, each with a bounded buffer.

A `Broadcaster` reads events from ONE place however many clients listen: the engine's
`EventBus` through a single subscription when this process hosts the engine, or the
store's events table (polled) when another process holds the lease. Each event is
encoded once, as a Server-Sent Events frame, and handed to every listener.

A `Listener` first replays what the store holds after the client's last event id, then
switches to live events without a gap or a duplicate (events are deduplicated by id).
A listener whose buffer overflows is dropped; its client reconnects with the last id it
saw and replays the rest from the store.

Nothing here holds the event loop for long. Replay pages are read and encoded in a worker
thread with its own connection, one page at a time for all listeners together (they take
turns), and a page of the whole stream is kept once encoded, so N clients replaying the
same history cost about what one does. Large bursts from the engine are delivered in
slices with the loop free between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from scripthut.engine.events import EventBus
from scripthut.store import EventRecord, Store, StoreWorker

log = logging.getLogger("scripthut.server")

DEFAULT_BUFFER = 5_000
STORE_POLL = 0.5
REPLAY_PAGE = 200  # events per replay page and per slice of a burst
CACHED_PAGES = 64  # encoded pages of the whole stream kept for replays
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


@dataclass(frozen=True, slots=True)
class Page:
    """Stored events with ids up to `end`; `at_end`: `end` was the last event stored then."""

    chunk: Chunk | None
    end: int
    at_end: bool

    def after(self, last_id: int) -> Chunk | None:
        """The page without the events up to `last_id` (a client may resume mid-page)."""
        if self.chunk is None or self.chunk.last_id <= last_id:
            return None
        if self.chunk.first_id > last_id:
            return self.chunk
        return chunk([p for p in self.chunk.packets if p.event.id > last_id])


def read_page(store: Store, index: int) -> Page:
    """Page `index` of the whole stream: ids in (index*REPLAY_PAGE, (index+1)*REPLAY_PAGE]."""
    last = store.last_event_id()
    first = index * REPLAY_PAGE
    end = min(first + REPLAY_PAGE, last)
    events = [e for e in store.events_since(first, limit=REPLAY_PAGE) if e.id <= end]
    return Page(chunk(packets(events)) if events else None, max(end, first), end == last)


def read_run_page(store: Store, after: int, run: str) -> Page:
    """The next events of one run after `after` (not cached: one client follows it)."""
    last = store.last_event_id()
    events = [e for e in store.events_since(after, limit=REPLAY_PAGE, run_id=run) if e.id <= last]
    at_end = len(events) < REPLAY_PAGE
    end = last if at_end else events[-1].id
    return Page(chunk(packets(events)) if events else None, max(end, after), at_end)


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
        self._replay_until: int | None = None  # set when it joins the live feed
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
        if self.closed or self.dropped:
            return None
        while self._replaying:
            replayed = await self._replay_page()
            if self.closed or self.dropped:
                return None
            if replayed:
                return replayed
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

    async def _replay_page(self) -> list[Chunk]:
        """The next page from the store. Once a read reaches the end, the listener joins the
        live feed; events the broadcaster delivered before that are still read from the
        store, later ones arrive in the buffer (duplicates are skipped by id)."""
        page = await self._broadcaster.replay(self.last_id, self.run)
        if self._broadcaster.closed:
            self.close()
            return []
        delivered = page.after(self.last_id)
        self.last_id = max(self.last_id, page.end)
        if page.at_end and self._replay_until is None and not self.closed:
            self._replay_until = self._broadcaster.cursor
            self._broadcaster.add(self)
        until = self._replay_until
        if until is not None and self.last_id >= until:
            self._replaying = False
        return [delivered] if delivered is not None else []


def _events_after(cursor: int, store: Store) -> list[EventRecord]:
    return store.events_since(cursor, limit=REPLAY_PAGE)


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
        self._reader: StoreWorker | None = None
        self._turn = asyncio.Lock()  # replay reads take turns, one page at a time
        self._pages: OrderedDict[int, Page] = OrderedDict()
        self.closed = False

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
        self.closed = False
        if self.store is not store:
            self.store = store
            self.cursor = store.last_event_id()
            self._pages.clear()
            if self._reader is not None:
                self._reader.close()
            self._reader = StoreWorker(store.path, "scripthut-events")
        source = self._from_bus(bus) if bus is not None else self._from_store()
        self._pump = asyncio.create_task(source, name="scripthut-events")

    def detach(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None

    async def close(self) -> None:
        """Stop reading and end every listener's stream (replaying ones included)."""
        self.closed = True
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        for listener in list(self._listeners):
            listener.close()
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await asyncio.to_thread(reader.close)

    async def replay(self, after: int, run: str | None) -> Page:
        """The page of stored events after `after` (of one run when `run` is set)."""
        async with self._turn:
            if self._reader is None:
                return Page(None, after, True)
            if run is not None:
                return await self._reader.call(lambda store: read_run_page(store, after, run))
            index = after // REPLAY_PAGE
            page = self._pages.get(index)
            if page is not None:
                self._pages.move_to_end(index)
                return page
            page = await self._reader.call(lambda store: read_page(store, index))
            if not page.at_end:  # complete: its events never change
                self._pages[index] = page
                while len(self._pages) > CACHED_PAGES:
                    self._pages.popitem(last=False)
            return page

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

    async def _deliver_all(self, events: Sequence[EventRecord]) -> None:
        """A burst (a 100,000-task cancel) in slices, the loop free between them."""
        for first in range(0, len(events), REPLAY_PAGE):
            if first:
                await asyncio.sleep(0)
            self._deliver(events[first : first + REPLAY_PAGE])

    async def _catch_up(self) -> None:
        """Deliver what the store holds after the cursor, read page by page in the worker."""
        while self._reader is not None:
            page = await self._reader.call(partial(_events_after, self.cursor))
            self._deliver(page)
            if len(page) < REPLAY_PAGE:
                return

    async def _from_bus(self, bus: EventBus) -> None:
        subscription = bus.subscribe()
        try:
            await self._guarded(self._catch_up)
            while True:
                first = await subscription.get()
                batch = [first] if first is not None else []
                batch += subscription.get_nowait()
                if subscription.lagged:
                    subscription.resume()
                    await self._guarded(self._catch_up)
                else:
                    await self._guarded(self._deliver_all, batch)
        finally:
            subscription.close()

    async def _from_store(self) -> None:
        assert self.store is not None
        while True:
            if self._listeners:
                await self._guarded(self._catch_up)
            else:
                await self._guarded(self._skip_to_end)  # listeners replay from the store
            await asyncio.sleep(self.store_poll)

    async def _skip_to_end(self) -> None:
        assert self.store is not None
        self.cursor = self.store.last_event_id()

    async def _guarded(self, step: Callable[..., Awaitable[object]], *args: Any) -> None:
        """One step of a source loop; an error is logged (at most once a minute), never fatal."""
        try:
            await step(*args)
        except Exception:
            now = time.monotonic()
            if now - self._last_error >= 60:
                self._last_error = now
                log.exception("the event stream could not read or deliver events")
