"""The kernel-side live feed: events in, small patches out, from background threads.

One `EventHub` per client reads the event stream once however many widgets listen
(a drop is resumed from the last event id seen). Each widget has a `LiveFeed`: a thread
that applies the events to the widget's `Source` and, at most every `interval` seconds,
sends what changed. Sending from a thread is safe in ipykernel: comm messages go out
through the IOPub thread, so updates keep flowing while the kernel runs other cells.

Until the front end says it holds a baseline ("ready"), the feed publishes whole
snapshots through `publish_snapshot` (a synced trait, which reaches the front end model
even before its code has loaded), never patches it could miss.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from scripthut.client.base import Client, EventStream
from scripthut.widgets import api
from scripthut.widgets.diff import ViewState
from scripthut.widgets.sources import Source

log = logging.getLogger("scripthut.widgets")

Event = dict[str, Any]
Message = dict[str, Any]
RETRY_FIRST = 0.5
RETRY_MAX = 10.0
# Until the front end answers, whole snapshots go out at most this often: once a second,
# slower for big tables (a kernel with no front end at all must not spend itself on them).
SNAPSHOT_INTERVAL = 1.0
SNAPSHOT_ROWS_PER_SECOND = 2_000
SNAPSHOT_INTERVAL_MAX = 10.0


class EventHub:
    """One event stream per client, fanned out to the widgets' feeds.

    The stream is opened with the first listener and closed with the last one, so a
    kernel whose widgets are all closed holds no connection.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.last_id: int | None = None
        self._listeners: set[Callable[[Event], None]] = set()
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        self._stream: EventStream | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Deliver every event from now on to `listener` (from the hub's thread)."""
        with self._lock:
            self._listeners.add(listener)
            if self._stop is None:
                self._start()

        def unsubscribe() -> None:
            with self._lock:
                self._listeners.discard(listener)
                if not self._listeners:
                    self._halt()

        return unsubscribe

    def close(self) -> None:
        with self._lock:
            self._listeners.clear()
            thread = self._halt()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def _start(self) -> None:
        """Open the stream here (so nothing after this moment is missed), read it there.

        It starts at the newest event: listeners load their state after subscribing.
        """
        self.last_id = api.last_event_id(self.client)
        stop = self._stop = threading.Event()
        self._stream = self.client.events(after=self.last_id)
        self._thread = threading.Thread(
            target=self._run, args=(stop, self._stream), name="scripthut-widget-events", daemon=True
        )
        self._thread.start()

    def _halt(self) -> threading.Thread | None:
        thread, stream = self._thread, self._stream
        if self._stop is not None:
            self._stop.set()
        self._stop = self._stream = self._thread = None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        return thread

    def _run(self, stop: threading.Event, first: EventStream) -> None:
        delay = RETRY_FIRST
        stream: EventStream | None = first
        while not stop.is_set():
            if stream is None:
                try:
                    stream = self.client.events(after=self.last_id)
                except Exception as exc:
                    log.info("ScriptHut event stream unavailable: %s", exc)
                    stop.wait(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                with self._lock:
                    if stop.is_set():
                        stream.close()
                        return
                    self._stream = stream
            try:
                for event in stream:
                    if stop.is_set():
                        return
                    delay = RETRY_FIRST
                    self.last_id = int(event["id"])
                    self._deliver(event)
            except Exception as exc:
                log.info("ScriptHut event stream dropped (resuming): %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    stream.close()
            stream = None
            stop.wait(delay)  # ended or dropped: resume from the last id after a pause
            delay = min(delay * 2, RETRY_MAX)

    def _deliver(self, event: Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("a ScriptHut widget failed to take an event")


_hubs: weakref.WeakKeyDictionary[Client, EventHub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def hub_for(client: Client) -> EventHub:
    with _hubs_lock:
        hub = _hubs.get(client)
        if hub is None:
            hub = _hubs[client] = EventHub(client)
        return hub


class LiveFeed:
    """Keeps one widget's front end current: events -> source -> patch messages."""

    def __init__(
        self,
        client: Client,
        source: Source,
        *,
        send: Callable[[Message], None],
        publish_snapshot: Callable[[Message], None],
        interval: float = 0.25,
        hub: EventHub | None = None,
    ) -> None:
        self.client = client
        self.source = source
        self.state = ViewState(source.tables)
        self.interval = interval
        self.lock = threading.RLock()
        self.front_end_ready = False
        self._send = send
        self._publish_snapshot = publish_snapshot
        self._hub = hub or hub_for(client)
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._dirty = False
        self._refresh_asked = threading.Event()
        self._last_snapshot = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    def load(self) -> Message:
        """Listen, then load: the first snapshot (events queued meanwhile are applied next)."""
        self._unsubscribe = self._hub.subscribe(self._queue.put)
        try:
            with self.lock:
                self.source.load(self.client)
                return self._snapshot_locked()
        except BaseException:
            self._unsubscribe()
            raise

    def run(self) -> None:
        """Start the thread that applies events and sends updates."""
        self._thread = threading.Thread(target=self._run, name="scripthut-widget-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._queue.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- front end requests ---------------------------------------------------------------

    def ready(self, seq: int) -> None:
        """The front end holds snapshot `seq`: patches from now on.

        An older `seq` needs nothing: snapshots travel as trait updates, which arrive in
        order, so the newer one reaches the front end before any patch sent after it.
        """
        with self.lock:
            self.front_end_ready = True

    def refresh_soon(self) -> None:
        """Re-read what events do not carry now, not at the next `refresh_every`."""
        self._refresh_asked.set()
        self._queue.put(None)  # wakes the thread

    def resync(self) -> None:
        with self.lock:
            self._publish_snapshot(self._snapshot_locked())

    def _snapshot_interval(self) -> float:
        rows = sum(len(t) for t in self.source.rows.values())
        return min(SNAPSHOT_INTERVAL_MAX, max(SNAPSHOT_INTERVAL, rows / SNAPSHOT_ROWS_PER_SECOND))

    def _snapshot_locked(self) -> Message:
        self.source.take_touched()
        self._last_snapshot = time.monotonic()
        self._dirty = False
        return self.state.snapshot(self.source.current_meta(), self.source.rows)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        every = self.source.refresh_every
        next_refresh = time.monotonic() + every if every else float("inf")
        last_flush = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            wait = max(0.0, min(next_refresh, last_flush + self.interval) - now)
            events = self._take(wait if self._dirty else min(next_refresh - now, 5.0))
            if self._stop.is_set():
                return
            if events:
                with self.lock:
                    for event in events:
                        self._dirty |= self._apply(event)
            if self._refresh_asked.is_set() or time.monotonic() >= next_refresh:
                self._refresh_asked.clear()
                self._refresh()
                next_refresh = time.monotonic() + (every or 0.0)
            if self._dirty and time.monotonic() - last_flush >= self.interval:
                self.flush()
                last_flush = time.monotonic()

    def _take(self, timeout: float) -> list[Event]:
        try:
            first = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return []
        events = [] if first is None else [first]
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return events
            if item is not None:
                events.append(item)

    def _apply(self, event: Event) -> bool:
        try:
            return self.source.apply(event)
        except Exception:
            log.exception("a ScriptHut widget could not apply event %s", event.get("id"))
            return False

    def _refresh(self) -> None:
        try:
            data = self.source.fetch(self.client)
        except Exception as exc:
            log.info("ScriptHut widget refresh failed: %s", exc)
            return
        with self.lock:
            self._dirty |= self.source.merge(data)

    def flush(self) -> Message | None:
        """Send what changed: a patch once the front end is ready, else a snapshot."""
        with self.lock:
            if not self.front_end_ready:
                if time.monotonic() - self._last_snapshot < self._snapshot_interval():
                    return None  # _dirty stays set: the thread comes back for it
                message = self._snapshot_locked()
                self._publish_snapshot(message)
                return message
            touched = self.source.take_touched()
            self._dirty = False
            patch = self.state.patch(self.source.current_meta(), self.source.rows, touched)
            if patch is not None:
                self._send(patch)
            return patch
