"""Files and processes of the local backend: exit-code and log files, /proc, the tag index.

The tag index (`<log_dir>/.tags/<tag>`) records each job's paths and CPU count before it is
launched and its pid after: a new engine finds jobs an earlier one started (or had accepted
but not started) from it, by script path in /proc, or by their exit-code file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from scripthut.backends.base import JobPaths, LogChunk
from scripthut.errors import NotFound, ScriptHutError, UnsafePath
from scripthut.private import PRIVATE_FILE

SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


# --- small helpers -------------------------------------------------------------------------


def is_safe_name(value: str) -> bool:
    return bool(SAFE_NAME.fullmatch(value)) and value not in (".", "..")


def check_name(kind: str, value: str) -> None:
    if not is_safe_name(value):
        raise ValueError(f"{kind} {value!r} is not a safe file name ([A-Za-z0-9_.-])")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_exit(code: int) -> str:
    """A reason for a non-zero exit code; codes 129-192 are the shells' "killed by N"."""
    if 128 < code <= 192:
        return f"exit code {code} ({signal_name(code - 128)})"
    return f"exit code {code}"


def read_exit_code(path: str) -> int | None:
    """The code in an exit-code file, or None if it is absent or not (yet) a number."""
    try:
        with open(path, "rb") as file:
            return int(file.read(64).strip())
    except (OSError, ValueError):
        return None


def write_file(path: str, data: bytes, mode: int, flags: int = os.O_TRUNC) -> None:
    """Write `data` to `path`, created with `mode` (set to it if it existed), or appended.

    Never through a symbolic link.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | flags, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


# --- processes, as /proc shows them --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    started_at: float | None


@functools.cache
def boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as file:
            for line in file:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            raw = file.read()
    except OSError:
        return []
    return [os.fsdecode(part) for part in raw.split(b"\0")[:-1]]


def script_of(argv: list[str]) -> str | None:
    """The script a `bash [-l] <script>` command line runs, else None."""
    if len(argv) in (2, 3) and os.path.basename(argv[0]) == "bash":
        return argv[-1]
    return None


def session_leader(pid: int) -> Proc | None:
    """`pid` as a Proc if it leads its own session (as our jobs do), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z" or int(fields[3]) != pid:
        return None
    boot = boot_time()
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") if boot is not None else None
    return Proc(pid, started)


def scan(scripts: set[str]) -> dict[str, Proc] | None:
    """This user's session-leading `bash <script>` processes for these scripts.

    None when /proc cannot be listed: nothing may be concluded then.
    """
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    uid = os.getuid()
    found: dict[str, Proc] = {}
    for name in names:
        if not name.isdigit():
            continue
        script = script_of(cmdline(int(name)))
        if script is None or script not in scripts:
            continue
        proc = session_leader(int(name))
        with contextlib.suppress(OSError):
            if proc is not None and os.stat(f"/proc/{name}").st_uid == uid:
                found[script] = proc
    return found


def runs_script(pid: int, script: str) -> bool:
    return script_of(cmdline(pid)) == script


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- logs ----------------------------------------------------------------------------------

_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW


def open_log(path: str) -> int:
    """A job's log for appending: created 0600, never through a symbolic link."""
    try:
        fd = os.open(path, _LOG_FLAGS, PRIVATE_FILE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            message = f"{path}: is a symbolic link; logs are not written through one"
            raise UnsafePath(message) from None
        raise
    if os.fstat(fd).st_size == 0:
        os.fchmod(fd, PRIVATE_FILE)  # new (or empty): private whatever the umask
    return fd


def open_nofollow(path: str) -> BinaryIO:
    """`path` opened for reading, refused (UnsafePath) when it is a symbolic link.

    A task can replace its own log by a link to any file its user can read; the link
    would then be served as the task's log. O_NOFOLLOW refuses it atomically.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{path}: is a symbolic link; refusing to read it") from None
        raise
    return os.fdopen(fd, "rb")


def read_chunk(path: str, offset: int, limit: int) -> LogChunk:
    try:
        file = open_nofollow(path)
    except FileNotFoundError:
        return LogChunk(b"", max(offset, 0), 0, missing=True)
    with file:
        size = os.fstat(file.fileno()).st_size
        start = max(0, size + offset) if offset < 0 else offset
        data = b""
        if start < size:  # never seek past the end: a huge offset is EINVAL on some filesystems
            file.seek(start)
            data = file.read(max(0, limit))
    return LogChunk(data, start, size)


def read_text(path: str, limit: int) -> str:
    try:
        with open_nofollow(path) as file:
            data = file.read(limit + 1)
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file") from None
    if len(data) > limit:
        raise ScriptHutError(f"{path}: larger than {limit} bytes")
    return data.decode("utf-8", errors="replace")


# --- the tag index -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TagEntry:
    paths: JobPaths
    launched: bool
    cpus: int = 1


def write_tag(path: Path, paths: JobPaths, cpus: int) -> None:
    lines = (paths.script, paths.stdout, paths.stderr, paths.exit_code, f"cpus {cpus}")
    write_file(str(path), "".join(f"{line}\n" for line in lines).encode(), 0o600)


def note_launch(path: Path, pid: int) -> None:
    with contextlib.suppress(OSError):
        write_file(str(path), f"pid {pid}\n".encode(), 0o600, os.O_APPEND)


def read_tag(path: Path) -> TagEntry | None:
    """The entry for a tag, None if there is none; other OSErrors propagate."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        return None
    if len(lines) < 5:  # four paths, each ending with a newline
        return None
    paths = JobPaths(script=lines[0], stdout=lines[1], stderr=lines[2], exit_code=lines[3])
    cpus = next((int(x[5:]) for x in lines[4:] if x.startswith("cpus ") and x[5:].isdigit()), 1)
    return TagEntry(paths, any(line.startswith("pid ") for line in lines[4:]), max(1, cpus))
