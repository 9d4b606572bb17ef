"""The lookup of the result cache as one Python process, used where the tasks run when a
`python3` is there (else the bash script in `cache_store` does the same, more slowly: it
forks a dozen processes per task). Self-contained: standard library only, Python >= 3.6.
Arguments and replies are those of `cache_store.LOOKUP_SCRIPT`.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import sys


def emit(tag: str, task: str, value: str) -> None:
    sys.stdout.write(f"{tag}\0{task}\0{value}\0")


def home(path: str) -> str:
    return os.path.expanduser(path) if path == "~" or path.startswith("~/") else path


def files_of(wd: str, patterns: list[str]) -> list[str] | None:
    """Regular files the patterns match (folders: every file under them), sorted; None when
    a pattern matches nothing."""
    found: set[str] = set()
    for pattern in patterns:
        matched = glob.glob(os.path.join(glob.escape(wd), pattern), recursive=True)
        if not matched:
            return None
        for path in matched:
            rel = os.path.relpath(path, wd)
            if os.path.islink(path):
                continue
            if os.path.isdir(path):
                for top, _dirs, names in os.walk(path):
                    found.update(
                        os.path.relpath(os.path.join(top, n), wd)
                        for n in names
                        if os.path.isfile(os.path.join(top, n))
                        and not os.path.islink(os.path.join(top, n))
                    )
            elif os.path.isfile(path):
                found.add(rel)
    return sorted(found, key=lambda p: p.encode())


def digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sums_of(wd: str, files: list[str]) -> str:
    return "".join(f"{digest(os.path.join(wd, f))}  {f}\n" for f in files)


def entry_ok(entry: str) -> str | None:
    try:
        with open(os.path.join(entry, "sums")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        expected, _, rel = line.partition("  ")
        path = os.path.join(entry, "files", rel)
        if not rel or os.path.islink(path) or not os.path.isfile(path) or digest(path) != expected:
            return None
    return "\n".join(lines) + "\n"


def restore(entry: str, wd: str, sums: str) -> None:
    for line in sums.splitlines():
        rel = line.partition("  ")[2]
        target = os.path.join(wd, rel)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        shutil.copyfile(os.path.join(entry, "files", rel), target)


def one(root: str, restoring: bool, task: str, wd: str, prefix: str, patterns: list[str]) -> None:
    sums = ""
    if patterns:
        if not os.path.isdir(wd):
            return emit("N", task, f"working dir {wd} not found")
        files = files_of(wd, patterns)
        if files is None:
            return emit("N", task, "an input pattern matches no file")
        if not files:
            return emit("N", task, "the inputs match no file")
        try:
            sums = sums_of(wd, files)
        except OSError:
            return emit("N", task, "an input cannot be read")
    key = hashlib.sha256(f"{prefix}\n{sums}".encode()).hexdigest()
    emit("K", task, key)
    emit("I", task, sums)
    entry = os.path.join(root, key)
    made = entry_ok(entry)
    if made is None:
        return emit("M", task, "")
    if restoring:
        try:
            restore(entry, wd, made)
        except OSError:
            return emit("M", task, "restore failed")
    emit("S", task, made)
    emit("H", task, "")


def main(args: list[str]) -> None:
    root, restoring, rest = home(args[0]), args[1] == "1", args[2:]
    while len(rest) >= 4:
        task, wd, prefix, n = rest[0], home(rest[1]), rest[2], int(rest[3])
        patterns, rest = rest[4 : 4 + n], rest[4 + n :]
        one(root, restoring, task, wd, prefix, patterns)


if __name__ == "__main__":
    main(sys.argv[1:])
