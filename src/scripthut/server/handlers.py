"""REST handlers under `{base_url}scripthut/api/`: HTTP translation only.

Every verb is `@web.authenticated` then `@authorized` (in that order: jupyter_server
checks the outer decorator) with a stable `auth_resource`, so JupyterHub scopes can key
on it. POST and DELETE go through jupyter_server's XSRF check (a token header or the
`_xsrf` value is needed). Errors raised by the service are mapped in one place,
`ScriptHutHandler.write_error`, through `errors.error_reply`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from importlib import resources
from types import TracebackType
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.iostream import StreamClosedError

from scripthut.errors import NotFound, ScriptHutError
from scripthut.server import ids
from scripthut.server.errors import error_reply
from scripthut.server.logs import DEFAULT_LIMIT, MAX_LIMIT
from scripthut.server.requests import decode_body, parse_int
from scripthut.server.service import ScriptHutService
from scripthut.server.stream import HEARTBEAT, Listener
from scripthut.workflow.parse import INT64

API = "scripthut/api"
HEARTBEAT_INTERVAL = 15.0
BATCH_DELAY = 0.05
MAX_PAGE = 500
RETRY_AFTER = 5  # seconds, on a 429
PAGE = 1_000  # tasks encoded per call in a large reply


class ScriptHutHandler(APIHandler):
    """Base of every ScriptHut handler: the service, query parsing, JSON replies and errors."""

    auth_resource = "scripthut:health"

    def initialize(self, service: ScriptHutService) -> None:
        self.service = service

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The one error mapping: ScriptHut errors by type, the rest as jupyter_server does."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, ScriptHutError):
            super().write_error(status_code, **kwargs)
            return
        status, body = error_reply(exc)
        self.set_status(status)
        if status == 429:
            self.set_header("Retry-After", str(RETRY_AFTER))
        self.finish(json.dumps(body))

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, ScriptHutError):
            self.log.info("%s %s: %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))

    async def reply_off_loop(
        self, data: dict[str, Any], status: int = 200, *, key: str = "tasks"
    ) -> None:
        """A large reply (a run with all its tasks), encoded in a thread (see encode_paged)."""
        box = [data]
        del data
        body = await asyncio.to_thread(encode_paged, box, key)
        etag = await asyncio.to_thread(
            lambda: f'"{hashlib.blake2b(body, digest_size=20).hexdigest()}"'
        )
        self.set_header("Etag", etag)  # tornado would hash the body on the loop
        self.set_status(status)
        self.finish(body)

    def int_arg(self, name: str, default: int, *, low: int = INT64[0]) -> int:
        value = self.opt_int_arg(name, low=low)
        return default if value is None else value

    def opt_int_arg(self, name: str, *, low: int = INT64[0], high: int = INT64[1]) -> int | None:
        text = self.get_query_argument(name, None)
        return None if not text else parse_int(text, "query", name, low=low, high=high)

    def text_arg(self, name: str) -> str | None:
        value = self.get_query_argument(name, None)
        return value or None

    def body(self) -> object:
        """The request's JSON body: size checked first (413), then `requests.decode_body`."""
        return decode_body(self.request.body, self.service.options.max_body)


def encode_paged(box: list[dict[str, Any]], key: str = "tasks") -> bytes:
    """JSON of `box.pop()`, whose `key` list ("tasks") is encoded and freed a page at a time.

    The C encoder holds the interpreter for a whole call, as does freeing a large list, so
    one `json.dumps` of 100,000 tasks would stall every other thread, the loop's included.
    """
    data = box.pop()
    tasks = data.pop(key, None)
    if not isinstance(tasks, list):
        return json.dumps(data).encode()
    pages = [json.dumps(tasks[i : i + PAGE])[1:-1] for i in range(0, len(tasks), PAGE)]
    while tasks:
        del tasks[-PAGE:]
    head = json.dumps(data)
    return (
        f'{head[:-1]}{", " if data else ""}"{key}": [{", ".join(p for p in pages if p)}]}}'.encode()
    )


