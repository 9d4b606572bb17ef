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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from scripthut import __version__
from scripthut.backends.registry import BackendRegistry
from scripthut.config import Config, ConfigSource, PricingConfig
from scripthut.cost import Pricing, stored_run_cost
from scripthut.daemon import control
from scripthut.daemon.files import SERVER, role_of
from scripthut.engine.create import anchor_working_dirs, record_run
from scripthut.engine.engine import Engine
from scripthut.env_rules import EnvRule
from scripthut.errors import InvalidInput, LeaseHeld
from scripthut.notify import opt_in
from scripthut.server import reads
from scripthut.server.commands import (
    DEFAULT_MAX_COMMANDS,
    DEFAULT_TIMEOUT,
    CommandSlots,
)
from scripthut.server.config_reload import ConfigReloads, keep_running_settings
from scripthut.server.configured import ConfiguredRuns
from scripthut.server.errors import Conflict, ServiceUnavailable, issues_json
from scripthut.server.requests import (
    DEFAULT_MAX_BODY,
    RunRequest,
    read_run_request,
)
from scripthut.server.stream import DEFAULT_BUFFER, Broadcaster, Listener
from scripthut.server.task_reads import TaskReads
from scripthut.sources import Provenance, Sources, SyncCache
from scripthut.store import RunRecord, Store, StoreWorker, release

log = logging.getLogger("scripthut.server")

TAKEOVER_CHECK = 5.0
CONFIG_CHECK = 1.0
DAEMON_RESPAWN = 30.0  # seconds between two attempts to start the standalone engine
ENGINE_MODES = ("auto", "server", "daemon")
CHECKPOINT_INTERVAL = 1.0
PRICING_REFRESH = 3600.0  # the price table is read again (cache file, fetch) this often


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
    # auto: use a running engine, else host one (handed over to a standalone engine that
    # asks); server: host one, never hand over; daemon: never host one, start the
    # standalone engine when none runs
    engine: str = "auto"
    config_check: float = CONFIG_CHECK  # seconds between looks at the config files (0: never)


def config_source(options: ServiceOptions) -> ConfigSource:
    """The files the service reads: the global file, and the project file found from the
    server's root (or the current folder); options win over both."""

    def adjust(config: Config) -> None:
        if options.data_dir:
            config.settings.data_dir = Path(options.data_dir).expanduser().absolute()
        if options.poll_interval:
            config.settings.poll_interval = options.poll_interval

    return ConfigSource(options.config_file or None, options.root_dir, adjust)


def load_settings(options: ServiceOptions) -> Config:
    """Precedence: options > $SCRIPTHUT_CONFIG / $SCRIPTHUT_DATA_DIR > scripthut.yaml > defaults."""
    return config_source(options).load()


