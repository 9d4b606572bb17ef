"""ScriptHut from Python: start runs, follow them, read logs, list runs and jobs.

    import scripthut as hut

    fit = hut.Task("fit", "python fit.py", cpus=4)
    plot = hut.Task("plot", "python plot.py", deps=["fit"])
    run = hut.run([fit, plot])
    run.wait()
    print(run.logs("plot"))
    hut.jobs(state="running")

Every call goes through one client shared with the `%hut` magics: `scripthut.connect()`
on first use (the Jupyter server's engine when one answers, else an engine hosted in
this process over the same data directory); pass `client=` to use another one.
"""

from __future__ import annotations

from scripthut.api.handle import Run
from scripthut.api.session import default_client, resolve, set_default_client
from scripthut.api.tables import (
    JOB_COLUMNS,
    RUN_COLUMNS,
    SOURCE_COLUMNS,
    SYNC_COLUMNS,
    Table,
    run_row,
    source_rows,
    sync_row,
    table,
)
from scripthut.api.task import RunInput, Task, workflow_input
from scripthut.client import Client


def run(
    workflow: RunInput,
    backend: str | None = None,
    max_concurrent: int | None = None,
    name: str | None = None,
    client: Client | None = None,
    *,
    source: str | None = None,
    branch: str | None = None,
    notify: bool = False,
    no_cache: bool = False,
) -> Run:
    """Start a run and return it at once (`Run.wait()` blocks until it ends).

    `workflow` is a workflow file's path, a document (a list of tasks or
    `{"tasks": [...], "env": [...]}`) whose tasks may be `Task`s or dicts, or a single
    `Task`. It is validated in full first: `InvalidInput` lists every problem.
    With `source`, `workflow` is a file of that source as `hut.sources()` lists it; the
    source is synced first (at `branch`, default the configured one) and the run records
    the commit.
    `notify=True` asks for the run's notifications (scripthut.yaml `notifications:`).
    `no_cache=True` runs every task: no result-cache look-ups, nothing stored.
    """
    chosen = resolve(client)
    if source is not None:
        if not isinstance(workflow, str):
            raise TypeError("with source=, workflow is the file's path in the source")
        record = chosen.run_source(
            source,
            workflow,
            branch=branch,
            backend=backend,
            name=name,
            max_concurrent=max_concurrent,
            no_cache=no_cache,
        )
        return Run.from_record(record, chosen)
    record = chosen.submit(
        workflow_input(workflow),
        backend,
        name=name,
        max_concurrent=max_concurrent,
        no_cache=no_cache,
    )
    if notify:
        chosen.notify(str(record["id"]))
    return Run.from_record(record, chosen)


def sources(client: Client | None = None) -> Table:
    """The sources of this folder's configuration (a notebook's: the global file plus its
    folder's project file): the last sync (commit, time, error) and its workflow files."""
    return table(source_rows(resolve(client).sources()), SOURCE_COLUMNS)


def sync(
    source: str | None = None, branch: str | None = None, client: Client | None = None
) -> Table:
    """Sync one source (or every one) now; the table shows each one's commit or error."""
    states = resolve(client).sync(source, branch=branch)
    return table([sync_row(state) for state in states], SYNC_COLUMNS)


def runs(limit: int = 50, client: Client | None = None) -> Table:
    """Recent runs, newest first, with one count column per task state."""
    rows = [run_row(record) for record in resolve(client).runs(limit=limit)]
    return table(rows, RUN_COLUMNS)


def jobs(
    backend: str | None = None,
    state: str | None = None,
    run: str | Run | None = None,
    client: Client | None = None,
    user: str | None = None,
    all_users: bool = False,
) -> Table:
    """Jobs on the backends now: ScriptHut's own and the user's other jobs.

    Filters: `backend` name, job `state` (pending, running, ...), `run` (id or `Run`),
    `user` (other jobs of that user; default `settings.filter_user`), `all_users=True`
    (every user's, ignoring `settings.filter_user`).
    """
    run_id = run.id if isinstance(run, Run) else run
    client_ = resolve(client)
    rows = client_.jobs(backend=backend, state=state, run=run_id, user=user, all_users=all_users)
    return table(rows, JOB_COLUMNS)


__all__ = [
    "Run",
    "RunInput",
    "Table",
    "Task",
    "default_client",
    "jobs",
    "run",
    "runs",
    "set_default_client",
    "sources",
    "sync",
]
