"""The in-process client: the server's service, hosted on a private event loop thread.

Used where no Jupyter server with the extension is reachable (plain IPython, a headless
notebook run). It hosts the engine over the same data directory, or, when another
process holds the engine lease, records runs and queues requests in the store as the
CLI does. Everything touching the store or the engine runs on the loop thread.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

from scripthut.client.base import Client, EventStream, WorkflowInput, run_body, working_folder
from scripthut.errors import InvalidInput
from scripthut.server.service import Mode, ScriptHutService, ServiceOptions

T = TypeVar("T")
SOURCE_TIMEOUT = 900.0  # a sync may clone a large repository
CALL_TIMEOUT = 300.0
QUEUE_SIZE = 10_000
_END = object()


class LocalClient(Client):
    def __init__(
        self,
        *,
        config_file: str | None = None,
        data_dir: str | None = None,
        poll_interval: int | None = None,
        min_poll_interval: float = 1.0,
    ) -> None:
        options = ServiceOptions(
            config_file=config_file,
            data_dir=data_dir,
            poll_interval=poll_interval,
            min_poll_interval=min_poll_interval,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="scripthut-engine", daemon=True
        )
        self._thread.start()
        self._closed = False
        self.service: ScriptHutService = self.run_async(lambda: self._start(options))
        if self.service.mode == Mode.CONFIG_ERROR and self.service.problem is not None:
            problem = self.service.problem
            self.close()
            raise InvalidInput(problem.issues, str(problem))
        self.mode = "engine" if self.service.mode == Mode.ENGINE else "store"
        atexit.register(self.close)

    @staticmethod
    async def _start(options: ServiceOptions) -> ScriptHutService:
        service = ScriptHutService(options)
        await service.start()
        return service

    def call(self, fn: Callable[[], T], timeout: float = CALL_TIMEOUT) -> T:
        """Run `fn` on the loop thread and return its result here."""

        async def run() -> T:
            return fn()

        return self.run_async(run, timeout)

    def run_async(self, fn: Callable[[], Awaitable[T]], timeout: float = CALL_TIMEOUT) -> T:
        """Await `fn()` on the loop thread and return its result here."""
        if self._closed:
            raise RuntimeError("this ScriptHut client is closed")

        async def run() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def close(self) -> None:
        """Stop the engine hosted here (jobs keep running; another engine adopts them)."""
        if self._closed:
            return
        with contextlib.suppress(Exception):
            if hasattr(self, "service"):
                self.run_async(lambda: self.service.stop(5.0), timeout=30.0)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
        atexit.unregister(self.close)

    # -- API ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self.call(self.service.health)

    def submit(
        self,
        workflow: WorkflowInput,
        backend: str | None = None,
        *,
        name: str | None = None,
        max_concurrent: int | None = None,
        no_cache: bool = False,
    ) -> dict[str, Any]:
        body = run_body(workflow, backend, name, max_concurrent, no_cache)
        return self.run_async(lambda: self.service.submit(lambda: body))

    def sources(self) -> list[dict[str, Any]]:
        folder = working_folder()
        sources: list[dict[str, Any]] = self.call(lambda: self.service.sources(folder))["sources"]
        return sources

    def source_action(self, action: str, name: str | None, body: dict[str, Any]) -> dict[str, Any]:
        if action == "sync":
            return self.run_async(lambda: self.service.sync(name, body), SOURCE_TIMEOUT)
        if name is None:
            raise ValueError(f"{action} needs a source name")
        if action == "dry-run":
            return self.run_async(lambda: self.service.source_dry_run(name, body), SOURCE_TIMEOUT)
        return self.run_async(lambda: self.service.run_source(name, body), SOURCE_TIMEOUT)

    def runs(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        page = self.call(lambda: self.service.runs(limit=limit, offset=offset))
        runs: list[dict[str, Any]] = page["runs"]
        return runs

    def run(self, run_id: str, *, tasks: bool = True) -> dict[str, Any]:
        return self.run_async(lambda: self.service.run(run_id, tasks=tasks))

    def task(self, run_id: str, task_id: str) -> dict[str, Any]:
        return self.call(lambda: self.service.task(run_id, task_id))

    def env(self, run_id: str, task_id: str, *, attempt: int | None = None) -> dict[str, Any]:
        return self.call(lambda: self.service.env(run_id, task_id, attempt))

    def script(self, run_id: str, task_id: str, *, attempt: int | None = None) -> str:
        return self.call(lambda: self.service.script(run_id, task_id, attempt))

    def cost(self, run_id: str, *, items: bool = True) -> dict[str, Any]:
        return self.run_async(lambda: self.service.cost(run_id, items=items))

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self.run_async(lambda: self.service.cancel(run_id))

    def rerun(self, run_id: str) -> dict[str, Any]:
        return self.run_async(lambda: self.service.rerun(run_id))

    def notify(self, run_id: str) -> dict[str, Any]:
        return self.service.notify(run_id)

    def jobs(
        self,
        backend: str | None = None,
        state: str | None = None,
        run: str | None = None,
        user: str | None = None,
        all_users: bool = False,
    ) -> list[dict[str, Any]]:
        filters = {"backend": backend, "state": state, "run": run, "user": user}
        reply = self.call(lambda: self.service.jobs(**filters, all_users=all_users))
        jobs: list[dict[str, Any]] = reply["jobs"]
        return jobs

    def logs(
        self,
        run_id: str,
        task_id: str,
        *,
        error: bool = False,
        tail: int | None = None,
        offset: int = 0,
        attempt: int | None = None,
    ) -> dict[str, Any]:
        return self.run_async(
            lambda: self.service.logs(
                run_id, task_id, error=error, tail=tail, offset=offset, attempt=attempt
            )
        )

    def outputs(self, run_id: str, task_id: str, *, attempt: int | None = None) -> dict[str, Any]:
        return self.call(lambda: self.service.outputs(run_id, task_id, attempt))

    def output(self, run_id: str, task_id: str, path: str, *, attempt: int | None = None) -> bytes:
        content = self.run_async(lambda: self.service.output(run_id, task_id, path, attempt))
        return content.data

    def manifest(self, run_id: str, task_id: str) -> dict[str, Any]:
        return self.call(lambda: self.service.manifest(run_id, task_id))

    def summary(self, run_id: str) -> dict[str, Any]:
        return self.call(lambda: self.service.summary(run_id))

    def events(
        self, after: int | None = None, run: str | None = None, timeout: float | None = None
    ) -> EventStream:
        return LocalStream(self, after, run, timeout)


class LocalStream:
    """Events from the in-process broadcaster, handed to the calling thread."""

    def __init__(
        self, client: LocalClient, after: int | None, run: str | None, timeout: float | None
    ) -> None:
        self.last_id = after
        self._client = client
        self._run = run
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._queue: queue.Queue[object] = queue.Queue()
        self._stop = threading.Event()
        self._listening = client.call(lambda: client.service.listen(after, run))
        self._future = asyncio.run_coroutine_threadsafe(self._pump(), client._loop)
        self._events = self._read()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._events)

    def close(self) -> None:
        self._stop.set()

    async def _pump(self) -> None:
        """On the loop thread: listener batches into the queue; resume after a drop."""
        listener = self._listening
        last = self.last_id
        try:
            while not self._stop.is_set():
                batch = await listener.next_batch(timeout=0.5)
                if batch is None:
                    if not listener.dropped:
                        return
                    listener = self._client.service.listen(last or 0, self._run)
                    continue
                for packet in (p for delivered in batch for p in delivered.packets):
                    while self._queue.qsize() >= QUEUE_SIZE and not self._stop.is_set():
                        await asyncio.sleep(0.05)  # the reader is behind: wait, never drop
                    self._queue.put(packet.event.to_json())
                    last = packet.event.id
        finally:
            listener.close()
            self._queue.put(_END)

    def _read(self) -> Iterator[dict[str, Any]]:
        while not self._stop.is_set():
            left = None if self._deadline is None else self._deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            try:
                item = self._queue.get(timeout=min(left, 0.5) if left is not None else 0.5)
            except queue.Empty:
                continue
            if item is _END:
                break
            event = cast(dict[str, Any], item)
            self.last_id = int(event["id"])
            yield event
        self._stop.set()
