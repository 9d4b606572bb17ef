"""`%hut` and `%%hut`: ScriptHut's IPython magics (`%load_ext scripthut`).

The subcommands mirror the `scripthut` command line. Arguments are split like shell words
(`shlex`) and parsed with argparse; nothing goes through a shell. Errors are reported as
one line on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import http.client
import inspect
import shlex
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_cell_magic, magics_class

from scripthut import api
from scripthut.api import display
from scripthut.api.tables import (
    JOB_COLUMNS,
    SOURCE_COLUMNS,
    SYNC_COLUMNS,
    TASK_STATES,
    run_row,
    source_rows,
    sync_row,
    table,
    text_table,
)
from scripthut.errors import InvalidInput, ScriptHutError
from scripthut.server.errors import ServiceUnavailable

PREFIX = "scripthut: "
CANCEL_WAIT = 30.0
MAX_ISSUES = 5
RUNS_SHOWN = ("id", "name", "backend", "state", "total", *TASK_STATES, "created_at")


class MagicUsageError(Exception):
    """The magic's arguments are wrong."""


class _HelpShown(Exception):
    """argparse printed a help text (`-h`): nothing else to do."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting the kernel."""

    def error(self, message: str) -> NoReturn:
        raise MagicUsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise MagicUsageError(message or f"{self.prog}: error")
        raise _HelpShown


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%hut", description="ScriptHut in IPython (`%hut help`).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="start a run of a workflow file")
    run.add_argument("file", help="workflow JSON file (with --source: a file of the source)")
    _run_options(run)
    run.add_argument("--max-concurrent", type=int, metavar="N", help="at most N tasks at once")
    run.add_argument("--source", metavar="S", help="run FILE of this source (synced first)")
    run.add_argument("--branch", metavar="B", help="with --source: this branch")

    sub.add_parser("sources", help="the sources and their workflow files")
    sync = sub.add_parser("sync", help="sync a source (default: every one) now")
    sync.add_argument("source", nargs="?")
    sync.add_argument("--branch", metavar="B")

    task = sub.add_parser("task", help="(%%%%hut) run the cell as one task")
    _run_options(task)
    task.add_argument("--cpus", type=int, metavar="N", help="CPUs of the task")
    task.add_argument("--memory", metavar="M", help="memory of the task (512M, 4G)")
    task.add_argument("--time", metavar="T", help="time limit of the task (HH:MM:SS)")
    task.add_argument("--partition", metavar="P", help="Slurm partition / PBS queue")

    jobs = sub.add_parser("jobs", help="jobs on the backends")
    jobs.add_argument("--backend", metavar="B")
    jobs.add_argument("--state", metavar="S", help="pending, running, completed, ...")
    jobs.add_argument("--run", metavar="R", help="only this run's jobs")

    runs = sub.add_parser("runs", help="recent runs, newest first")
    runs.add_argument("--limit", type=int, default=20, metavar="N")

    for name, text in (
        ("show", "a run and its tasks"),
        ("cancel", "cancel a run"),
        ("rerun", "run failed, cancelled and dep_failed tasks again"),
    ):
        sub.add_parser(name, help=text).add_argument("run", help="run id (or a unique prefix)")

    logs = sub.add_parser("logs", help="a task's output (or error) log")
    logs.add_argument("run")
    logs.add_argument("task")
    logs.add_argument("--error", action="store_true", help="the error log instead")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")

    sub.add_parser("help", help="this help")
    return parser


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", metavar="B", help="backend name (default: the first)")
    parser.add_argument("--name", help="run name")
    parser.add_argument("--wait", action="store_true", help="block until the run ends")


