"""A CLI session: the store, and either an engine hosted here or the one that holds the lease.

When no other engine drives the data directory, the session hosts one for as long as
the command runs. When another engine does (a Jupyter server, another `scripthut run`),
the session records runs and requests in the store and that engine carries them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

from scripthut.backends.registry import BackendRegistry
from scripthut.config import Config, ConfigSource, load_config
from scripthut.engine.create import record_run
from scripthut.engine.engine import Engine
from scripthut.errors import InvalidInput, LeaseHeld, NotFound
from scripthut.server.config_reload import ConfigReloads, keep_running_settings
from scripthut.sources import Sources, transports_of
from scripthut.store import RunRecord, Store
from scripthut.workflow.model import Workflow

STORE_POLL = 0.5
COMMAND_WAIT = 30.0
LOG_POLL = 0.5


class Session:
    def __init__(self, config: Config, store: Store, *, host_engine: bool) -> None:
        self.config = config
        self.store = store
        self.host_engine = host_engine
        self.engine: Engine | None = None
        self.registry = BackendRegistry(config)
        self.sources = Sources(config, transports_of(self.registry.get))
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.host_engine:
            return
        engine = Engine(self.config, self.store, registry=self.registry)
        try:
            await engine.start()
        except LeaseHeld:
            return
        self.engine = engine
        if isinstance(self.config.layers, ConfigSource):  # edits apply while the command runs
            reloads = ConfigReloads(self.config.layers)
            self._watch = asyncio.create_task(reloads.watch(lambda: self._reload(reloads), 1.0))

    async def _reload(self, reloads: ConfigReloads) -> None:
        """The engine hosted here takes the edited files; a broken edit keeps the running ones."""
        try:
            config = await asyncio.to_thread(reloads.source.load)
        except InvalidInput as exc:
            reloads.failed(exc)
            return
        notices = keep_running_settings(self.config, config)
        if self.engine is not None:
            reloads.succeeded(await self.engine.reload(config), notices)
        self.config = config

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self.engine is not None:
            await self.engine.stop()
            self.engine = None
        else:
            await self.registry.close()

    def resolve(self, run: str) -> str:
        return self.store.resolve_run_id(run)

    def submit(self, workflow: Workflow, **options: object) -> RunRecord:
        if self.engine is not None:
            return self.engine.submit(workflow, **options)  # type: ignore[arg-type]
        record = record_run(self.store, self.config, workflow, **options).run  # type: ignore[arg-type]
        self.store.enqueue_command("load", record.id, {})
        return record

    async def cancel(self, run_id: str) -> RunRecord:
        if self.engine is not None:
            return await self.engine.cancel(run_id)
        self.store.enqueue_command("cancel", run_id, {})
        return self.store.get_run(run_id)

    async def rerun(self, run_id: str) -> RunRecord:
        if self.engine is not None:
            return await self.engine.rerun(run_id)
        await self._taken(self.store.enqueue_command("rerun", run_id, {}))
        return self.store.get_run(run_id)

    async def _taken(self, command_id: int, timeout: float = COMMAND_WAIT) -> None:
        """Wait until the engine holding the lease took a request (none holds it: no wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.store.command_done(command_id) and loop.time() < deadline:
            if self.store.lease_holder() is None:
                return
            await asyncio.sleep(0.1)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunRecord:
        last = self.store.get_run(run_id)
        async for _counts, _total, current in self.watch(run_id, timeout=timeout):
            last = current
        return last

    async def watch(
        self, run_id: str, *, stop: asyncio.Event | None = None, timeout: float | None = None
    ) -> AsyncIterator[tuple[dict[str, int], int, RunRecord]]:
        """(counts per state, total tasks, run) after each change, until the run is final."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        subscription = self.engine.events.subscribe() if self.engine else None
        last: tuple[dict[str, int], str, str | None] | None = None
        try:
            while True:
                record = self._current(run_id)
                counts = self.store.task_counts(run_id)
                if last != (counts, record.state.value, record.message):
                    last = (counts, record.state.value, record.message)
                    yield counts, sum(counts.values()), record
                if record.state.is_final or (stop is not None and stop.is_set()):
                    return
                if deadline is not None and loop.time() >= deadline:
                    return
                if subscription is not None:
                    await subscription.get(timeout=STORE_POLL)
                    subscription.get_nowait()
                    subscription.resume()
                else:
                    await asyncio.sleep(STORE_POLL)
        finally:
            if subscription is not None:
                subscription.close()

    def _current(self, run_id: str) -> RunRecord:
        if self.engine is not None and run_id in self.engine.runs:
            return self.engine.runs[run_id].record
        return self.store.get_run(run_id)

    async def print_log(
        self,
        run_id: str,
        task_id: str,
        *,
        error: bool = False,
        tail: int | None = None,
        follow: bool = False,
        attempt: int | None = None,
        as_json: bool = False,
    ) -> None:
        """Write a task's log to stdout; as JSON: one object, or one per chunk when following."""
        self.store.task(run_id, task_id)
        try:
            record = self.store.attempt(run_id, task_id, attempt)
        except NotFound:
            if attempt is not None:
                raise
            sys.stderr.write(f"task '{task_id}' has not been submitted yet\n")
            return
        if record.cached:  # no job ran: no log file to read
            note = record.cache_note()
            head = {"run": run_id, "task": task_id, "attempt": record.attempt, "cached": True}
            if as_json:
                _print_json({**head, "text": note})
            else:
                sys.stdout.write(note)
            return
        backend = self.registry.get(record.backend)
        path = record.stderr_path if error else record.stdout_path
        offset = start = 0
        if tail is not None:
            offset = start = await _tail_offset(backend, path, tail)
        head = {"run": run_id, "task": task_id, "attempt": record.attempt, "path": path}
        head["log"] = "error" if error else "output"
        gathered = bytearray()
        while True:
            chunk = await backend.read_log(path, offset)
            if chunk.data:
                if not as_json:
                    sys.stdout.buffer.write(chunk.data)
                    sys.stdout.buffer.flush()
                elif follow:
                    _print_json({**head, "offset": offset, "text": _text(chunk.data)})
                else:
                    gathered += chunk.data
                offset = chunk.next_offset
                continue
            if not follow or self._attempt_final(run_id, task_id, record.attempt):
                if as_json and not follow:
                    text = _text(bytes(gathered))
                    _print_json(
                        {**head, "offset": start, "next_offset": offset, "missing": chunk.missing}
                        | {"text": text}
                    )
                elif chunk.missing and offset == 0:
                    sys.stderr.write(f"no {'error' if error else 'output'} log yet at {path}\n")
                return
            await asyncio.sleep(LOG_POLL)

    def _attempt_final(self, run_id: str, task_id: str, attempt: int) -> bool:
        return self.store.attempt(run_id, task_id, attempt).state not in (
            "intent",
            "submitted",
            "running",
        )


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _print_json(doc: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def _tail_offset(backend: object, path: str, lines: int) -> int:
    """The byte offset where the last `lines` lines of a file start."""
    from scripthut.backends.base import Backend

    assert isinstance(backend, Backend)
    window = 64 << 10
    while True:
        chunk = await backend.read_log(path, -window, window)
        if chunk.missing:
            return 0
        data = chunk.data[:-1] if chunk.data.endswith(b"\n") else chunk.data
        if data.count(b"\n") >= lines or chunk.offset == 0:
            cut = len(data)
            for _ in range(lines):
                cut = data.rfind(b"\n", 0, cut)
                if cut < 0:
                    return chunk.offset
            return chunk.offset + cut + 1
        window *= 4


@contextmanager
def open_session(config_path: str | Path | None, *, host_engine: bool) -> Iterator[Session]:
    config = load_config(config_path)
    store = Store.in_data_dir(config.data_dir)
    try:
        yield Session(config, store, host_engine=host_engine)
    finally:
        store.close()
