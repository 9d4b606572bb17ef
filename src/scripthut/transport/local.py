"""The local shell as a transport: for Jupyter running on the cluster's login node."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from pathlib import Path

from scripthut.errors import UnsafePath
from scripthut.task_env import inherited
from scripthut.transport.base import (
    DEFAULT_READ_LIMIT,
    RawResult,
    Transport,
    TransportError,
    check_limit,
    observed_size,
    read_start,
)

PIPE = asyncio.subprocess.PIPE
DEVNULL = asyncio.subprocess.DEVNULL


class LocalTransport(Transport):
    """Runs command lines with `bash -c` in the home directory, as an SSH login would.

    Commands get this process's environment without the server's credentials
    (`task_env`): sbatch exports the environment it runs in to the job.
    """

    def __init__(self) -> None:
        super().__init__("local shell")
        self._closed = False

    async def _exec(self, command_line: str, stdin: bytes | None, timeout: float) -> RawResult:
        if self._closed:
            raise TransportError(f"{self.description}: transport is closed")
        self.stats.commands += 1
        proc = await _spawn(command_line, stdin is not None)
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(stdin)
        except TimeoutError as exc:
            raise TransportError(
                f"{self.description}: timed out after {timeout:g} s: {command_line[:200]}"
            ) from exc
        finally:
            await _reap(proc)
        assert proc.returncode is not None
        return RawResult(_exit_status(proc.returncode), out, err)

    async def read_file(
        self, path: str, *, offset: int = 0, limit: int = DEFAULT_READ_LIMIT
    ) -> tuple[bytes, int]:
        check_limit(limit)
        return await asyncio.to_thread(_read, expand_home(path), offset, limit)

    async def close(self) -> None:
        self._closed = True


def expand_home(path: str) -> str:
    """`path` with a leading "~/" (or a bare "~") replaced by the home directory."""
    if path == "~" or path.startswith("~/"):
        return os.path.expanduser(path)
    return path


async def _spawn(command_line: str, has_stdin: bool) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command_line,
            stdin=PIPE if has_stdin else DEVNULL,
            stdout=PIPE,
            stderr=PIPE,
            cwd=Path.home(),
            env=inherited(dict(os.environ)),
            start_new_session=True,
        )
    except OSError as exc:
        raise TransportError(f"local shell: cannot start bash: {exc}") from exc


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill the command's whole process group if it is still running, and wait for it."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


def _exit_status(returncode: int) -> int:
    """A shell-style status: a command killed by signal N exits 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _read(path: str, offset: int, limit: int) -> tuple[bytes, int]:
    """Read without following a symbolic link at `path` (UnsafePath)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{path}: is a symbolic link; refusing to read it") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        start = read_start(size, offset)
        handle.seek(start)
        data = handle.read(limit)
    return data, observed_size(size, start, data)
