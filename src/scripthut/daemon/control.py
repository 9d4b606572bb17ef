"""Start, stop and inspect the standalone engine from another process.

`start_detached` runs `scripthut engine start --foreground` in a session of its own (so
it outlives the terminal, the Jupyter server and its culling), its output appended to
`engine.log`, and waits until it holds the lease. `stop` signals the pid its pid file
names, on this host only. `status` reads the lease and the pid file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from scripthut.config import Config
from scripthut.daemon.files import DAEMON, EngineFiles, role_of
from scripthut.errors import ScriptHutError
from scripthut.processes import pid_alive
from scripthut.store import Store
from scripthut.task_env import inherited

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class EngineControlError(ScriptHutError):
    """The standalone engine could not be started or stopped."""


def engine_argv() -> list[str]:
    return [sys.executable, "-m", "scripthut.cli", "engine", "start", "--foreground"]


def spawn(config: Config) -> subprocess.Popen[bytes]:
    """Launch the engine process detached from this one; do not wait for it."""
    files = EngineFiles(config.data_dir)
    env = inherited(os.environ)  # not the server's credentials: the engine outlives them
    env["SCRIPTHUT_DATA_DIR"] = str(config.data_dir)
    if config.source_path is not None:
        env["SCRIPTHUT_CONFIG"] = str(config.source_path)
    log_fd = files.open_log()
    try:
        proc = subprocess.Popen(
            engine_argv(),
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            env=env,
            start_new_session=True,  # no SIGHUP at logout, not in the server's process group
            close_fds=True,
        )
    finally:
        os.close(log_fd)
    # reaped when it exits while this process lives, so its pid never lingers as a zombie
    threading.Thread(target=proc.wait, name="scripthut-engine-reaper", daemon=True).start()
    return proc


def start_detached(config: Config, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Start the standalone engine unless one runs; its status once it holds the lease."""
    current = status(config)
    if current["running"]:
        return current
    proc = spawn(config)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = status(config)
        if current["running"] and current["pid"] == proc.pid:
            return current
        if proc.poll() is not None:
            raise EngineControlError(
                f"the engine exited with status {proc.returncode} before it took the lease:\n"
                + tail(EngineFiles(config.data_dir).log_file, 10)
            )
        time.sleep(0.1)
    raise EngineControlError(f"the engine (pid {proc.pid}) did not take the lease in {timeout} s")


def stop(config: Config, timeout: float = STOP_TIMEOUT) -> dict[str, Any]:
    """SIGTERM to the standalone engine of this host; waits until it has exited."""
    files = EngineFiles(config.data_dir)
    info = files.read_pid()
    if info is None:
        return {"stopped": False, "message": "no standalone engine runs"}
    if info.get("host") != socket.gethostname():
        raise EngineControlError(
            f"the standalone engine runs on host {info.get('host')} (pid {info['pid']}): "
            "stop it there"
        )
    pid = int(info["pid"])
    if not pid_alive(pid):
        files.remove_pid(str(info.get("owner")))
        return {"stopped": False, "message": f"no standalone engine runs (pid {pid} is gone)"}
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        raise EngineControlError(f"the engine (pid {pid}) did not stop within {timeout:.0f} s")
    return {"stopped": True, "pid": pid, "message": f"stopped the engine (pid {pid})"}


def status(config: Config) -> dict[str, Any]:
    """Whether a standalone engine drives the data directory, and who holds the lease."""
    files = EngineFiles(config.data_dir)
    store = Store.in_data_dir(config.data_dir)
    try:
        holder = store.lease_holder()
    finally:
        store.close()
    info = files.read_pid() or {}
    role = role_of(holder["owner"]) if holder else None
    running = holder is not None and role == DAEMON and holder["owner"] == info.get("owner")
    return {
        "running": running,
        "pid": info.get("pid") if running else None,
        "host": info.get("host") if running else None,
        "started_at": info.get("started_at") if running else None,
        "lease": None if holder is None else {**holder, "role": role},
        "data_dir": str(config.data_dir),
        "pid_file": str(files.pid_file),
        "log_file": str(files.log_file),
    }


def tail(path: Path, lines: int) -> str:
    try:
        data = path.read_bytes()[-(64 << 10) :]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
