"""`scripthut engine start | stop | status | logs`: the standalone engine."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from datetime import datetime

from scripthut.cli import display
from scripthut.config import load_config
from scripthut.daemon import control
from scripthut.daemon.files import EngineFiles
from scripthut.daemon.run import serve

EXIT_OK, EXIT_FAILED, EXIT_NOT_RUNNING = 0, 1, 3


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    engine = sub.add_parser(
        "engine",
        parents=parents,
        help="the standalone engine: drives runs with no Jupyter server or terminal open",
    )
    actions = engine.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", parents=parents, help="start it (detached)")
    start.add_argument(
        "--foreground",
        action="store_true",
        help="run in this process and log to stderr (for systemd or a supervisor)",
    )
    actions.add_parser("stop", parents=parents, help="stop it (jobs keep running)")
    actions.add_parser("status", parents=parents, help="whether it runs (exit 3 when it does not)")
    logs = actions.add_parser("logs", parents=parents, help="its log (engine.log)")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing")


def cmd_engine(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.action == "start" and args.foreground:
        logging.getLogger().setLevel(logging.INFO)
        return asyncio.run(serve(config))
    if args.action == "start":
        return _report(args, control.start_detached(config), "started")
    if args.action == "stop":
        result = control.stop(config)
        _print(args, result, result["message"])
        return EXIT_OK
    if args.action == "status":
        current = control.status(config)
        return _report(args, current, "running")
    return _logs(EngineFiles(config.data_dir), args.tail, args.follow)


def _report(args: argparse.Namespace, current: dict[str, object], verb: str) -> int:
    if current["running"]:
        since = datetime.fromtimestamp(float(str(current["started_at"]))).isoformat(" ", "seconds")
        text = f"engine {verb}: pid {current['pid']} on {current['host']} since {since}"
    else:
        lease = current["lease"]
        text = "no standalone engine runs"
        if isinstance(lease, dict):
            text += f"; the lease is held by {lease['role']} pid {lease['pid']} on {lease['host']}"
    _print(args, current, text + f" (data dir {current['data_dir']})")
    return EXIT_OK if current["running"] else EXIT_NOT_RUNNING


def _print(args: argparse.Namespace, doc: dict[str, object], text: str) -> None:
    if args.json:
        print(json.dumps(doc))
    else:
        display.out.print(text, markup=False, soft_wrap=True)


def _logs(files: EngineFiles, lines: int | None, follow: bool) -> int:
    try:
        handle = files.log_file.open("rb")
    except FileNotFoundError:
        display.err.print(f"no engine log yet at {files.log_file}", markup=False)
        return EXIT_OK
    with handle:
        if lines is not None:
            text = control.tail(files.log_file, lines)
            sys.stdout.write(text + ("\n" if text else ""))
            handle.seek(0, 2)
        while True:
            data = handle.read()
            if data:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            elif not follow:
                return EXIT_OK
            else:
                time.sleep(0.5)
