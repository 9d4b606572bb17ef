"""`scripthut config show | check | reload`: the layered configuration from a terminal.

`show` prints the merged configuration (global file + the project file found from the
current folder), every key with the file and line it came from. `check` validates every
layer and exits 2 on a problem. `reload` asks the running Jupyter server(s) of this data
directory to read the files again (they also do it by themselves when a file changes).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape

from scripthut.config import ConfigSource
from scripthut.config.provenance import entries
from scripthut.errors import InvalidInput, Issue

EXIT_OK, EXIT_NO_SERVER, EXIT_INVALID = 0, 1, 2


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    config = sub.add_parser(
        "config",
        parents=[common],
        help="show, check or reload the configuration (global + project file)",
    )
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show", parents=[common], help="the merged configuration, each key with its file:line"
    )
    show.add_argument(
        "--defaults", action="store_true", help="also list keys no file sets (their defaults)"
    )
    actions.add_parser(
        "check", parents=[common], help="validate every layer (exit 2 if something is wrong)"
    )
    actions.add_parser(
        "reload", parents=[common], help="have the running Jupyter server read the files again"
    )


def run(args: argparse.Namespace, out: Any, err: Any) -> int:
    action = {"show": _show, "check": _check, "reload": _reload}[args.action]
    result: int = action(args, out, err)
    return result


def _files(source: ConfigSource) -> list[dict[str, Any]]:
    return [f.to_json() for f in source.files()]


def _show(args: argparse.Namespace, out: Any, err: Any) -> int:
    source = ConfigSource(args.config)
    config = source.load()
    listed = entries(config)
    if args.json:
        print(json.dumps({"files": _files(source), "entries": listed}))
        return EXIT_OK
    _print_files(source, out)
    for entry in listed:
        if entry["file"] is None and not args.defaults:
            continue
        where = f"{entry['file']}:{entry['line']}" if entry["file"] else "default"
        value = json.dumps(entry["value"])
        line = escape(f"{entry['key']} = {value}")
        out.print(f"{line}  [dim]# {escape(where)}[/]", soft_wrap=True)
    return EXIT_OK


def _print_files(source: ConfigSource, out: Any) -> None:
    for f in source.files():
        state = "" if f.exists else " (none: defaults)"
        out.print(f"[bold]{f.layer}[/] {escape(str(f.path))}{state}", soft_wrap=True)


def _check(args: argparse.Namespace, out: Any, err: Any) -> int:
    source = ConfigSource(args.config)
    try:
        config = source.load()
    except InvalidInput as exc:
        if args.json:
            issues = [issue.to_json() for issue in exc.issues]
            print(json.dumps({"valid": False, "files": _files(source), "errors": issues}))
        else:
            err.print(exc.render(), markup=False, soft_wrap=True)
        return EXIT_INVALID
    if args.json:
        names = [b.name for b in config.backends]
        print(json.dumps({"valid": True, "files": _files(source), "backends": names}))
        return EXIT_OK
    for f in source.files():
        state = "valid" if f.exists else "absent (defaults)"
        out.print(f"{f.layer} {f.path}: {state}", markup=False, soft_wrap=True)
    out.print(f"backends: {', '.join(b.name for b in config.backends)}", markup=False)
    return EXIT_OK


def _reload(args: argparse.Namespace, out: Any, err: Any) -> int:
    from scripthut.client.discovery import candidates
    from scripthut.client.http import HTTPClient

    source = ConfigSource(args.config)
    try:
        data_dir = str(source.load().data_dir)
    except InvalidInput:
        data_dir = None  # reload anyway: the server reports the same problems, located
    replies = []
    for info in candidates():
        if data_dir and info.data_dir and info.data_dir != data_dir:
            continue
        client = HTTPClient(info, timeout=30)
        if client.reachable():
            replies.append((info.url, client.request("POST", "config/reload")))
    if not replies:
        message = "no running Jupyter server with ScriptHut found for this data directory"
        hint = "a server reads the files again by itself when they change"
        if args.json:
            print(json.dumps({"reloaded": [], "message": message}))
        else:
            err.print(f"{message} ({hint})", markup=False)
        return EXIT_NO_SERVER
    return _report(args, replies, out, err)


def _report(args: argparse.Namespace, replies: list[tuple[str, Any]], out: Any, err: Any) -> int:
    broken = [reply for _, reply in replies if reply.get("status") != "ok"]
    if args.json:
        print(json.dumps({"reloaded": [{"server": u, **r} for u, r in replies]}))
    for url, reply in replies if not args.json else []:
        if reply.get("status") == "ok":
            out.print(f"{url}: reloaded {_changes(reply.get('changes'))}", markup=False)
            for notice in reply.get("notices") or []:
                err.print(f"  note: {notice}", markup=False, soft_wrap=True)
            continue
        issues = [_issue(e) for e in reply.get("errors") or []]
        title = f"{url}: kept the running configuration; {reply.get('message') or 'invalid'}"
        err.print(InvalidInput(issues, title).render(), markup=False, soft_wrap=True)
    return EXIT_INVALID if broken else EXIT_OK


def _issue(data: dict[str, Any]) -> Issue:
    return Issue(str(data.get("where")), str(data.get("message")), data.get("field"))


def _changes(changes: dict[str, Any] | None) -> str:
    if not changes:
        return "(no backend changed)"
    parts = [f"{k}: {', '.join(v)}" for k, v in changes.items() if isinstance(v, list) and v]
    resized = changes.get("resized") or {}
    parts += [f"max_concurrent of {name} is now {n}" for name, n in resized.items()]
    return f"({'; '.join(parts)})" if parts else "(no backend changed)"


__all__ = ["add_parser", "run"]