class HealthHandler(ScriptHutHandler):
    auth_resource = "scripthut:health"

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.reply(self.service.health())


class OpenAPIHandler(ScriptHutHandler):
    auth_resource = "scripthut:health"

    @web.authenticated
    @authorized
    def get(self) -> None:
        text = resources.files("scripthut.server").joinpath("openapi.yaml").read_text("utf-8")
        self.finish(text, set_content_type="application/yaml; charset=utf-8")


class ConfigHandler(ScriptHutHandler):
    """The configuration files in use, their problems, the merged result with provenance."""

    auth_resource = "scripthut:config"

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.reply(self.service.config_json())


class ConfigReloadHandler(ScriptHutHandler):
    """Read the files again now (the server also watches them); a broken file keeps the
    running configuration and the reply lists its located errors."""

    auth_resource = "scripthut:config"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.reply(await self.service.reload_config())


class BackendsHandler(ScriptHutHandler):
    auth_resource = "scripthut:backends"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.service.backends())


class JobsHandler(ScriptHutHandler):
    auth_resource = "scripthut:jobs"

    @web.authenticated
    @authorized
    def get(self) -> None:
        filters = {k: self.text_arg(k) for k in ("backend", "state", "run", "user")}
        all_users = self.text_arg("all") in ("1", "true", "yes")
        self.reply(self.service.jobs(**filters, all_users=all_users))


class JobCancelHandler(ScriptHutHandler):
    auth_resource = "scripthut:jobs"

    @web.authenticated
    @authorized
    async def post(self, backend: str, job_id: str) -> None:
        self.reply(await self.service.cancel_job(backend, job_id), 202)


class RunsHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    def get(self) -> None:
        limit = min(self.int_arg("limit", 50, low=1), MAX_PAGE)
        offset = self.int_arg("offset", 0, low=0)
        self.reply(self.service.runs(limit=limit, offset=offset))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        run = await self.service.submit(self.body)  # decoded and checked off the loop
        self.set_header("Location", f"{self.base_url}{API}/runs/{run['id']}")
        self.reply(run, 201)


class RunHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        tasks = self.get_query_argument("tasks", "1") not in ("0", "false", "no")
        await self.reply_off_loop(await self.service.run(run_id, tasks=tasks))

    @web.authenticated
    @authorized
    def delete(self, run_id: str) -> None:
        self.service.delete(run_id)
        self.set_status(204)
        self.finish()


class RunCostHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        items = self.get_query_argument("items", "1") not in ("0", "false", "no")
        await self.reply_off_loop(await self.service.cost(run_id, items=items), key="items")


class RunCancelHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        self.reply(await self.service.cancel(run_id))


class RunRerunHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        self.reply(await self.service.rerun(run_id))


class RunNotifyHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    def post(self, run_id: str) -> None:
        self.reply(self.service.notify(run_id))


class TaskHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    def get(self, run_id: str, task_id: str) -> None:
        self.reply(self.service.task(run_id, task_id))


class TaskScriptHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    def get(self, run_id: str, task_id: str) -> None:
        attempt = self.opt_int_arg("attempt", low=1)
        script = self.service.script(run_id, task_id, attempt)
        self.finish(script, set_content_type="text/plain; charset=utf-8")


class TaskEnvHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    def get(self, run_id: str, task_id: str) -> None:
        self.reply(self.service.env(run_id, task_id, self.opt_int_arg("attempt", low=1)))


class TaskLogHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    async def get(self, run_id: str, task_id: str, stream: str) -> None:
        offset = self.int_arg("offset", 0)
        limit = min(self.int_arg("limit", DEFAULT_LIMIT, low=0), MAX_LIMIT)
        data = await self.service.logs(
            run_id,
            task_id,
            error=stream == "error",
            tail=self.opt_int_arg("tail", low=0, high=1_000_000),
            offset=offset,
            limit=limit,
            attempt=self.opt_int_arg("attempt", low=1),
        )
        self.reply(data)


class TaskOutputsHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    def get(self, run_id: str, task_id: str) -> None:
        self.reply(self.service.outputs(run_id, task_id, self.opt_int_arg("attempt", low=1)))


class TaskOutputFileHandler(ScriptHutHandler):
    """One recorded output's bytes, never run by the browser: a sandboxing CSP, no sniffing,
    HTML sanitised by the service."""

    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    async def get(self, run_id: str, task_id: str) -> None:
        path = self.get_query_argument("path", "")
        attempt = self.opt_int_arg("attempt", low=1)
        content = await self.service.output(run_id, task_id, path, attempt)
        self.set_header("Content-Security-Policy", "sandbox; default-src 'none'; img-src data:")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(content.data, set_content_type=content.media_type)


class TaskManifestHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    def get(self, run_id: str, task_id: str) -> None:
        self.reply(self.service.manifest(run_id, task_id))


class RunSummaryHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    def get(self, run_id: str) -> None:
        self.reply(self.service.summary(run_id))


class WorkflowsHandler(ScriptHutHandler):
    auth_resource = "scripthut:workflows"

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.reply(self.service.workflows(self.get_query_argument("config_dir", None)))


class WorkflowRunHandler(ScriptHutHandler):
    auth_resource = "scripthut:workflows"

    @web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        run = await self.service.run_workflow(name, self.body())
        self.set_header("Location", f"{self.base_url}{API}/runs/{run['id']}")
        self.reply(run, 201)


class WorkflowDryRunHandler(ScriptHutHandler):
    """POST only: it runs the workflow's command, so it needs what starting a run needs
    (write on scripthut:workflows) and the XSRF check a cookie-authenticated POST gets."""

    auth_resource = "scripthut:workflows"

    @web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        self.reply(await self.service.dry_run(name, self.body()))


class SourcesHandler(ScriptHutHandler):
    """The configured sources and what their last syncs found (read)."""

    auth_resource = "scripthut:sources"

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.reply(self.service.sources(self.get_query_argument("config_dir", None)))


class SourceSyncHandler(ScriptHutHandler):
    """Sync, dry-run and run run git on a backend or start a run, so they need what starting
    a run needs (write on scripthut:runs) and the XSRF check of a POST."""

    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    async def post(self, name: str | None = None) -> None:
        self.reply(await self.service.sync(name, self.body()))


class SourceDryRunHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        self.reply(await self.service.source_dry_run(name, self.body()))


class SourceRunHandler(ScriptHutHandler):
    auth_resource = "scripthut:runs"

    @web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        run = await self.service.run_source(name, self.body())
        self.set_header("Location", f"{self.base_url}{API}/runs/{run['id']}")
        self.reply(run, 201)


class EventsHandler(ScriptHutHandler):
    """Server-Sent Events: replay after `Last-Event-ID` (or `?after=`), then live."""

    auth_resource = "scripthut:events"
    _listener: Listener | None = None
    _gone = False

    def initialize(
        self,
        service: ScriptHutService,
        heartbeat: float = HEARTBEAT_INTERVAL,
        batch_delay: float = BATCH_DELAY,
    ) -> None:
        super().initialize(service)
        self.heartbeat = heartbeat
        self.batch_delay = batch_delay

    @web.authenticated
    @authorized
    async def get(self) -> None:
        after = self._after()
        listener = self._listener = self.service.listen(after, self.text_arg("run"))
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        try:
            self.write(b"retry: 2000\n: connected\n\n")
            await self.flush()
            while (
                batch := await listener.next_batch(self.heartbeat, self.batch_delay)
            ) is not None:
                self.write(b"".join(c.sse for c in batch) if batch else HEARTBEAT)
                await self.flush()
            if listener.dropped:
                self.write(b": dropped: too slow; reconnect with Last-Event-ID to resume\n\n")
            if not self._gone:
                self.finish(set_content_type="text/event-stream; charset=utf-8")
        except StreamClosedError:
            pass
        finally:
            listener.close()

    def on_connection_close(self) -> None:
        self._gone = True
        if self._listener is not None:
            self._listener.close()

    def _after(self) -> int | None:
        header = self.request.headers.get("Last-Event-ID")
        if header:
            return max(0, parse_int(header, "header", "Last-Event-ID", low=INT64[0], high=INT64[1]))
        return self.opt_int_arg("after", low=0)


