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
from scripthut.engine import cache_admin
from scripthut.engine.create import anchor_working_dirs
from scripthut.errors import InvalidInput, Issue
from scripthut.server.results import outputs_json, read_output, summary_json
from scripthut.workflow.parse import load_workflow

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
    manifest = sub.add_parser(
        "manifest", parents=parents, help="a task's manifest (inputs, outputs, cache, run)"
    )
    manifest.add_argument("run")
    manifest.add_argument("task")
    cache = sub.add_parser("cache", parents=parents, help="the result cache")
    actions = cache.add_subparsers(dest="cache_action", required=True, metavar="ACTION")
    probe = actions.add_parser("probe", parents=parents, help="would these tasks hit the cache?")
    probe.add_argument("file", help="workflow JSON file")
    listing = actions.add_parser("ls", parents=parents, help="the entries of the cache")
    clear = actions.add_parser("clear", parents=parents, help="remove entries (all with --all)")
    clear.add_argument("keys", nargs="*", metavar="KEY")
    clear.add_argument("--all", action="store_true", help="every entry")
    for parser in (probe, listing, clear):
        parser.add_argument("--backend", help="whose store (default: the first backend)")


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


def cmd_manifest(args: argparse.Namespace) -> int:
    with open_session(args.config, host_engine=False) as session:
        doc = session.store.manifest(session.resolve(args.run), args.task)
    print(json.dumps(doc, indent=2))
    return EXIT_OK


def cmd_cache(args: argparse.Namespace) -> int:
    with open_session(args.config, host_engine=False) as session:
        backend = session.registry.get(session.config.backend(args.backend).name)

        async def go() -> Any:
            try:
                if args.cache_action == "probe":
                    path = Path(args.file).resolve()
                    workflow = load_workflow(path)
                    anchor_working_dirs(session.config, workflow, backend.name, path.parent)
                    found = await cache_admin.probe(
                        session.config, backend, workflow, str(path.parent)
                    )
                    return [p.to_json() for p in found]
                if args.cache_action == "ls":
                    return await cache_admin.entries(session.config, backend)
                keys = ["--all"] if args.all else list(args.keys)
                if not keys:
                    raise InvalidInput([Issue("cache clear", "name keys, or --all", "keys")])
                return await cache_admin.clear(session.config, backend, keys)
            finally:
                await session.registry.close()

        result = asyncio.run(go())
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.cache_action == "probe":
        for row in result:
            detail = f"  ({row['detail']})" if row["detail"] else ""
            display.out.print(f"{row['outcome']:<14} {row['task']}{detail}", markup=False)
    elif args.cache_action == "ls":
        for row in result:
            display.out.print(f"{row['key']}  {row['size_kb']:>8} KB", markup=False)
    else:
        display.out.print(f"removed {len(result)} entr{'y' if len(result) == 1 else 'ies'}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "outputs": cmd_outputs,
    "summary": cmd_summary,
    "manifest": cmd_manifest,
    "cache": cmd_cache,
}
