"""The API's logic, free of HTTP: one object the handlers and the in-process client share.

It loads the config (a broken one is reported, never raised at startup), opens the store
and hosts the engine. When another process holds the engine lease it runs in client mode:
runs are recorded in the store and requests queued for the lease holder, as the CLI does,
and it takes over as soon as the lease is free. Every method returns JSON-able data or
raises a `ScriptHutError` that `errors.error_reply` maps to an HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from scripthut import __version__
from scripthut.backends.registry import BackendRegistry
from scripthut.config import Config, WorkflowConfig, load_config
from scripthut.engine.create import anchor_working_dirs, record_run
from scripthut.engine.engine import Engine
from scripthut.env_rules import EnvRule
from scripthut.errors import InvalidInput, LeaseHeld
from scripthut.server import reads, results
from scripthut.server.commands import (
    DEFAULT_MAX_COMMANDS,
    DEFAULT_TIMEOUT,
    CommandSlots,
    workflow_tasks,
)
from scripthut.server.errors import Conflict, ServiceUnavailable, issues_json
from scripthut.server.ids import addressable_workflow
from scripthut.server.logs import DEFAULT_LIMIT, read_log
from scripthut.server.requests import (
    DEFAULT_MAX_BODY,
    RunRequest,
    read_run_options,
    read_run_request,
)
from scripthut.server.stream import DEFAULT_BUFFER, Broadcaster, Listener
from scripthut.store import RunRecord, Store, StoreWorker, release
from scripthut.workflow.model import Workflow

log = logging.getLogger("scripthut.server")

TAKEOVER_CHECK = 5.0
CHECKPOINT_INTERVAL = 1.0


class Mode(StrEnum):
    STARTING = "starting"
    ENGINE = "engine"  # this process hosts the engine
    CLIENT = "client"  # another process holds the lease; requests go through the store
    CONFIG_ERROR = "config_error"
    ERROR = "error"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """Settings that win over scripthut.yaml (None: not set)."""

    config_file: str | None = None
    data_dir: str | None = None
    poll_interval: int | None = None
    root_dir: Path | None = None  # request paths must stay inside it (None: anywhere)
    min_poll_interval: float = 1.0
    command_timeout: float = DEFAULT_TIMEOUT
    max_commands: int = DEFAULT_MAX_COMMANDS  # workflow commands running at once (more: 429)
    max_body: int = DEFAULT_MAX_BODY  # bytes of a request body (more: 413)
    stream_buffer: int = DEFAULT_BUFFER
    takeover_check: float = TAKEOVER_CHECK


def load_settings(options: ServiceOptions) -> Config:
    """Precedence: options > $SCRIPTHUT_CONFIG / $SCRIPTHUT_DATA_DIR > scripthut.yaml > defaults."""
    config = load_config(options.config_file or None)
    if options.data_dir:
        config.settings.data_dir = Path(options.data_dir).expanduser().absolute()
    if options.poll_interval:
        config.settings.poll_interval = options.poll_interval
    return config


class ScriptHutService:
    def __init__(self, options: ServiceOptions) -> None:
        self.options = options
        self.mode = Mode.STARTING
        self.config: Config | None = None
        self.problem: ServiceUnavailable | None = None
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.registry: BackendRegistry | None = None
        self.worker: StoreWorker | None = None  # heavy store work, off the event loop
        self.events = Broadcaster(buffer_size=options.stream_buffer)
        self.commands = CommandSlots(options.max_commands)
        self._watch: asyncio.Task[None] | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        try:
            self.config = load_settings(options)
        except InvalidInput as exc:
            self.problem = ServiceUnavailable(exc.title, exc.issues)
            self.mode = Mode.CONFIG_ERROR

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and host the engine, or run as a client of the lease holder."""
        if self.config is None:
            return
        try:
            self.store = Store.in_data_dir(self.config.data_dir)
        except (OSError, sqlite3.Error) as exc:
            self._fail(f"cannot open the store in {self.config.data_dir}: {exc}")
            return
        self.worker = StoreWorker(self.store.path, "scripthut-requests")
        self.store.defer_checkpoints()  # the loop's commits stay short; the worker copies
        self._checkpoints = asyncio.create_task(self._checkpoint(), name="scripthut-checkpoint")
        if not await self._host_engine() and self.mode == Mode.CLIENT:
            self._watch = asyncio.create_task(self._watch_lease(), name="scripthut-lease")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the stream and the engine (jobs keep running) and close the store."""
        for task in (self._watch, self._checkpoints):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.events.close()
        if self.engine is not None:
            await self.engine.stop(timeout)
            self.engine = None
        if self.registry is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.registry.close(), timeout)
        if self.worker is not None:
            await asyncio.to_thread(self.worker.close)
            self.worker = None
        if self.store is not None:
            self.store.close()
            self.store = None
        self.mode = Mode.STOPPED

    async def _host_engine(self) -> bool:
        assert self.config is not None
        assert self.store is not None
        engine = Engine(self.config, self.store, min_poll_interval=self.options.min_poll_interval)
        try:
            await engine.start()
        except LeaseHeld as exc:
            log.info("ScriptHut runs in client mode: %s", exc)
            self.mode = Mode.CLIENT
            self.registry = self.registry or BackendRegistry(self.config)
            self.events.attach(self.store, None)
            return False
        except Exception as exc:
            log.exception("the ScriptHut engine failed to start")
            with contextlib.suppress(Exception):
                await engine.stop(timeout=2.0)
            self._fail(f"the engine failed to start: {exc}")
            return False
        self.engine, self.mode = engine, Mode.ENGINE
        self.events.attach(self.store, engine.events)
        if self.registry is not None:
            await self.registry.close()
            self.registry = None
        return True

    async def _watch_lease(self) -> None:
        """In client mode: host the engine once the lease holder is gone."""
        assert self.store is not None
        while self.mode == Mode.CLIENT:
            await asyncio.sleep(self.options.takeover_check)
            if self.store.lease_holder() is None and await self._host_engine():
                log.info("the engine lease was free: ScriptHut now hosts the engine")

    async def _checkpoint(self) -> None:
        """The WAL is copied into the database file in the worker thread, never on a commit
        of the loop's connection."""
        while self.worker is not None:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            try:
                await self.worker.call(Store.checkpoint)
            except (sqlite3.Error, RuntimeError) as exc:
                log.debug("checkpoint skipped: %s", exc)

    def _fail(self, message: str) -> None:
        self.problem = ServiceUnavailable(message)
        self.mode = Mode.ERROR
        self.events.detach()

    def _ready(self) -> tuple[Config, Store]:
        if self.problem is not None:
            raise self.problem
        if self.config is None or self.store is None:
            raise ServiceUnavailable(f"ScriptHut is {self.mode.value}")
        return self.config, self.store

    def _worker(self) -> StoreWorker:
        self._ready()
        if self.worker is None:
            raise ServiceUnavailable(f"ScriptHut is {self.mode.value}")
        return self.worker

    def _registry(self) -> BackendRegistry:
        registry = self.engine.registry if self.engine is not None else self.registry
        if registry is None:
            raise ServiceUnavailable(f"ScriptHut is {self.mode.value}")
        return registry

    # -- status ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        ok = self.mode in (Mode.ENGINE, Mode.CLIENT)
        out: dict[str, Any] = {
            "status": "ok" if ok else self.mode.value,
            "mode": self.mode.value,
            "version": __version__,
            "config_file": self._config_file(),
            "data_dir": str(self.config.data_dir) if self.config else None,
            "stream": {
                "clients": self.events.clients,
                "dropped": self.events.dropped,
                "last_event_id": self.events.cursor,
            },
        }
        if self.problem is not None:
            out["message"] = str(self.problem)
            out["errors"] = issues_json(self.problem.issues)
        if self.mode == Mode.CLIENT and self.store is not None:
            holder = self.store.lease_holder() or {}
            out["lease"] = holder
            out["message"] = (
                f"client mode: another process drives this data directory (pid "
                f"{holder.get('pid')} on {holder.get('host')}); requests are queued for it"
            )
        if self.engine is not None:
            out["engine"] = {"owner": self.engine.owner, "active_runs": len(self.engine.runs)}
        return out

    def _config_file(self) -> str | None:
        if self.config is not None and self.config.source_path is not None:
            return str(self.config.source_path)
        return self.options.config_file

    async def backends(self) -> dict[str, Any]:
        config, _ = self._ready()
        return await reads.backends_json(config, self._registry(), self.engine)

    def jobs(
        self,
        *,
        backend: str | None = None,
        state: str | None = None,
        run: str | None = None,
        user: str | None = None,
        all_users: bool = False,
    ) -> dict[str, Any]:
        """Jobs, by default only `settings.filter_user`'s other jobs; `all_users` shows all."""
        config, store = self._ready()
        default = config.settings.filter_user
        chosen = None if all_users else (user or default)
        return reads.jobs_json(
            self.engine,
            store,
            backend=backend,
            state=state,
            run=run,
            user=chosen,
            default_user=default,
        )

    async def cancel_job(self, backend: str, job_id: str) -> dict[str, Any]:
        config, store = self._ready()
        name = config.backend(backend).name
        if self.engine is not None:
            await self.engine.cancel_job(name, job_id)
        else:
            store.enqueue_command("cancel_job", None, {"backend": name, "job_id": job_id})
        return {"backend": name, "job_id": job_id, "cancel_requested": True}

    # -- runs -----------------------------------------------------------------------------

    def runs(self, *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        _, store = self._ready()
        return reads.runs_page(store, limit, offset)

    async def run(self, run_id: str, *, tasks: bool = True) -> dict[str, Any]:
        """A run; with its tasks, read and turned into JSON in the worker thread."""
        _, store = self._ready()
        record = store.get_run(store.resolve_run_id(run_id))
        if not tasks:
            return reads.run_json(store, record)
        return await self._worker().call(
            lambda reader: reads.run_json(reader, record, tasks=True), heavy=True
        )

    async def submit(self, body: Callable[[], object]) -> dict[str, Any]:
        """Start a run from `{"workflow": ...}` or `{"path": ...}`; 400 lists every problem.

        `body()` gives the request body; it is called in the worker thread, so decoding a
        large document happens there too."""
        root = self.options.root_dir
        config, _ = self._ready()

        def read() -> RunRequest:
            document = body()
            try:
                request = read_run_request(document, root)
            finally:
                if isinstance(document, dict) and isinstance(document.get("workflow"), list):
                    release(document["workflow"])
            if request.source is not None and request.base_dir is not None:
                anchor_working_dirs(config, request.workflow, request.backend, request.base_dir)
            return request

        return await self._start(read)

    async def _start(
        self, read: Callable[[], RunRequest], workflow_env: Sequence[EnvRule] = ()
    ) -> dict[str, Any]:
        """Read, validate and record the run in the worker thread (its own connection, one
        transaction), then have the engine adopt it, or queue it for the lease holder.
        Nothing is recorded when anything is wrong."""
        config, store = self._ready()

        def write(writer: Store) -> RunRecord:
            request = read()
            new = record_run(
                writer,
                config,
                request.workflow,
                backend=request.backend,
                name=request.name,
                max_concurrent=request.max_concurrent,
                source=request.source,
                base_dir=request.base_dir,
                workflow_env=workflow_env,
            )
            release(new.tasks)  # only the run goes back to the loop: the rest is freed here
            release(request.workflow.tasks)
            return new.run

        record = await self._worker().call(write, heavy=True)
        if self.engine is not None:
            record = await self.engine.load(record.id)
        else:
            store.enqueue_command("load", record.id, {})
        return reads.run_json(store, record)

    async def cancel(self, run_id: str) -> dict[str, Any]:
        _, store = self._ready()
        run_id = store.resolve_run_id(run_id)
        if self.engine is not None:
            record = await self.engine.cancel(run_id)
        else:
            store.get_run(run_id)
            store.enqueue_command("cancel", run_id, {})
            record = store.get_run(run_id)
        return {**reads.run_json(store, record), "queued": self.engine is None}

    async def rerun(self, run_id: str) -> dict[str, Any]:
        _, store = self._ready()
        run_id = store.resolve_run_id(run_id)
        if self.engine is not None:
            record = await self.engine.rerun(run_id)
        else:
            store.get_run(run_id)
            store.enqueue_command("rerun", run_id, {})
            record = store.get_run(run_id)
        return {**reads.run_json(store, record), "queued": self.engine is None}

    def delete(self, run_id: str) -> None:
        """Forget a finished run (its log files stay where they are)."""
        _, store = self._ready()
        record = store.get_run(run_id)
        if not record.state.is_final:
            raise Conflict(f"run '{run_id}' is {record.state.value}: cancel it or let it finish")
        store.delete_run(run_id)

    # -- tasks ----------------------------------------------------------------------------

    def task(self, run_id: str, task_id: str) -> dict[str, Any]:
        _, store = self._ready()
        return reads.task_detail(store, store.resolve_run_id(run_id), task_id)

    def script(self, run_id: str, task_id: str, attempt: int | None = None) -> str:
        _, store = self._ready()
        return reads.task_script(store, store.resolve_run_id(run_id), task_id, attempt)

    def env(self, run_id: str, task_id: str, attempt: int | None = None) -> dict[str, Any]:
        config, store = self._ready()
        run_id = store.resolve_run_id(run_id)
        return reads.task_env(store, config, self._registry(), run_id, task_id, attempt)

    async def logs(
        self,
        run_id: str,
        task_id: str,
        *,
        error: bool = False,
        tail: int | None = None,
        offset: int = 0,
        limit: int = DEFAULT_LIMIT,
        attempt: int | None = None,
    ) -> dict[str, Any]:
        """Part of the output (or error) log the store recorded for this task's attempt."""
        _, store = self._ready()
        run_id = store.resolve_run_id(run_id)
        store.task(run_id, task_id)
        record = store.attempt(run_id, task_id, attempt)
        path = record.stderr_path if error else record.stdout_path
        backend = self._registry().get(record.backend)
        read = await read_log(backend, path, offset=offset, tail=tail, limit=limit)
        return {
            "run": run_id,
            "task": task_id,
            "attempt": record.attempt,
            "stream": "error" if error else "output",
            "final": record.state not in reads.OPEN_ATTEMPT_STATES,
            **read.to_json(),
        }

    # -- what tasks wrote --------------------------------------------------------------------

    def outputs(self, run_id: str, task_id: str, attempt: int | None = None) -> dict[str, Any]:
        _, store = self._ready()
        return results.outputs_json(store, store.resolve_run_id(run_id), task_id, attempt)

    async def output(
        self, run_id: str, task_id: str, path: str, attempt: int | None = None
    ) -> results.OutputContent:
        _, store = self._ready()
        run_id = store.resolve_run_id(run_id)
        return await results.read_output(store, self._registry(), run_id, task_id, path, attempt)

    def manifest(self, run_id: str, task_id: str) -> dict[str, Any]:
        _, store = self._ready()
        run_id = store.resolve_run_id(run_id)
        store.task(run_id, task_id)
        return store.manifest(run_id, task_id)

    def summary(self, run_id: str) -> dict[str, Any]:
        _, store = self._ready()
        return results.summary_json(store, store.resolve_run_id(run_id))

    # -- configured workflows -------------------------------------------------------------

    def workflows(self) -> dict[str, Any]:
        config, _ = self._ready()
        names = [w.name for w in config.workflows if addressable_workflow(w.name)]
        return reads.workflows_json(config, names)

    async def dry_run(self, name: str) -> dict[str, Any]:
        config, _ = self._ready()
        entry = config.workflow(name)
        return reads.dry_run_json(entry, await self._command(config, entry))

    async def run_workflow(self, name: str, body: object) -> dict[str, Any]:
        config, _ = self._ready()
        entry = config.workflow(name)
        options = read_run_options(body)
        workflow = await self._command(config, entry)
        workflow.env_groups = {**entry.env_groups, **workflow.env_groups}
        request = RunRequest(
            workflow,
            backend=entry.backend,
            name=options.name or entry.name,
            max_concurrent=options.max_concurrent or entry.max_concurrent,
            source=f"workflow '{entry.name}' in {self._config_file() or 'the config'}",
            base_dir=str(self._cwd()),
        )
        return await self._start(lambda: request, workflow_env=entry.env)

    async def _command(self, config: Config, entry: WorkflowConfig) -> Workflow:
        """The tasks a workflow's command prints, within the server's command slots."""
        with self.commands.slot():
            return await workflow_tasks(config, entry, self._cwd(), self.options.command_timeout)

    def _cwd(self) -> Path:
        return self.options.root_dir or Path.cwd()

    # -- events ---------------------------------------------------------------------------

    def listen(self, after: int | None, run: str | None = None) -> Listener:
        _, store = self._ready()
        if run is not None:
            run = store.resolve_run_id(run)
        return self.events.listen(after, run)


__all__ = ["Mode", "ScriptHutService", "ServiceOptions", "load_settings"]
