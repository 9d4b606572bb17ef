"""The standalone engine's files in the data directory, and who holds the engine lease.

`engine.pid` (0600) holds one JSON object naming the process and its host, so a second
host sharing the home directory never signals a pid of another machine; `engine.log`
(0600) is where a detached engine writes. The lease's owner starts with the role of the
process that holds it: `daemon/...` (standalone), `server/...` (a Jupyter server) or
the bare id of an engine hosted by a CLI command or a kernel.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripthut.private import create_private_file, make_private_dirs
from scripthut.processes import pid_alive

PID_FILE = "engine.pid"
LOG_FILE = "engine.log"
DAEMON = "daemon"
SERVER = "server"
OTHER = "cli"


def role_of(owner: str | None) -> str:
    """`daemon`, `server` or `cli` (any other engine) for a lease owner."""
    prefix, sep, _ = (owner or "").partition("/")
    return prefix if sep and prefix in (DAEMON, SERVER) else OTHER


@dataclass(frozen=True, slots=True)
class EngineFiles:
    data_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.data_dir / PID_FILE

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    def open_log(self) -> int:
        """The log file opened for appending (0600), as a file descriptor."""
        make_private_dirs(self.data_dir)
        create_private_file(self.log_file)
        return os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)

    def write_pid(self, owner: str) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "owner": owner}
        info["started_at"] = time.time()
        make_private_dirs(self.data_dir)
        tmp = self.pid_file.with_name(f".{PID_FILE}.{os.getpid()}")
        create_private_file(tmp)
        tmp.write_text(json.dumps(info) + "\n")
        tmp.replace(self.pid_file)

    def read_pid(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None

    def remove_pid(self, owner: str) -> None:
        """Remove the pid file if it still names `owner` (a newer engine's is left alone)."""
        info = self.read_pid()
        if info is not None and info.get("owner") == owner:
            self.pid_file.unlink(missing_ok=True)

    def local_pid(self) -> int | None:
        """The pid of a standalone engine alive on this host, per the pid file."""
        info = self.read_pid()
        if info is None or info.get("host") != socket.gethostname():
            return None
        pid = int(info["pid"])
        return pid if pid_alive(pid) else None
