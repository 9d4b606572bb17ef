"""The two lookups (one Python process, or bash where the host has no python3) give the same
keys, the same input lines and the same hits, and agree with `workflow.caching.final_key`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from scripthut.backends.cache_store import (
    LOOKUP_BASH,
    LOOKUP_SCRIPT,
    LookupRequest,
    lookup_args,
    parse_reply,
    script_bytes,
)
from scripthut.backends.local import LocalBackend
from scripthut.workflow.caching import final_key


def test_python_and_bash_lookups_agree(tmp_path: Path) -> None:
    work = tmp_path / "w"
    (work / "data" / "deep").mkdir(parents=True)
    (work / "a b.txt").write_text("one\n")
    (work / "data" / "x.csv").write_text("1,2\n")
    (work / "data" / "deep" / "y.csv").write_text("3\n")
    (work / ".hidden.csv").write_text("h\n")
    (work / "link.csv").symlink_to(work / "a b.txt")
    requests = [
        LookupRequest("files", str(work), "p" * 64, ("a b.txt", "data/**/*.csv", "*.csv")),
        LookupRequest("folder", str(work), "q" * 64, ("data",)),
        LookupRequest("none", str(work), "r" * 64, ()),
        LookupRequest("missing", str(work), "s" * 64, ("nope*.txt",)),
    ]
    backend = LocalBackend("local", max_concurrent=1, log_dir=tmp_path / "logs")
    args = lookup_args(str(tmp_path / "store"), requests, False)

    def run(script: str) -> object:
        return parse_reply(asyncio.run(backend.run_store_script(script_bytes(script, args))))

    fast, slow = run(LOOKUP_SCRIPT), run(LOOKUP_BASH)
    assert fast.keys == slow.keys and fast.inputs == slow.inputs  # type: ignore[attr-defined]
    assert set(fast.skipped) == set(slow.skipped) == {"missing"}  # type: ignore[attr-defined]
    lines = fast.inputs["files"].splitlines()  # type: ignore[attr-defined]
    assert [line.split("  ", 1)[1] for line in lines] == [
        "a b.txt",
        "data/deep/y.csv",
        "data/x.csv",
    ]
    assert fast.keys["files"] == final_key("p" * 64, fast.inputs["files"])  # type: ignore[attr-defined]
    assert fast.keys["none"] == final_key("r" * 64, "")  # type: ignore[attr-defined]
