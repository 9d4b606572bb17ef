"""`scripthut` — start, watch, inspect, cancel and rerun runs from a terminal.

Exit status: 0 success (a run completed), 1 a run failed or was cancelled, 2 invalid
input (workflow, config, unknown run or backend).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scripthut.cli import config_cmd, configured, display, engine, files, results, setup_aws
from scripthut.cli.session import Session, open_session
from scripthut.cost import Pricing, stored_run_cost
from scripthut.daemon import control
from scripthut.engine.create import anchor_working_dirs
from scripthut.errors import InvalidInput, Issue, ScriptHutError
from scripthut.notify import opt_in
from scripthut.states import RunState
from scripthut.store import RunRecord
from scripthut.workflow.parse import load_workflow

EXIT_OK, EXIT_RUN_FAILED, EXIT_INVALID = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="the global scripthut.yaml (default: $SCRIPTHUT_CONFIG, else "
        "~/.config/scripthut/scripthut.yaml); a project scripthut.yaml found from the "
        "current folder upwards is layered over it",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON document instead of tables",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log what the engine does",
    )

    parser = argparse.ArgumentParser(
        prog="scripthut", parents=[common], description="Run and watch batches of shell tasks."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", parents=[common], help="start a run of a workflow file and follow it"
    )
    _workflow_choice(run)
    run.add_argument("--max-concurrent", type=int, help="at most N tasks of this run at once")
    run.add_argument("--name", help="run name (default: the file name)")
    run.add_argument(
        "--detach",
        action="store_true",
        help="record the run, leave it to the running engine (started if none runs) and "
        "return at once",
    )
    run.add_argument(
        "--notify",
        action="store_true",
        help="send this run's notifications (scripthut.yaml `notifications:`)",
    )

    run.add_argument("--no-cache", action="store_true", help="run every task; no cache look-ups")

    dry = sub.add_parser(
        "dry-run",
        parents=[common],
        help="show the tasks a run would have (a source's file or a configured workflow's "
        "command output), starting nothing",
    )
    _workflow_choice(dry)

    sub.add_parser(
        "sources", parents=[common], help="the sources, their last sync and workflow files"
    )
    sync = sub.add_parser("sync", parents=[common], help="sync a source (default: every one)")
    sync.add_argument("source", nargs="?")
    sync.add_argument("--branch", help="this branch instead of the configured one")
    sync.add_argument("--backend", help="on this backend instead of the source's")

    validate = sub.add_parser(
        "validate",
        parents=[common],
        help="check the config and, if given, a workflow file as `run` would (exit 2 if invalid)",
    )
    validate.add_argument("file", nargs="?", help="workflow JSON file")
    validate.add_argument("--backend", help="backend to check the workflow for (default: first)")

    migrate = sub.add_parser(
        "migrate",
        parents=[common],
        help="rewrite a ScriptHut 0.3 config (.yaml) or workflow (.json) file in the modern form",
    )
    migrate.add_argument("file")
    migrate.add_argument(
        "--in-place",
        action="store_true",
        help="write the result over FILE, keeping the original as FILE.bak "
        "(default: print it; YAML comments are not kept)",
    )

    runs = sub.add_parser("runs", parents=[common], help="list runs, newest first")
    runs.add_argument("--limit", type=int, default=20)

    show = sub.add_parser("show", parents=[common], help="a run and its tasks")
    show.add_argument("run")

    logs = sub.add_parser("logs", parents=[common], help="a task's output (or error) log")
    logs.add_argument("run")
    logs.add_argument("task")
    logs.add_argument("--error", action="store_true", help="the error log instead of the output")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    logs.add_argument(
        "--follow", "-f", action="store_true", help="keep printing while the task runs"
    )
    logs.add_argument("--attempt", type=int, help="an earlier attempt (default: the latest)")

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a run")
    cancel.add_argument("run")

    rerun = sub.add_parser(
        "rerun", parents=[common], help="run failed, cancelled and dep_failed tasks again"
    )
    rerun.add_argument("run")
    rerun.add_argument("--detach", action="store_true", help="start the rerun and return at once")

    watch = sub.add_parser(
        "watch", parents=[common], help="follow a run until it ends (drives it if no engine does)"
    )
    watch.add_argument("run")

    export = sub.add_parser("export", parents=[common], help="a run as one JSON document")
    export.add_argument("run")
    setup_aws.add_parser(sub, [common])
    config_cmd.add_parser(sub, common)
    engine.add_parser(sub, [common])
    results.add_parsers(sub, [common])
    return parser


def _workflow_choice(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", nargs="?", help="workflow JSON file (with --source: a file as `sources` lists it)"
    )
    parser.add_argument("--source", help="take FILE from this source (synced first)")
    parser.add_argument("--branch", help="with --source: this branch instead of the configured")
    parser.add_argument("--workflow", metavar="NAME", help="a workflow configured by name")
    parser.add_argument("--backend", help="backend name from the config (default: the first)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, default in (("config", None), ("json", False), ("verbose", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except ScriptHutError as exc:
        return _failed(args, exc)
    except BrokenPipeError:
        return EXIT_OK


def _failed(args: argparse.Namespace, exc: ScriptHutError) -> int:
    """Every problem in full: as text on stderr, or `{"error": {...}}` on stdout with --json."""
    if args.json:
        error: dict[str, Any] = {"kind": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, InvalidInput):
            error |= {"title": exc.title, "issues": [issue.to_json() for issue in exc.issues]}
        print(json.dumps({"error": error, "exit_code": EXIT_INVALID}))
    elif isinstance(exc, InvalidInput):
        display.err.print(exc.render(), markup=False, soft_wrap=True)
    else:
        display.err.print(f"error: {exc}", markup=False, soft_wrap=True)
    return EXIT_INVALID


# -- commands -------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    report = files.validate(args.config, args.file, args.backend)
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    config = report["config"] or "no config file (defaults)"
    backends = ", ".join(report["backends"])
    display.out.print(f"{config}: valid, backends {backends}", markup=False, soft_wrap=True)
    if args.file is not None:
        display.out.print(
            f"{args.file}: valid, {report['tasks']} tasks, {report['edges']} dependencies, "
            f"ready to run on backend '{report['backend']}'",
            markup=False,
            soft_wrap=True,
        )
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    path = Path(args.file)
    text, changed = files.migrated_text(path)
    if not args.in_place:
        sys.stdout.write(text)
    elif changed:
        backup = files.write_in_place(path, text)
        display.err.print(f"rewrote {path} (the original is in {backup})", markup=False)
    else:
        display.err.print(f"{path} has nothing to migrate; left as it is", markup=False)
    if changed and path.suffix in files.CONFIG_SUFFIXES:
        display.err.print("note: YAML comments are not kept by migrate", markup=False)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    if args.source is not None or args.workflow is not None:
        return cmd_run_configured(args)
    _check_choice(args)
    workflow = load_workflow(args.file)
    path = Path(args.file).resolve()

    async def go(session: Session) -> RunRecord:
        anchor_working_dirs(session.config, workflow, args.backend, path.parent)
        record = session.submit(
            workflow,
            backend=args.backend,
            name=args.name,
            max_concurrent=args.max_concurrent,
            source=str(path),
            base_dir=str(path.parent),
            no_cache=args.no_cache,
        )
        if args.notify:
            opt_in(session.store, record.id)
        if args.detach:
            _leave_to_engine(session)
            return record
        return await follow(session, record, args)

    return _finish(args, asyncio.run(_with_session(args, go, host_engine=not args.detach)))


def cmd_run_configured(args: argparse.Namespace) -> int:
    _check_choice(args)

    async def go(session: Session) -> RunRecord:
        chosen = await configured.chosen(session, args)
        record = session.submit(
            chosen.workflow,
            backend=chosen.backend,
            name=args.name or chosen.name,
            max_concurrent=args.max_concurrent or chosen.max_concurrent,
            source=chosen.source,
            base_dir=chosen.provenance.root if chosen.provenance else None,
            workflow_env=chosen.env,
            provenance=chosen.provenance.document() if chosen.provenance else None,
        )
        if args.detach:
            return record
        return await follow(session, record, args)

    return _finish(args, asyncio.run(_with_session(args, go, host_engine=not args.detach)))


def cmd_dry_run(args: argparse.Namespace) -> int:
    _check_choice(args, dry=True)

    async def go(session: Session) -> dict[str, Any]:
        return configured.preview(await configured.chosen(session, args))

    with open_session(args.config, host_engine=False) as session:
        doc = asyncio.run(_closing(session, go))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        display.out.print(configured.preview_text(doc), markup=False, soft_wrap=True)
    return EXIT_OK


def cmd_sources(args: argparse.Namespace) -> int:
    with open_session(args.config, host_engine=False) as session:
        listing = session.sources.listing()
    if args.json:
        print(json.dumps(listing, indent=2))
    else:
        display.out.print(configured.sources_table(listing["sources"]))
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    async def go(session: Session) -> list[dict[str, Any]]:
        names = [args.source] if args.source else [s.name for s in session.config.sources]
        for name in names:
            session.sources.entry(name)
        states = await asyncio.gather(
            *(session.sources.sync(n, backend=args.backend, branch=args.branch) for n in names)
        )
        return [state.to_json() for state in states]

    with open_session(args.config, host_engine=False) as session:
        states = asyncio.run(_closing(session, go))
    if args.json:
        print(json.dumps({"sources": states}, indent=2))
    else:
        display.out.print(configured.sync_table(states))
    return EXIT_OK if all(s["error"] is None for s in states) else EXIT_RUN_FAILED


def _check_choice(args: argparse.Namespace, *, dry: bool = False) -> None:
    """One of FILE, --source S FILE, --workflow NAME; the error names what is wrong."""
    where = "scripthut dry-run" if dry else "scripthut run"
    problem = None
    if args.workflow is not None and (args.source is not None or args.file is not None):
        problem = "--workflow NAME takes no FILE and no --source"
    elif args.workflow is None and args.file is None:
        problem = "give a workflow FILE (with --source: a file of the source) or --workflow NAME"
    elif args.branch is not None and args.source is None:
        problem = "--branch needs --source"
    elif dry and args.source is None and args.workflow is None:
        problem = "needs --source SOURCE FILE or --workflow NAME (`validate` checks a plain file)"
    if problem is not None:
        raise InvalidInput([Issue(where, problem)], f"invalid {where} arguments")


async def _closing(session: Session, body: Callable[[Session], Any]) -> Any:
    try:
        return await body(session)
    finally:
        await session.registry.close()


def _leave_to_engine(session: Session) -> None:
    """A detached run needs an engine: start the standalone one when none drives the store."""
    if session.store.lease_holder() is None:
        started = control.start_detached(session.config)
        display.err.print(f"started the standalone engine (pid {started['pid']})", markup=False)


def cmd_rerun(args: argparse.Namespace) -> int:
    async def go(session: Session) -> RunRecord:
        record = await session.rerun(session.resolve(args.run))
        if args.detach:
            return record
        return await follow(session, record, args)

    return _finish(args, asyncio.run(_with_session(args, go, host_engine=not args.detach)))


def cmd_watch(args: argparse.Namespace) -> int:
    async def go(session: Session) -> RunRecord:
        run_id = session.resolve(args.run)
        return await follow(session, session.store.get_run(run_id), args)

    return _finish(args, asyncio.run(_with_session(args, go, host_engine=True)))


def cmd_cancel(args: argparse.Namespace) -> int:
    async def go(session: Session) -> RunRecord:
        record = await session.cancel(session.resolve(args.run))
        return await session.wait(record.id, timeout=120)

    record = asyncio.run(_with_session(args, go, host_engine=True))
    if args.json:
        print(json.dumps({"run": record.id, "status": record.state.value}))
    else:
        display.out.print(f"run {record.id}: {record.state.value}")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    with open_session(args.config, host_engine=False) as session:
        runs = session.store.list_runs(limit=args.limit)
        rows = [(run, session.store.task_counts(run.id)) for run in runs]
    if args.json:
        print(json.dumps([{**run.to_json(), "counts": counts} for run, counts in rows], indent=2))
    else:
        display.out.print(display.runs_table(rows))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with open_session(args.config, host_engine=False) as session:
        run = session.store.get_run(session.resolve(args.run))
        tasks = session.store.tasks(run.id)
        counts = session.store.task_counts(run.id)
        pricing = Pricing.load(session.config)
        cost = stored_run_cost(session.store, session.config, pricing, run.id)
    run, tasks = display.masked(run, tasks)
    costs = {item.task: item.cost for item in cost.items} if pricing.active else None
    if args.json:
        doc = {
            **run.to_json(),
            "counts": counts,
            "cost": display.cost_json(cost, priced=pricing.active),
            "tasks": [{**t.to_json(), "cost": (costs or {}).get(t.task_id)} for t in tasks],
        }
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    display.out.print(f"{run.id}  {run.name}  on {run.backend}  [bold]{run.state.value}[/]")
    display.out.print(display.counts_text(counts))
    if pricing.active:
        display.out.print(f"cost: {cost.summary}")
    display.out.print(display.summary_table(run, tasks, costs))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    with open_session(args.config, host_engine=False) as session:
        print(json.dumps(session.store.export_run(session.resolve(args.run)), indent=2))
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    async def go(session: Session) -> None:
        run_id = session.resolve(args.run)
        await session.print_log(
            run_id,
            args.task,
            error=args.error,
            tail=args.tail,
            follow=args.follow,
            attempt=args.attempt,
            as_json=args.json,
        )

    with open_session(args.config, host_engine=False) as session:
        asyncio.run(go(session))
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "dry-run": cmd_dry_run,
    "sources": cmd_sources,
    "sync": cmd_sync,
    "validate": cmd_validate,
    "migrate": cmd_migrate,
    "runs": cmd_runs,
    "show": cmd_show,
    "logs": cmd_logs,
    "cancel": cmd_cancel,
    "rerun": cmd_rerun,
    "watch": cmd_watch,
    "export": cmd_export,
    "setup-aws-ec2": setup_aws.cmd_setup_aws_ec2,
    "config": lambda args: config_cmd.run(args, display.out, display.err),
    "engine": engine.cmd_engine,
    **results.COMMANDS,
}


# -- following a run ------------------------------------------------------------------------


async def _with_session(
    args: argparse.Namespace, body: Callable[[Session], Any], *, host_engine: bool
) -> RunRecord:
    with open_session(args.config, host_engine=host_engine) as session:
        await session.start()
        try:
            result: RunRecord = await body(session)
            return result
        finally:
            await session.stop()


async def follow(session: Session, record: RunRecord, args: argparse.Namespace) -> RunRecord:
    """Show progress until the run is final. Ctrl-C cancels the run; a second Ctrl-C detaches."""
    loop = asyncio.get_running_loop()
    interrupts = 0
    detach = asyncio.Event()
    pending: set[asyncio.Task[RunRecord]] = set()

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            display.err.print(
                "cancelling the run (Ctrl-C again to stop watching; jobs keep their state)"
            )
            task = loop.create_task(session.cancel(record.id))
            pending.add(task)
            task.add_done_callback(pending.discard)
        else:
            detach.set()

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        total = len(session.store.tasks(record.id))
        with display.LiveProgress(record, total, enabled=not args.json) as progress:
            message = record.message
            async for counts, total, current in session.watch(record.id, stop=detach):
                progress.update(counts, total)
                if current.message != message and current.message:
                    display.err.print(f"run {current.id}: {current.message}", markup=False)
                message = current.message
                record = current
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    return record


def _finish(args: argparse.Namespace, record: RunRecord) -> int:
    with open_session(args.config, host_engine=False) as session:
        record = session.store.get_run(record.id)
        tasks = session.store.tasks(record.id)
    if args.json:
        doc = {
            "run": record.id,
            "status": record.state.value,
            "tasks": {t.task_id: t.state.value for t in tasks},
        }
        print(json.dumps(doc))
    elif not record.state.is_final:
        display.out.print(
            f"run {record.id} is {record.state.value}; follow it with: scripthut show {record.id}"
        )
    else:
        display.out.print(display.summary_table(record, tasks))
    if not record.state.is_final:
        return EXIT_OK if getattr(args, "detach", False) else EXIT_RUN_FAILED
    return EXIT_OK if record.state == RunState.COMPLETED else EXIT_RUN_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
