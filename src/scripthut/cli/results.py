"""`scripthut outputs RUN TASK` and `scripthut summary RUN`: what tasks wrote, from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scripthut.cli import display
from scripthut.cli.session import Session, open_session
from scripthut.server.results import outputs_json, read_output, summary_json

EXIT_OK = 0


def add_parsers(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    outputs = sub.add_parser(
        "outputs", parents=parents, help="what a task wrote in $SCRIPTHUT_OUTPUT_DIR"
    )
    outputs.add_argument("run")
    outputs.add_argument("task")
    outputs.add_argument("--attempt", type=int, help="an earlier attempt (default: the latest)")
    outputs.add_argument("--get", metavar="PATH", help="print one output's bytes")
    outputs.add_argument("-o", "--output", metavar="FILE", help="with --get: write to FILE")
    summary = sub.add_parser(
        "summary", parents=parents, help="a run's summary: each task's text and its outputs"
    )
    summary.add_argument("run")


def cmd_outputs(args: argparse.Namespace) -> int:
    with open_session(args.config, host_engine=False) as session:
        run_id = session.resolve(args.run)
        if args.get:
            return _get(session, run_id, args)
        listing = outputs_json(session.store, run_id, args.task, args.attempt)
    if args.json:
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    display.out.print(f"{listing['directory']}  (attempt {listing['attempt']})")
    for item in listing["files"]:
        display.out.print(f"{item['size']:>12}  {item['kind']:<9} {item['path']}", markup=False)
    if listing["truncated"]:
        display.out.print("… more files than are listed")
    if listing["summary"]:
        display.out.print("\nsummary:\n" + listing["summary"], markup=False)
    return EXIT_OK


def _get(session: Session, run_id: str, args: argparse.Namespace) -> int:
    async def read() -> bytes:
        try:
            content = await read_output(
                session.store, session.registry, run_id, args.task, args.get, args.attempt
            )
        finally:
            await session.registry.close()
        return content.data

    data = asyncio.run(read())
    if args.output:
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    with open_session(args.config, host_engine=False) as session:
        doc = summary_json(session.store, session.resolve(args.run))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(doc["markdown"], end="")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "outputs": cmd_outputs,
    "summary": cmd_summary,
}
