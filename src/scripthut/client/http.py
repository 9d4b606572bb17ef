"""The client of a Jupyter server's ScriptHut API (standard library only).

One connection per request, so a client object may be shared between threads. The
event stream reconnects by itself after a drop, sending the last id it saw as
`Last-Event-ID`, so no event is lost or repeated.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from scripthut.client.base import Client, EventStream, WorkflowInput, run_body, working_folder
from scripthut.client.discovery import ServerInfo
from scripthut.server.errors import error_from_reply

STREAM_READ_TIMEOUT = 45.0  # the server sends a heartbeat every 15 s
RECONNECT_LIMIT = 6


SOURCE_TIMEOUT = 900.0  # a sync may clone a large repository


class HTTPClient(Client):
    mode = "server"

    def __init__(self, server: ServerInfo, *, timeout: float = 60.0) -> None:
        self.server = server
        self.timeout = timeout
        parts = urlsplit(server.api)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {server.url}")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path

    # -- plumbing -------------------------------------------------------------------------

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        kind = (
            http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        )
        return kind(self._host, self._port, timeout=timeout)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        out = {"Accept": "application/json", **(extra or {})}
        if self.server.token:
            out["Authorization"] = f"token {self.server.token}"
        return out

    def path(self, path: str, query: dict[str, Any] | None = None) -> str:
        url = self._prefix + quote(path)
        params = {k: v for k, v in (query or {}).items() if v is not None}
        return f"{url}?{urlencode(params)}" if params else url

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        extra = {"Content-Type": "application/json"} if data is not None else {}
        conn = self.connection(timeout or self.timeout)
        try:
            conn.request(method, self.path(path, query), body=data, headers=self.headers(extra))
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            raise error_from_reply(response.status, _json_or_empty(raw))
        if response.status == 204 or not raw:
            return None
        if "json" in (response.getheader("Content-Type") or ""):
            return json.loads(raw)
        return raw.decode("utf-8", errors="replace")

    def request_bytes(self, path: str, query: dict[str, Any] | None = None) -> bytes:
        """A GET whose reply is kept as bytes (an output's content)."""
        conn = self.connection(self.timeout)
        try:
            conn.request("GET", self.path(path, query), headers=self.headers({}))
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            raise error_from_reply(response.status, _json_or_empty(raw))
        return raw

    def reachable(self, timeout: float = 3.0) -> bool:
        """True when the server answers `GET health` with ScriptHut's reply."""
        try:
            reply = self.request("GET", "health", timeout=timeout)
        except Exception:
            return False
        return isinstance(reply, dict) and "version" in reply

    # -- API ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        reply: dict[str, Any] = self.request("GET", "health")
        return reply

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
        reply: dict[str, Any] = self.request("POST", "runs", body=body)
        return reply

    def sources(self) -> list[dict[str, Any]]:
        query = {"config_dir": working_folder()}
        sources: list[dict[str, Any]] = self.request("GET", "sources", query=query)["sources"]
        return sources

    def source_action(self, action: str, name: str | None, body: dict[str, Any]) -> dict[str, Any]:
        path = "sources/sync" if name is None else f"sources/{quote(name, safe='')}/{action}"
        reply: dict[str, Any] = self.request("POST", path, body=body, timeout=SOURCE_TIMEOUT)
        return reply

    def runs(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        reply = self.request("GET", "runs", query={"limit": limit, "offset": offset})
        runs: list[dict[str, Any]] = reply["runs"]
        return runs

    def run(self, run_id: str, *, tasks: bool = True) -> dict[str, Any]:
        query = None if tasks else {"tasks": "0"}
        reply: dict[str, Any] = self.request("GET", f"runs/{run_id}", query=query)
        return reply

    def task(self, run_id: str, task_id: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.request("GET", f"runs/{run_id}/tasks/{task_id}")
        return reply

    def env(self, run_id: str, task_id: str, *, attempt: int | None = None) -> dict[str, Any]:
        path = f"runs/{run_id}/tasks/{task_id}/env"
        reply: dict[str, Any] = self.request("GET", path, query={"attempt": attempt})
        return reply

    def script(self, run_id: str, task_id: str, *, attempt: int | None = None) -> str:
        path = f"runs/{run_id}/tasks/{task_id}/script"
        return str(self.request("GET", path, query={"attempt": attempt}))

    def cost(self, run_id: str, *, items: bool = True) -> dict[str, Any]:
        query = None if items else {"items": "false"}
        reply: dict[str, Any] = self.request("GET", f"runs/{run_id}/cost", query=query)
        return reply

    def cancel(self, run_id: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.request("POST", f"runs/{run_id}/cancel", body={})
        return reply

    def rerun(self, run_id: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.request("POST", f"runs/{run_id}/rerun", body={})
        return reply

    def notify(self, run_id: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.request("POST", f"runs/{run_id}/notify", body={})
        return reply

    def jobs(
        self,
        backend: str | None = None,
        state: str | None = None,
        run: str | None = None,
        user: str | None = None,
        all_users: bool = False,
    ) -> list[dict[str, Any]]:
        query = {"backend": backend, "state": state, "run": run, "user": user}
        query["all"] = "true" if all_users else None
        jobs: list[dict[str, Any]] = self.request("GET", "jobs", query=query)["jobs"]
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
        stream = "error" if error else "output"
        query = {"tail": tail, "offset": offset, "attempt": attempt}
        reply: dict[str, Any] = self.request(
            "GET", f"runs/{run_id}/tasks/{task_id}/logs/{stream}", query=query
        )
        return reply

    def outputs(self, run_id: str, task_id: str, *, attempt: int | None = None) -> dict[str, Any]:
        path = f"runs/{run_id}/tasks/{task_id}/outputs"
        reply: dict[str, Any] = self.request("GET", path, query={"attempt": attempt})
        return reply

    def output(self, run_id: str, task_id: str, path: str, *, attempt: int | None = None) -> bytes:
        where = f"runs/{run_id}/tasks/{task_id}/outputs/file"
        return self.request_bytes(where, {"path": path, "attempt": attempt})

    def manifest(self, run_id: str, task_id: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.request("GET", f"runs/{run_id}/tasks/{task_id}/manifest")
        return reply

    def summary(self, run_id: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.request("GET", f"runs/{run_id}/summary")
        return reply

    def events(
        self, after: int | None = None, run: str | None = None, timeout: float | None = None
    ) -> EventStream:
        return SSEStream(self, after, run, timeout)

    def close(self) -> None:
        """Nothing to release: every request has its own connection."""


class SSEStream:
    """Reads `GET events` as Server-Sent Events; reconnects with Last-Event-ID."""

    def __init__(
        self, client: HTTPClient, after: int | None, run: str | None, timeout: float | None
    ) -> None:
        self.client = client
        self.last_id = after
        self.run = run
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._timer = threading.Timer(timeout, self.close) if timeout is not None else None
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()
        self._events = self._read()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._events)

    def close(self) -> None:
        """Stop the stream (from any thread): a blocked read returns at once."""
        self._closed.set()
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def _read(self) -> Iterator[dict[str, Any]]:
        failures = 0
        while not self._closed.is_set():
            try:
                response = self._open()
            except (OSError, http.client.HTTPException):
                failures += 1
                if failures > RECONNECT_LIMIT:
                    raise
                self._closed.wait(min(0.25 * 2**failures, 5.0))
                continue
            try:
                for event in _parse(response):
                    if self._closed.is_set():
                        return
                    failures = 0
                    self.last_id = int(event["id"])
                    yield event
            except (OSError, ValueError, http.client.HTTPException):
                pass  # dropped (or closed): reconnect unless closed
            finally:
                self._disconnect()

    def _open(self) -> http.client.HTTPResponse:
        conn = self.client.connection(STREAM_READ_TIMEOUT)
        with self._lock:
            self._conn = conn
        headers = self.client.headers({"Accept": "text/event-stream"})
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        conn.request("GET", self.client.path("events", {"run": self.run}), headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            raw = response.read()
            self._closed.set()
            raise error_from_reply(response.status, _json_or_empty(raw))
        return response

    def _disconnect(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _parse(response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """The `data:` of each SSE event (comments, `retry:` and heartbeats skipped)."""
    data: list[str] = []
    while True:
        line = response.readline()
        if not line:
            return
        text = line.decode("utf-8").rstrip("\r\n")
        if text.startswith("data:"):
            data.append(text[5:].removeprefix(" "))
        elif not text and data:
            event: dict[str, Any] = json.loads("\n".join(data))
            data = []
            yield event


def _json_or_empty(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def wait_for_server(client: HTTPClient, timeout: float) -> bool:
    """Poll `health` until it answers or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.reachable(timeout=2.0):
            return True
        time.sleep(0.2)
    return False
