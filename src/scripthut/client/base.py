"""The one interface kernels (and later the widgets) use, whatever runs the engine.

Two implementations: `HTTPClient` talks to the Jupyter server's API; `LocalClient`
hosts the same service in this process. Both return the API's JSON shapes (plain dicts
and lists) and raise the same `ScriptHutError` types.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from scripthut.states import RunState
from scripthut.workflow.model import Workflow

WorkflowInput = Workflow | Mapping[str, Any] | Sequence[Any] | str | os.PathLike[str]
FINAL_RUN_STATES = frozenset(s.value for s in RunState if s.is_final)


class EventStream(Protocol):
    """Events as dicts (the API's event JSON), until closed or its time is up."""

    last_id: int | None

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def __next__(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def working_folder() -> str | None:
    """The folder this process works in (a kernel's: its notebook's), sent as `config_dir`
    so the server takes that folder's configuration; None when it is gone (the server's)."""
    try:
        return os.getcwd()
    except OSError:
        return None


def run_body(
    workflow: WorkflowInput,
    backend: str | None,
    name: str | None,
    max_concurrent: int | None,
    no_cache: bool = False,
) -> dict[str, Any]:
    """The `POST runs` body: a document inline, or a file by absolute path.

    A document inline takes the configuration of the folder this process works in (a
    kernel's is its notebook's folder) as `config_dir`; a file takes its own folder's."""
    body: dict[str, Any]
    if isinstance(workflow, Workflow):
        body = {"workflow": workflow.to_document()}
    elif isinstance(workflow, str | os.PathLike):
        body = {"path": str(Path(workflow).expanduser().resolve())}
    elif isinstance(workflow, Mapping):
        body = {"workflow": dict(workflow)}
    else:
        body = {"workflow": list(workflow)}
    if "workflow" in body and (folder := working_folder()) is not None:
        body["config_dir"] = folder
    extra = {"backend": backend, "name": name, "max_concurrent": max_concurrent}
    body.update({k: v for k, v in extra.items() if v is not None})
    if no_cache:
        body["no_cache"] = True
    return body


def _given(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class Client(ABC):
    """ScriptHut from a kernel: start runs, read their state and logs, follow events."""

    #: "server" (the Jupyter server's engine), "engine" (hosted here) or "store" (the
    #: engine runs in another process; requests are queued for it in the store)
    mode: str = ""

    @abstractmethod
    def health(self) -> dict[str, Any]: ...

    @abstractmethod
    def submit(
        self,
        workflow: WorkflowInput,
        backend: str | None = None,
        *,
        name: str | None = None,
        max_concurrent: int | None = None,
        no_cache: bool = False,
    ) -> dict[str, Any]:
        """Start a run of a task document, a `Workflow`, or a workflow file; `no_cache`: run
        every task, without result-cache look-ups."""

    @abstractmethod
    def runs(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]: ...

    @abstractmethod
    def run(self, run_id: str, *, tasks: bool = True) -> dict[str, Any]: ...

    def tasks(self, run_id: str) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = self.run(run_id)["tasks"]
        return tasks

    @abstractmethod
    def task(self, run_id: str, task_id: str) -> dict[str, Any]:
        """A task with its spec and every attempt."""

    @abstractmethod
    def env(self, run_id: str, task_id: str, *, attempt: int | None = None) -> dict[str, Any]:
        """The task's env with provenance, secrets masked."""

    @abstractmethod
    def script(self, run_id: str, task_id: str, *, attempt: int | None = None) -> str:
        """The script an attempt ran."""

    def cost(self, run_id: str, *, items: bool = True) -> dict[str, Any]:
        """The run's estimated cost (`GET runs/{run}/cost`): total, "N of M tasks costed",
        where prices came from, and each task's cost unless `items` is False."""
        raise NotImplementedError(f"{type(self).__name__} cannot give a run's cost")

    @abstractmethod
    def cancel(self, run_id: str) -> dict[str, Any]: ...

    @abstractmethod
    def rerun(self, run_id: str) -> dict[str, Any]: ...

    @abstractmethod
    def notify(self, run_id: str) -> dict[str, Any]:
        """Ask for the run's notifications (scripthut.yaml `notifications:`)."""

    @abstractmethod
    def jobs(
        self,
        backend: str | None = None,
        state: str | None = None,
        run: str | None = None,
        user: str | None = None,
        all_users: bool = False,
    ) -> list[dict[str, Any]]: ...

    @abstractmethod
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
        """`{"text", "offset", "next_offset", "size", ...}` of the task's output or error log."""

    @abstractmethod
    def outputs(self, run_id: str, task_id: str, *, attempt: int | None = None) -> dict[str, Any]:
        """What the task's attempt wrote: `{"directory", "files", "summary", ...}`."""

    @abstractmethod
    def output(self, run_id: str, task_id: str, path: str, *, attempt: int | None = None) -> bytes:
        """The bytes of one recorded output (HTML sanitised)."""

    @abstractmethod
    def manifest(self, run_id: str, task_id: str) -> dict[str, Any]:
        """The task's manifest (inputs and outputs hashes, cache key and hit, run, timing)."""

    @abstractmethod
    def summary(self, run_id: str) -> dict[str, Any]:
        """Every task's summary text and outputs, and the whole as Markdown."""

    @abstractmethod
    def events(
        self, after: int | None = None, run: str | None = None, timeout: float | None = None
    ) -> EventStream:
        """Events after id `after` (None: from now), for one run or all, for `timeout` s."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def sources(self) -> list[dict[str, Any]]:
        """The sources of this folder's configuration, each with its latest syncs."""

    @abstractmethod
    def source_action(self, action: str, name: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """`sync` (name None: every source), `dry-run` or `run` of a source."""

    def sync(
        self, name: str | None = None, *, branch: str | None = None, backend: str | None = None
    ) -> list[dict[str, Any]]:
        """Sync one source or all; each state says its error, if any."""
        body = _given(branch=branch, backend=backend, config_dir=working_folder())
        states: list[dict[str, Any]] = self.source_action("sync", name, body)["sources"]
        return states

    def run_source(
        self,
        source: str,
        file: str,
        *,
        branch: str | None = None,
        backend: str | None = None,
        name: str | None = None,
        max_concurrent: int | None = None,
        dry_run: bool = False,
        no_cache: bool = False,
    ) -> dict[str, Any]:
        """Start a run of a source's workflow file (or, with `dry_run`, only show it). The
        source is one of this folder's configuration (see `working_folder`)."""
        body = _given(
            file=file,
            branch=branch,
            backend=backend,
            name=name,
            max_concurrent=max_concurrent,
            config_dir=working_folder(),
        )
        if no_cache:
            body["no_cache"] = True
        if dry_run:
            body.pop("name", None)
            body.pop("max_concurrent", None)
        return self.source_action("dry-run" if dry_run else "run", source, body)

    def on_event(
        self,
        callback: Callable[[dict[str, Any]], object],
        *,
        run: str | None = None,
        after: int | None = None,
    ) -> Callable[[], None]:
        """Call `callback` with each event from a background thread; returns `stop()`."""
        stream = self.events(after=after, run=run)

        def pump() -> None:
            with closing(stream):
                for event in stream:
                    callback(event)

        thread = threading.Thread(target=pump, name="scripthut-events", daemon=True)
        thread.start()

        def stop() -> None:
            stream.close()
            thread.join(timeout=10)

        return stop

    def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The run once it is final; TimeoutError when `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.run(run_id, tasks=False)
            if record["state"] in FINAL_RUN_STATES:
                return record
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"run {run_id} is still {record['state']}")
            with closing(self.events(run=record["id"], timeout=min(left or 5.0, 5.0))) as stream:
                for event in stream:
                    if event.get("kind") == "run" and event.get("state") in FINAL_RUN_STATES:
                        break

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