class ScriptHutService(TaskReads, ConfiguredRuns):
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
        self._pricing: tuple[float, PricingConfig | None, Pricing] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self._sources: dict[int, Sources] = {}  # per folder configuration (by identity)
        self._sync_cache: SyncCache | None = None  # shared by them all
        self.source = config_source(options)
        self.reloads = ConfigReloads(self.source)
        self._release: asyncio.Task[None] | None = None
        self._spawned_at = -1e9
        try:
            self.config = self.source.load()
            self.reloads.loaded_at = time.time()
        except InvalidInput as exc:
            self.problem = ServiceUnavailable(exc.title, exc.issues)
            self.mode = Mode.CONFIG_ERROR
            self.reloads.failed(exc)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and host the engine, or run as a client of the lease holder; watch
        the config files (a broken config at start is taken up once it is fixed)."""
        if self.options.config_check > 0 and self.reloads.task is None:
            self.reloads.task = asyncio.create_task(
                self.reloads.watch(self.reload_config, self.options.config_check),
                name="scripthut-config",
            )
        await self._open()

    async def _open(self) -> None:
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
        if self.options.engine == "daemon":
            self._as_client("the standalone engine drives this data directory")
            self._start_daemon()
        elif await self._host_engine() or self.mode != Mode.CLIENT:
            return
        self._watch = asyncio.create_task(self._watch_lease(), name="scripthut-lease")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the stream and the engine (jobs keep running) and close the store."""
        for task in (self._release, self._watch, self._checkpoints, self.reloads.task):
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
        engine.owner = f"{SERVER}/{engine.owner}"
        engine.yields_to_daemon = self.options.engine == "auto"
        try:
            await engine.start()
        except LeaseHeld as exc:
            self._as_client(str(exc))
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
        self._release = asyncio.create_task(self._on_release(engine), name="scripthut-release")
        return True

    def _as_client(self, why: str) -> None:
        assert self.config is not None
        assert self.store is not None
        log.info("ScriptHut runs in client mode: %s", why)
        self.mode = Mode.CLIENT
        self.registry = self.registry or BackendRegistry(self.config)
        self.events.attach(self.store, None)

    async def _on_release(self, engine: Engine) -> None:
        """The hosted engine stopped driving (lease handed over or lost): become a client."""
        assert self.store is not None
        await engine.released.wait()
        handover = engine.handover_to
        await engine.stop()
        self.engine = None
        if handover is not None:
            self.store.grant_lease(
                str(handover["owner"]), int(handover["pid"]), str(handover["host"])
            )
        self._as_client("the engine lease went to " + str((handover or {}).get("owner")))
        self._watch = asyncio.create_task(self._watch_lease(), name="scripthut-lease")

    def _start_daemon(self) -> None:
        """Engine mode `daemon`: start the standalone engine when none drives the store."""
        assert self.config is not None
        assert self.store is not None
        now = time.monotonic()
        if self.store.lease_holder() is not None or now - self._spawned_at < DAEMON_RESPAWN:
            return
        self._spawned_at = now
        try:
            proc = control.spawn(self.config)
        except OSError as exc:
            log.error("could not start the standalone engine: %s", exc)
            return
        log.info("started the standalone engine (pid %d)", proc.pid)

    async def _watch_lease(self) -> None:
        """In client mode: host the engine once the lease holder is gone."""
        assert self.store is not None
        while self.mode == Mode.CLIENT:
            await asyncio.sleep(self.options.takeover_check)
            if self.options.engine == "daemon":
                self._start_daemon()
            elif self.store.lease_holder() is None and await self._host_engine():
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

    # -- configuration --------------------------------------------------------------------

    async def reload_config(self) -> dict[str, Any]:
        """Read the config files again and use them; a broken edit keeps the running config
        and its located errors are reported (here, in `health`, `GET config`)."""
        async with self.reloads.lock:
            try:
                config = await asyncio.to_thread(self.source.load)
            except InvalidInput as exc:
                self.reloads.failed(exc)
                self._publish_config()
                return self.reloads.status()
            if self.config is None:  # broken at start: start now
                self.config, self.problem, self.mode = config, None, Mode.STARTING
                self.reloads.succeeded(None, [])
                await self._open()
                log.info("ScriptHut started (%s mode) with the fixed config", self.mode.value)
                return self.reloads.status()
            notices = keep_running_settings(self.config, config)
            plan = None
            if self.engine is not None:
                plan = await self.engine.reload(config)
            elif self.registry is not None:
                old, self.registry = self.registry, BackendRegistry(config)
                with contextlib.suppress(Exception):
                    await old.close()
            self.config = config
            self._sources.clear()  # read from the new configurations on next use
            self.reloads.succeeded(plan, notices)
            self._publish_config()
            return self.reloads.status()

    def _publish_config(self) -> None:
        """A `config` event on the stream: views read the configuration (and backends) again."""
        if self.store is None:
            return
        status = self.reloads.status()
        data = {k: status[k] for k in ("status", "reloads", "loaded_at")}
        records = self.store.append_events([("config", None, None, data)])
        if self.engine is not None:
            self.engine.events.publish(records)

    def config_json(self) -> dict[str, Any]:
        """The files in use, their problems, and the merged config with provenance; files
        inside the server's root also get the path Lab opens them by (`lab_paths`)."""
        out = self.reloads.describe(self.config)
        files = {f["path"] for f in out["files"]}
        files |= {e["file"] for e in (*out["errors"], *out["entries"]) if e.get("file")}
        out["lab_paths"] = {f: rel for f in sorted(files) if (rel := self._in_root(f))}
        return out

    def _in_root(self, file: str) -> str | None:
        root = self.options.root_dir
        if root is None:
            return None
        try:
            return Path(file).resolve().relative_to(root).as_posix()
        except (ValueError, OSError):
            return None

    # -- status ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        ok = self.mode in (Mode.ENGINE, Mode.CLIENT)
        out: dict[str, Any] = {
            "status": "ok" if ok else self.mode.value,
            "mode": self.mode.value,
            "version": __version__,
            "config_file": self._config_file(),
            "data_dir": str(self.config.data_dir) if self.config else None,
            "engine_mode": self.options.engine,
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
            out["lease"] = holder | ({"role": role_of(holder["owner"])} if holder else {})
            out["message"] = (
                f"client mode: another process drives this data directory (pid "
                f"{holder.get('pid')} on {holder.get('host')}); requests are queued for it"
            )
        if self.engine is not None:
            out["engine"] = {"owner": self.engine.owner, "active_runs": len(self.engine.runs)}
        out["config"] = self.reloads.status()
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

    async def cost(self, run_id: str, *, items: bool = True) -> dict[str, Any]:
        """A run's estimated cost (`scripthut.cost.stored_run_cost`), read and priced in the
        worker thread; `items` adds each task's cost."""
        config, store = self._ready()
        run_id = store.resolve_run_id(run_id)
        pricing = await self.pricing()

        def compute(reader: Store) -> dict[str, Any]:
            doc = stored_run_cost(reader, config, pricing, run_id).to_json()
            if not items:
                del doc["items"]
            return {"run": run_id, "priced": pricing.active, **doc}

        return await self._worker().call(compute, heavy=True)

    async def pricing(self) -> Pricing:
        """The config's prices, read off the loop (a fetch may take seconds) and kept for
        PRICING_REFRESH s, or until the config's pricing section changes."""
        config, _ = self._ready()
        now = time.monotonic()
        kept = self._pricing
        if kept is None or now - kept[0] > PRICING_REFRESH or kept[1] != config.pricing:
            loaded = await asyncio.to_thread(Pricing.load, config)
            self._pricing = kept = (now, config.pricing, loaded)
        return kept[2]

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
        self,
        read: Callable[[], RunRequest],
        workflow_env: Sequence[EnvRule] = (),
        provenance: Provenance | None = None,
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
                config_dir=request.config_dir,
                workflow_env=workflow_env,
                provenance=provenance.document() if provenance else None,
                no_cache=request.no_cache,
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

    def notify(self, run_id: str) -> dict[str, Any]:
        """Opt a run in to notifications (sent by the engine holding the lease)."""
        config, store = self._ready()
        run_id = store.resolve_run_id(run_id)
        store.get_run(run_id)
        opt_in(store, run_id)
        settings = config.notifications
        configured = settings is not None and bool(settings.email or settings.webhooks)
        return {"run": run_id, "notify": True, "configured": configured}

    def delete(self, run_id: str) -> None:
        """Forget a finished run (its log files stay where they are)."""
        _, store = self._ready()
        record = store.get_run(run_id)
        if not record.state.is_final:
            raise Conflict(f"run '{run_id}' is {record.state.value}: cancel it or let it finish")
        store.delete_run(run_id)

    # -- events ---------------------------------------------------------------------------

    def listen(self, after: int | None, run: str | None = None) -> Listener:
        _, store = self._ready()
        if run is not None:
            run = store.resolve_run_id(run)
        return self.events.listen(after, run)


__all__ = ["Mode", "ScriptHutService", "ServiceOptions", "load_settings"]
