"""`Run`: a handle on one run, whose state is read again each time it is asked for."""

from __future__ import annotations

from typing import Any

from scripthut.api import display
from scripthut.api.results import RunOutputs, TaskHandle
from scripthut.api.session import resolve
from scripthut.api.tables import TASK_COLUMNS, Table, table
from scripthut.client import Client


class Run:
    """One run of the store, through a client (by default the shared one).

    `status`, `info` and `tasks` ask the engine each time; `id`, `name` and `backend`
    never change.
    """

    def __init__(self, run_id: str, client: Client | None = None) -> None:
        self.client = resolve(client)
        record = self.client.run(run_id, tasks=False)  # also resolves a shortened id
        self.id: str = record["id"]
        self.name: str = record["name"]
        self.backend: str = record["backend"]
        self._quiet_in: int | None = None
        self._view: Any | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any], client: Client) -> Run:
        """A handle on a run whose JSON record is already at hand (no request made)."""
        run = cls.__new__(cls)
        run.client = client
        run.id, run.name, run.backend = record["id"], record["name"], record["backend"]
        run._quiet_in = None
        run._view = None
        return run

    # -- state ----------------------------------------------------------------------------

    @property
    def info(self) -> dict[str, Any]:
        """The run's record now: state, counts per task state, times, message."""
        return self.client.run(self.id, tasks=False)

    @property
    def status(self) -> str:
        """The run's state now: pending, running, completed, failed or cancelled."""
        state: str = self.info["state"]
        return state

    @property
    def tasks(self) -> list[dict[str, Any]]:
        """Every task now (id, state, deps, attempt, job_id, exit_code, reason, times)."""
        return self.client.tasks(self.id)

    def cost(self, items: bool = True) -> dict[str, Any]:
        """The run's estimated cost now (scripthut.cost): `total` (USD), `costed` of `tasks`,
        `summary` ("$1.20 (3 of 4 tasks costed)"), `source` of the prices and, with
        `items`, each task's `cost` (None: not costed)."""
        return self.client.cost(self.id, items=items)

    def table(self) -> Table:
        """The tasks as a pandas DataFrame (a list of dicts without pandas)."""
        return table(self.tasks, TASK_COLUMNS)

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends; its final state. TimeoutError after `timeout` s."""
        state: str = self.client.wait(self.id, timeout)["state"]
        return state

    # -- actions --------------------------------------------------------------------------

    def cancel(self) -> str:
        """Cancel pending tasks and the jobs of running ones; the run's state right after."""
        state: str = self.client.cancel(self.id)["state"]
        return state

    def rerun(self) -> Run:
        """Give failed, cancelled and dep_failed tasks a new attempt; this same run."""
        self.client.rerun(self.id)
        return self

    def logs(
        self, task: str, error: bool = False, tail: int | None = None, attempt: int | None = None
    ) -> str:
        """A task's output log (its error log with `error=True`), or its last `tail` lines."""
        reply = self.client.logs(self.id, task, error=error, tail=tail, attempt=attempt)
        parts = [reply["text"]]
        while reply["text"] and reply["offset"] < reply["next_offset"] < reply["size"]:
            reply = self.client.logs(
                self.id, task, error=error, offset=reply["next_offset"], attempt=attempt
            )
            parts.append(reply["text"])
        return "".join(parts)

    def env(self, task: str, attempt: int | None = None) -> dict[str, Any]:
        """A task's resolved env with provenance (secrets masked): `values`, `init`, ..."""
        return task_env(self.client, self.id, task, attempt)

    # -- results --------------------------------------------------------------------------

    def task(self, task_id: str) -> TaskHandle:
        """One task of the run (`.outputs()`, `.info()`)."""
        return TaskHandle(self.client, self.id, task_id)

    def outputs(self) -> RunOutputs:
        """Every task's outputs and summary text; shows as the run's summary in a notebook."""
        return RunOutputs(self.client, self.id, self.client.summary(self.id))

    # -- display --------------------------------------------------------------------------

    def summary(self, tasks: bool = True) -> str:
        """The run as text: state and counts, then each task (failed ones first)."""
        record = self.client.run(self.id, tasks=tasks)
        return display.run_summary(record, record.get("tasks"))

    def view(self) -> Any | None:
        """The run's `RunView` (made once); None outside a notebook or without widgets."""
        if self._view is None:
            self._view = display.run_view(self.id, self.client)
        return self._view

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> Any:
        widget = self.view()
        if widget is not None:
            bundle = widget._repr_mimebundle_(include=include, exclude=exclude)
            if bundle is not None:
                return bundle
        return {"text/plain": self.summary()}

    def _ipython_display_(self) -> None:
        if self._quiet_in is not None and self._quiet_in == display.execution_count():
            self._quiet_in = None  # the magic already showed it in this cell
            return
        widget = self.view()
        if widget is not None:
            display.publish(widget)
        else:
            display.publish({"text/plain": self.summary()}, raw=True)

    def _shown_by_magic(self) -> None:
        """Skip the echo of this cell's result: a magic has displayed the run already."""
        self._quiet_in = display.execution_count()

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.name!r} on {self.backend}>"


def task_env(client: Client, run_id: str, task: str, attempt: int | None) -> dict[str, Any]:
    """`GET runs/{run}/tasks/{task}/env`, through whichever client this is."""
    getter = getattr(client, "env", None)
    if callable(getter):
        reply: dict[str, Any] = getter(run_id, task, attempt=attempt)
        return reply
    from scripthut.client.http import HTTPClient
    from scripthut.client.local import LocalClient

    if isinstance(client, HTTPClient):
        query = {"attempt": attempt}
        reply = client.request("GET", f"runs/{run_id}/tasks/{task}/env", query=query)
        return reply
    if isinstance(client, LocalClient):
        service = client.service
        return client.call(lambda: service.env(run_id, task, attempt))
    raise TypeError(f"{type(client).__name__} cannot read a task's env")
