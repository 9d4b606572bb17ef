"""What a task wrote: its output folder and run-summary file, listed after it ends.

Every attempt gets `$SCRIPTHUT_OUTPUT_DIR` (a folder beside its logs) and
`$SCRIPTHUT_RUN_SUMMARY` (a Markdown file whose text joins the run's summary). Both are
named after the attempt's exit-code file, so every backend that has one has them too.

A listing holds regular files only (symbolic links are neither listed nor followed, and
neither are folders starting with "."), at most `MAX_FILES` of them; the summary text is
kept up to `SUMMARY_LIMIT` bytes. Contents are read later, on demand, and only for paths
a listing recorded.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scripthut.errors import InvalidInput, Issue

MAX_FILES = 1000
SUMMARY_LIMIT = 256 << 10
CONTENT_LIMIT = 32 << 20
OUTPUTS_SUFFIX = ".outputs"
SUMMARY_SUFFIX = ".summary.md"

KINDS: Mapping[str, str] = {
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".svg": "image",
    ".md": "markdown",
    ".csv": "table",
    ".tsv": "table",
    ".json": "json",
    ".html": "html",
    ".htm": "html",
    ".ipynb": "notebook",
    ".txt": "text",
    ".log": "text",
}

MEDIA_TYPES: Mapping[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".md": "text/markdown; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".tsv": "text/tab-separated-values; charset=utf-8",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".ipynb": "application/x-ipynb+json",
    ".txt": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
}


def output_paths(exit_path: str) -> tuple[str, str]:
    """The output folder and summary file of the attempt whose exit-code file is `exit_path`."""
    base = exit_path[: -len(".exit")] if exit_path.endswith(".exit") else exit_path
    return base + OUTPUTS_SUFFIX, base + SUMMARY_SUFFIX


def kind_of(path: str) -> str:
    return KINDS.get(posixpath.splitext(path)[1].lower(), "file")


def media_type(path: str) -> str:
    return MEDIA_TYPES.get(posixpath.splitext(path)[1].lower(), "application/octet-stream")


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One regular file under the output folder: its path relative to it, size, mtime."""

    path: str
    size: int
    mtime: float

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "mtime": self.mtime,
            "kind": kind_of(self.path),
        }


@dataclass(frozen=True, slots=True)
class OutputListing:
    """What one attempt left in its output folder, and its summary text."""

    directory: str
    files: tuple[OutputFile, ...] = ()
    truncated: bool = False
    summary: str = ""
    summary_truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "files": [f.to_json() for f in self.files],
            "truncated": self.truncated,
            "summary": self.summary,
            "summary_truncated": self.summary_truncated,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OutputListing:
        files = tuple(
            OutputFile(str(f["path"]), int(f["size"]), float(f["mtime"])) for f in data["files"]
        )
        return cls(
            directory=str(data["directory"]),
            files=files,
            truncated=bool(data.get("truncated")),
            summary=str(data.get("summary", "")),
            summary_truncated=bool(data.get("summary_truncated")),
        )

    def find(self, path: str) -> OutputFile | None:
        return next((f for f in self.files if f.path == path), None)


