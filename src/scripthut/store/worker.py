"""Heavy store work off the event loop: one worker thread with its own connection.

The store's own connection belongs to the event loop's thread. Work that reads or writes
many rows (recording a 100,000-task run, reading all its tasks, replaying the event log)
runs here instead, on a second connection to the same file (WAL: readers never wait for
the writer). One thread per worker keeps such work ordered and leaves the loop's thread
competing with at most one busy Python thread for the interpreter.

While a heavy call runs (`heavy=True`), the cyclic garbage collector's automatic collections
are paused (process-wide; nested pauses are counted). The many short-lived objects of a large run
(its parsed document, its rows, its JSON) are then freed by reference counting as soon as
the call ends, instead of being promoted into the old generation, whose full collections
hold every thread, the loop's included, for hundreds of milliseconds once a large run is
in memory. What survives the call is moved to the oldest generation when the pause ends.

A large run's DAG is also kept out of full collections while it is resident: the engine calls
`keep_resident` when it adopts one and `drop_resident` when it lets it go. The first freezes
what is alive (`gc.freeze()`: full collections no longer walk it); once no large run is
resident, `gc.unfreeze()` hands everything back to the collector, so cyclic garbage that
happened to be alive at a freeze is collected then.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from scripthut.store.store import Store

T = TypeVar("T")
RELEASE_PAGE = 1_000
RESIDENT_THRESHOLD = 10_000  # tasks from which a run's DAG is kept out of full collections


class StoreWorker:
    """`await worker.call(fn)` runs `fn(store)` in the worker's thread, on its connection."""

    def __init__(self, path: str | Path, name: str = "scripthut-store") -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._local = threading.local()
        self._closed = False

    async def call(self, fn: Callable[[Store], T], *, heavy: bool = False) -> T:
        """`heavy`: it builds or reads a whole large run; the collector is paused meanwhile."""
        if self._closed:
            raise RuntimeError("the store worker is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, fn, heavy)

    def _run(self, fn: Callable[[Store], T], heavy: bool) -> T:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = Store(self.path)
        if not heavy:
            return fn(store)
        with gc_paused():
            return fn(store)

    def close(self) -> None:
        """Finish queued work, close the connection and end the thread (blocks until then)."""
        if self._closed:
            return
        self._closed = True
        self._executor.submit(self._close_store)
        self._executor.shutdown(wait=True)

    def _close_store(self) -> None:
        store: Store | None = getattr(self._local, "store", None)
        if store is not None:
            store.close()
            self._local.store = None


def release(items: list[Any]) -> None:
    """Empty a large list a page at a time: freeing 100,000 records in one go is one C call
    that holds the interpreter (and so the event loop) for tens of milliseconds."""
    while items:
        del items[-RELEASE_PAGE:]


_pause_lock = threading.Lock()
_pauses = 0
_was_enabled = False
_resident: set[int] = set()


def keep_resident(key: int, size: int) -> None:
    """A large structure (`size` tasks) was just adopted: keep it out of full collections."""
    if size < RESIDENT_THRESHOLD:
        return
    with _pause_lock:
        _resident.add(key)
        gc.freeze()


def drop_resident(key: int) -> None:
    """It was let go: when it was the last, the collector gets everything back."""
    with _pause_lock:
        if key not in _resident:
            return
        _resident.discard(key)
        if not _resident:
            gc.unfreeze()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Automatic cyclic garbage collection off for the duration (left off if it was off)."""
    global _pauses, _was_enabled
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0:
                # What survived (a run's DAG the engine adopts) goes to the oldest generation
                # at once (two list splices), instead of being walked by each young collection
                # on its way there; it is not counted towards triggering a full collection.
                # While a large run is resident, it stays frozen with the rest.
                gc.freeze()
                if not _resident:
                    gc.unfreeze()
                if _was_enabled:
                    gc.enable()
