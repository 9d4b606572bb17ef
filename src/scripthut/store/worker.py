"""Heavy store work off the event loop: one worker thread with its own connection.

The store's own connection belongs to the event loop's thread. Work that reads or writes
many rows (recording a 100,000-task run, reading all its tasks, replaying the event log)
runs here instead, on a second connection to the same file (WAL: readers never wait for
the writer). One thread per worker keeps such work ordered and leaves the loop's thread
competing with at most one busy Python thread for the interpreter.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from scripthut.store.store import Store

T = TypeVar("T")


class StoreWorker:
    """`await worker.call(fn)` runs `fn(store)` in the worker's thread, on its connection."""

    def __init__(self, path: str | Path, name: str = "scripthut-store") -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._local = threading.local()
        self._closed = False

    async def call(self, fn: Callable[[Store], T]) -> T:
        if self._closed:
            raise RuntimeError("the store worker is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, fn)

    def _run(self, fn: Callable[[Store], T]) -> T:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = Store(self.path)
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