def check_relative(path: str) -> str:
    """A recorded output's path as a request names it: relative, no `..`, no empty parts."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput([Issue("request", f"'{path}' is not an output's path", "path")])
    return path


# -- listing on this machine ----------------------------------------------------------


def list_local(directory: str, summary_path: str, limit: int = MAX_FILES) -> OutputListing:
    """The listing of a folder on this machine; symbolic links are skipped, never followed."""
    files: list[OutputFile] = []
    truncated = False
    for entry in _walk(directory, ""):
        if len(files) >= limit:
            truncated = True
            break
        files.append(entry)
    summary, cut = _read_summary(summary_path)
    files.sort(key=lambda f: f.path)
    return OutputListing(directory, tuple(files), truncated, summary, cut)


def _walk(root: str, prefix: str) -> Iterator[OutputFile]:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        if not rel.isprintable() or _not_utf8(rel):
            continue  # a view could not name it
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode) and not entry.name.startswith("."):
            yield from _walk(entry.path, rel + "/")
        elif stat.S_ISREG(info.st_mode):
            yield OutputFile(rel, info.st_size, info.st_mtime)


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _read_summary(path: str) -> tuple[str, bool]:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return "", False
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return "", False
        data = file.read(SUMMARY_LIMIT + 1)
    return summary_text(data)


def summary_text(data: bytes) -> tuple[str, bool]:
    """Summary bytes as text, cut at `SUMMARY_LIMIT`; whether it was cut."""
    cut = len(data) > SUMMARY_LIMIT
    text = data[:SUMMARY_LIMIT].replace(b"\0", b"").decode("utf-8", errors="replace")
    return text, cut


# -- listing over a transport: one script for many folders -----------------------------

# Arguments: pairs of (output folder, summary file). Prints, NUL-separated, per pair:
# "D", the folder; per regular file (at most $MAX + 1): "F", path, size, mtime; then
# "S" and the first $LIMIT + 1 bytes of the summary (NULs removed) when it is a regular file.
LIST_SCRIPT = r"""
max=$1 limit=$2; shift 2
while [ "$#" -ge 2 ]; do
    d=$1 s=$2; shift 2
    printf 'D\0%s\0' "$d"
    case $d in "~/"*) d=$HOME/${d#"~/"} ;; esac
    case $s in "~/"*) s=$HOME/${s#"~/"} ;; esac
    if [ -d "$d" ] && [ ! -L "$d" ]; then
        find -P "$d" -mindepth 1 \( -type d -name '.*' -prune \) -o -type f \
            -printf 'F\0%P\0%s\0%T@\0' 2>/dev/null | head -z -n $((4 * (max + 1)))
    fi
    if [ -f "$s" ] && [ ! -L "$s" ]; then
        printf 'S\0'
        head -c $((limit + 1)) -- "$s" 2>/dev/null | tr -d '\000'
        printf '\0'
    fi
done
"""


def list_argv(pairs: Sequence[tuple[str, str]], limit: int = MAX_FILES) -> list[str]:
    argv = ["bash", "-s", "--", str(limit), str(SUMMARY_LIMIT)]
    for directory, summary in pairs:
        argv.extend((directory, summary))
    return argv


@dataclass(slots=True)
class _Builder:
    directory: str
    files: list[OutputFile] = field(default_factory=list)
    truncated: bool = False
    summary: str = ""
    summary_truncated: bool = False

    def build(self) -> OutputListing:
        files = tuple(sorted(self.files, key=lambda f: f.path))
        return OutputListing(
            self.directory, files, self.truncated, self.summary, self.summary_truncated
        )


def parse_listing(data: bytes, limit: int = MAX_FILES) -> dict[str, OutputListing]:
    """The reply of LIST_SCRIPT: folder -> listing. Malformed records are skipped."""
    fields = data.split(b"\0")
    out: dict[str, OutputListing] = {}
    current: _Builder | None = None
    i = 0
    while i < len(fields):
        mark = fields[i]
        if mark == b"D" and i + 1 < len(fields):
            if current is not None:
                out[current.directory] = current.build()
            current = _Builder(fields[i + 1].decode("utf-8", errors="surrogateescape"))
            i += 2
        elif mark == b"F" and current is not None and i + 3 < len(fields):
            _add_file(current, fields[i + 1 : i + 4], limit)
            i += 4
        elif mark == b"S" and current is not None and i + 1 < len(fields):
            current.summary, current.summary_truncated = summary_text(fields[i + 1])
            i += 2
        else:
            i += 1
    if current is not None:
        out[current.directory] = current.build()
    return out


def _add_file(builder: _Builder, parts: list[bytes], limit: int) -> None:
    if len(builder.files) >= limit:
        builder.truncated = True
        return
    try:
        path = parts[0].decode("utf-8")
        size, mtime = int(parts[1]), float(parts[2])
    except (UnicodeDecodeError, ValueError):
        return  # a name that is not UTF-8 cannot be asked for by a view
    builder.files.append(OutputFile(path, size, mtime))