class NotFoundHandler(ScriptHutHandler):
    """Anything else under the API prefix: a JSON 404 (after authentication)."""

    @web.authenticated
    @authorized
    def get(self, path: str) -> None:
        raise NotFound(f"no API endpoint '{path}'")

    @web.authenticated
    @authorized
    def post(self, path: str) -> None:
        raise NotFound(f"no API endpoint '{path}'")

    @web.authenticated
    @authorized
    def delete(self, path: str) -> None:
        raise NotFound(f"no API endpoint '{path}'")


RUN = rf"/runs/({ids.RUN_ID})"
TASK = rf"{RUN}/tasks/({ids.TASK_ID})"

ROUTES: tuple[tuple[str, type[ScriptHutHandler]], ...] = (
    ("/health", HealthHandler),
    ("/openapi.yaml", OpenAPIHandler),
    ("/config", ConfigHandler),
    ("/config/reload", ConfigReloadHandler),
    ("/backends", BackendsHandler),
    ("/jobs", JobsHandler),
    (rf"/jobs/({ids.BACKEND})/({ids.JOB_ID})/cancel", JobCancelHandler),
    ("/runs", RunsHandler),
    (RUN, RunHandler),
    (rf"{RUN}/cost", RunCostHandler),
    (rf"{RUN}/cancel", RunCancelHandler),
    (rf"{RUN}/rerun", RunRerunHandler),
    (rf"{RUN}/notify", RunNotifyHandler),
    (TASK, TaskHandler),
    (rf"{TASK}/script", TaskScriptHandler),
    (rf"{TASK}/env", TaskEnvHandler),
    (rf"{TASK}/logs/({ids.LOG_STREAM})", TaskLogHandler),
    (rf"{TASK}/outputs", TaskOutputsHandler),
    (rf"{TASK}/outputs/file", TaskOutputFileHandler),
    (rf"{TASK}/manifest", TaskManifestHandler),
    (rf"{RUN}/summary", RunSummaryHandler),
    ("/workflows", WorkflowsHandler),
    (rf"/workflows/({ids.WORKFLOW})/run", WorkflowRunHandler),
    (rf"/workflows/({ids.WORKFLOW})/dry-run", WorkflowDryRunHandler),
    ("/sources", SourcesHandler),
    ("/sources/sync", SourceSyncHandler),
    (rf"/sources/({ids.SOURCE})/sync", SourceSyncHandler),
    (rf"/sources/({ids.SOURCE})/dry-run", SourceDryRunHandler),
    (rf"/sources/({ids.SOURCE})/run", SourceRunHandler),
    ("/events", EventsHandler),
)


def routes(
    service: ScriptHutService,
    *,
    heartbeat: float = HEARTBEAT_INTERVAL,
    batch_delay: float = BATCH_DELAY,
) -> list[tuple[str, type[ScriptHutHandler], dict[str, Any]]]:
    """Handler rules relative to the server's base_url (the extension adds it)."""
    out: list[tuple[str, type[ScriptHutHandler], dict[str, Any]]] = []
    for pattern, handler in ROUTES:
        kwargs: dict[str, Any] = {"service": service}
        if handler is EventsHandler:
            kwargs.update(heartbeat=heartbeat, batch_delay=batch_delay)
        out.append((API + pattern, handler, kwargs))
    out.append((API + "/(.*)", NotFoundHandler, {"service": service}))
    return out