def split(line: str) -> list[str]:
    """The magic's words, split as a shell would split them (no shell runs)."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise MagicUsageError(f"%hut: {exc}") from None


def one_line(exc: BaseException) -> str:
    """An error as one line: every problem of an invalid input, joined."""
    issues = exc.issues if isinstance(exc, InvalidInput | ServiceUnavailable) else []
    if isinstance(exc, InvalidInput):
        text = exc.title
    elif isinstance(exc, ConnectionError | http.client.HTTPException):
        text = f"cannot reach ScriptHut: {exc}"
    else:
        text = str(exc) or type(exc).__name__
    if issues:
        shown = "; ".join(str(issue) for issue in issues[:MAX_ISSUES])
        more = len(issues) - MAX_ISSUES
        text = f"{text}: {shown}" + (f"; and {more} more" if more > 0 else "")
    return " ".join(text.split())


REPORTED = (
    MagicUsageError,
    ScriptHutError,
    OSError,
    TimeoutError,
    http.client.HTTPException,
)


@magics_class
class HutMagics(Magics):
    @line_cell_magic
    def hut(self, line: str, cell: str | None = None) -> object:
        """ScriptHut: start, watch, inspect, cancel and rerun runs of shell tasks.

        Line magic (`%hut COMMAND ...`):

          %hut run FILE [--backend B] [--max-concurrent N] [--name NAME] [--wait]
              Validate the workflow file, start a run, show it (a RunView) and
              return its `Run` (`r = %hut run flow.json`). --wait blocks until it ends.
          %hut run --source S FILE [--branch B] [...]
              Sync source S, then run its workflow file FILE at the branch head.
          %hut sources
              The sources: last sync (commit, time, error), workflow files and validity.
          %hut sync [SOURCE] [--branch B]
              Sync one source (or every one) now.
          %hut jobs [--backend B] [--state S] [--run R]
              The jobs on the backends now (a live JobTable).
          %hut runs [--limit N]
              Recent runs, newest first (a DataFrame with pandas).
          %hut show RUN
              A run and its tasks (a RunView); returns its `Run`.
          %hut logs RUN TASK [--error] [--tail N]
              Print a task's output log (--error: its error log).
          %hut cancel RUN
              Cancel pending tasks and the jobs of running ones; print the final state.
          %hut rerun RUN
              Run failed, cancelled and dep_failed tasks again; show the run.
          %hut help
              This text. `%hut COMMAND -h` describes one command.

        Cell magic (`%%hut task ...`): the cell's text is the shell command of a
        one-task run, in the notebook's directory on the local backend:

          %%hut task [--backend B] [--cpus N] [--memory M] [--time T] [--name NAME]
                     [--partition P] [--wait]

        RUN may be any unique prefix of a run id. Errors (an invalid workflow, an
        unknown run, a broken config, a server that does not answer) are printed as one
        line on stderr. The magics and `scripthut.run(...)` share one client: the Jupyter
        server's engine when the server runs the ScriptHut extension, else an engine in
        this kernel over the same data directory ($SCRIPTHUT_DATA_DIR).
        """
        try:
            args = build_parser().parse_args(split(line))
            return self.dispatch(args, cell)
        except _HelpShown:
            return None
        except REPORTED as exc:
            print(PREFIX + one_line(exc), file=sys.stderr)
            return None

    def dispatch(self, args: argparse.Namespace, cell: str | None) -> object:
        if (cell is None) == (args.command == "task"):
            usage = "%%hut task takes a cell" if cell is None else "only %%hut task takes a cell"
            raise MagicUsageError(f"{usage} (see %hut help)")
        handler: Callable[[argparse.Namespace], object] = getattr(self, f"cmd_{args.command}")
        if cell is not None:
            args.cell = cell
        return handler(args)

    # -- commands -------------------------------------------------------------------------

    def cmd_help(self, args: argparse.Namespace) -> None:
        print(inspect.getdoc(HutMagics.hut))

    def cmd_run(self, args: argparse.Namespace) -> api.Run:
        if args.branch is not None and args.source is None:
            raise MagicUsageError("%hut run: --branch needs --source")
        run = api.run(
            args.file,
            backend=args.backend,
            max_concurrent=args.max_concurrent,
            name=args.name,
            source=args.source,
            branch=args.branch,
        )
        return self.show(run, wait=args.wait)

    def cmd_sources(self, args: argparse.Namespace) -> object:
        rows = source_rows(api.default_client().sources())
        return self.tabulate(rows, SOURCE_COLUMNS, only=True)

    def cmd_sync(self, args: argparse.Namespace) -> object:
        states = api.default_client().sync(args.source, branch=args.branch)
        return self.tabulate([sync_row(s) for s in states], SYNC_COLUMNS, only=True)

    def cmd_task(self, args: argparse.Namespace) -> api.Run:
        command = str(args.cell).strip("\n")
        if not command.strip():
            raise MagicUsageError("%%hut task: the cell is empty")
        fields: dict[str, Any] = {"working_dir": "."}
        options = {"cpus": args.cpus, "memory": args.memory, "time_limit": args.time}
        options.update(name=args.name, partition=args.partition)
        fields.update({key: value for key, value in options.items() if value is not None})
        task = api.Task("cell", command, **fields)
        run = api.run([task], backend=args.backend, name=args.name or "cell")
        return self.show(run, wait=args.wait)

    def cmd_show(self, args: argparse.Namespace) -> api.Run:
        return self.show(api.Run(args.run))

    def cmd_rerun(self, args: argparse.Namespace) -> api.Run:
        return self.show(api.Run(args.run).rerun())

    def cmd_cancel(self, args: argparse.Namespace) -> None:
        run = api.Run(args.run)
        state = run.cancel()
        try:
            state = run.wait(CANCEL_WAIT)
        except TimeoutError:
            print(f"run {run.id}: cancel requested, still {run.status}")
            return
        print(f"run {run.id}: {state}")

    def cmd_logs(self, args: argparse.Namespace) -> None:
        text = api.Run(args.run).logs(args.task, error=args.error, tail=args.tail)
        print(text, end="" if text.endswith("\n") or not text else "\n")

    def cmd_jobs(self, args: argparse.Namespace) -> object:
        client = api.default_client()
        run = api.Run(args.run, client).id if args.run else None
        widget = display.job_table(client, args.backend, args.state, run)
        if widget is not None:
            return widget
        rows = client.jobs(backend=args.backend, state=args.state, run=run)
        return self.tabulate(rows, JOB_COLUMNS)

    def cmd_runs(self, args: argparse.Namespace) -> object:
        rows = [run_row(r) for r in api.default_client().runs(limit=args.limit)]
        return self.tabulate(rows, RUNS_SHOWN, only=True)

    # -- output ---------------------------------------------------------------------------

    def show(self, run: api.Run, *, wait: bool = False) -> api.Run:
        """Show the run now and return it; the echo of the returned run is then skipped.

        In a kernel it is displayed at once, so it shows even when the result is assigned
        or later lines follow. In a terminal the returned run's echo shows it (skipping
        the echo there would leave an empty `Out[n]:`).
        """
        if display.silent_echo():
            display.publish(run)
            run._shown_by_magic()
        if wait:
            print(f"run {run.id}: {run.wait()}")
        return run

    @staticmethod
    def tabulate(
        rows: list[dict[str, Any]], columns: tuple[str, ...], only: bool = False
    ) -> object:
        """A DataFrame when pandas is there (`only`: just `columns`); else printed as text."""
        frame = table(rows, columns)
        if isinstance(frame, list):
            print(text_table(frame, columns))
            return None
        return frame[list(columns)] if only else frame


def load_ipython_extension(ipython: InteractiveShell) -> None:
    ipython.register_magics(HutMagics)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("hut", None)
